"""A Django project whose django.tasks tasks run on the native queue (same database)."""

from tests.native.apps.django_common import DEBUG, SECRET_KEY, USE_TZ, postgres  # noqa: F401

INSTALLED_APPS = ["django.contrib.contenttypes", "supervisor.native.django", "letters"]
DATABASES = postgres()
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
