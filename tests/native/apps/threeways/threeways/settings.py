"""One Django project, the same task three ways: Celery's API and django.tasks on the native
queue, django-q2 beside them. TASKS comes from the template (copied in by the test)."""

import os
from urllib.parse import urlsplit

_db = urlsplit(os.environ["NATIVE_TEST_DB_URL"])
SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django_q", "supervisor.native.django",
                  "booking"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": _db.username or "postgres",
        "HOST": _db.hostname or "127.0.0.1",
        "PORT": str(_db.port or 5432),
    }
}
Q_CLUSTER = {"name": "threeways", "orm": "default", "workers": 1, "timeout": 30, "retry": 60,
             "poll": 0.2}

from .start_all_tasks import TASKS  # noqa: E402,F401  (supervisor/kit/templates)
