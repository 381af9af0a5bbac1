"""A Django project on django-tasks-db: its tasks run by `manage.py db_worker`."""

import os
from urllib.parse import urlsplit

_db = urlsplit(os.environ["NATIVE_TEST_DB_URL"])
SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django_tasks_db", "chores"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": _db.username or "postgres",
        "HOST": _db.hostname or "127.0.0.1",
        "PORT": str(_db.port or 5432),
    }
}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
