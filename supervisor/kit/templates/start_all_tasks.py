"""Django's task API on start-all's native PostgreSQL queue (written by `start-all init
django-tasks`). In settings.py, after INSTALLED_APPS:

    from .start_all_tasks import TASKS  # noqa: E402
    INSTALLED_APPS += ["supervisor.native.django"]  # python manage.py native_worker

Django 6 has the API (`from django.tasks import task`); on Django 5.2 it is the django-tasks
backport (`from django_tasks import task`), which start-all[django] installs on Python < 3.12.
The queue lives in DATABASE_URL's database (or Django's default one when it is PostgreSQL).
"""

TASKS = {
    "default": {
        "BACKEND": "supervisor.native.django_tasks.NativeBackend",
        "QUEUES": ["default"],  # what `manage.py native_worker` consumes without -Q
        "OPTIONS": {
            # retries for every task; one task can change it: @task(max_retries=5)
            "max_retries": 0,  # e.g. 3 for idempotent tasks
            "retry_backoff": 2,  # seconds before the first retry, doubling each time
            "retry_backoff_max": 600,
            # a task held by a worker that died (OOM kill, crash) runs again after this
            "lease_seconds": 30,
            "max_recoveries": 3,  # ... at most this often, then FAILED (a poison pill)
            # cron in the worker: each slot fires once, however many workers run
            "schedule": {
                # "nightly": {"task": "reports.tasks.nightly", "schedule": "0 3 * * *"},
            },
        },
    }
}
