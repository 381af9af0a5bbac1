"""A Django project whose django.tasks tasks run on the native queue (same database)."""

import os
from urllib.parse import urlsplit

_db = urlsplit(os.environ["NATIVE_TEST_DB_URL"])
SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "supervisor.native.django", "letters"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": _db.username or "postgres",
        "HOST": _db.hostname or "127.0.0.1",
        "PORT": str(_db.port or 5432),
    }
}
TASKS = {
    "default": {
        "BACKEND": "supervisor.native.django_tasks.NativeBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {
            "lease_seconds": 2,
            "heartbeat_interval": 0.5,
            "retry_backoff": 0.2,
            "retry_jitter": False,
            "schedule": {"tick": {"task": "letters.tasks.tick", "schedule": 1.0}},
        },
    }
}
