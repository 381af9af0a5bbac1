"""A Django project on PostgreSQL whose tasks run on the native queue in the same database."""

from tests.native.apps.django_common import DEBUG, SECRET_KEY, USE_TZ, postgres  # noqa: F401

INSTALLED_APPS = ["django.contrib.contenttypes", "supervisor.native.django", "shop"]
DATABASES = postgres(CONN_MAX_AGE=None)
CELERY_TASK_DEFAULT_QUEUE = "django-q"
CELERY_NATIVE_LEASE_SECONDS = 5
CELERY_NATIVE_HEARTBEAT_INTERVAL = 0.5
