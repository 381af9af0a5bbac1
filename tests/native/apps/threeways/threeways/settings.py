"""One Django project, the same task three ways: Celery's API and django.tasks on the native
queue, django-q2 beside them. TASKS comes from the template (copied in by the test)."""

from tests.native.apps.django_common import DEBUG, SECRET_KEY, USE_TZ, postgres  # noqa: F401

INSTALLED_APPS = ["django.contrib.contenttypes", "django_q", "supervisor.native.django",
                  "booking"]
DATABASES = postgres()
Q_CLUSTER = {"name": "threeways", "orm": "default", "workers": 1, "timeout": 30, "retry": 60,
             "poll": 0.2}

from .start_all_tasks import TASKS  # noqa: E402,F401  (supervisor/kit/templates)
