"""The same project with Django's own database on SQLite and the queue on PostgreSQL:
enqueues inside transaction.atomic() are deferred to on_commit."""

import os

from .settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(os.environ.get("DJANGO_SQLITE_DIR", "/tmp"), "djproj.sqlite3"),
    }
}
CELERY_BROKER_URL = os.environ["NATIVE_TEST_DB_URL"]
