"""A Django project on django-tasks-db: its tasks run by `manage.py db_worker`."""

from tests.native.apps.django_common import DEBUG, SECRET_KEY, USE_TZ, postgres  # noqa: F401

INSTALLED_APPS = ["django.contrib.contenttypes", "django_tasks_db", "chores"]
DATABASES = postgres()
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
