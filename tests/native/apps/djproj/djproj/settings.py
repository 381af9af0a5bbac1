"""A Django project on PostgreSQL whose tasks run on the native queue in the same database."""

import os
from urllib.parse import urlsplit

_db = urlsplit(os.environ["NATIVE_TEST_DB_URL"])
SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "supervisor.native.django", "shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": _db.username or "postgres",
        "HOST": _db.hostname or "127.0.0.1",
        "PORT": str(_db.port or 5432),
        "CONN_MAX_AGE": None,
    }
}
CELERY_TASK_DEFAULT_QUEUE = "django-q"
CELERY_NATIVE_LEASE_SECONDS = 5
CELERY_NATIVE_HEARTBEAT_INTERVAL = 0.5
