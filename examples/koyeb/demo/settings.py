"""Settings of the booking demo: a Django site and a django-q2 worker in one container."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
os.environ.setdefault("DATA_DIR", str(BASE_DIR / "data"))

SECRET_KEY = os.environ.get("SECRET_KEY", "demo-only-change-me")
DEBUG = os.environ.get("DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "*").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# Which queue runs the jobs: "django-q2" (the database as broker; the default), "native"
# (start-all's PostgreSQL worker, Procfile.native) or "celery" (Redis, Procfile.celery).
TASK_QUEUE = os.environ.get("TASK_QUEUE", "django-q2")
INSTALLED_APPS = ["django.contrib.contenttypes", "bookings"]
if TASK_QUEUE == "django-q2":
    INSTALLED_APPS.append("django_q")
elif TASK_QUEUE == "native":
    INSTALLED_APPS.append("supervisor.native.django")
MIDDLEWARE = [
    "supervisor.contrib.django.HealthMiddleware",  # first: answers /healthz on $PORT
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"
TEMPLATES = []
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# E-mail: printed to the log unless an SMTP server is configured.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = "bookings@example.com"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}

# Schedules as code: synced to django-q2 by `start-all migrate --sync-schedules` (release:),
# or handed to the native worker / celery beat as CELERY_BEAT_SCHEDULE.
START_ALL_SCHEDULES = [
    {
        "name": "daily-cleanup",
        "func": "bookings.tasks.cleanup_old_records",
        "cron": "0 3 * * *",
        "kwargs": {"days": 30},
    },
]

# A beat entry every DEMO_TICK_SECONDS: shows it fires once per slot however many workers run
# (examples/docker-compose/docker-compose.workers.yml, docs/scaling.md).
if os.environ.get("DEMO_TICK_SECONDS"):
    START_ALL_SCHEDULES.append({
        "name": "tick",
        "func": "bookings.tasks.tally",
        "every": float(os.environ["DEMO_TICK_SECONDS"]),
        "kwargs": {"kind": "tick"},
    })

if TASK_QUEUE == "native":
    from supervisor.kit.schedules import load_entries, to_beat_schedule, to_celery_beat_schedule
    from supervisor.native import use_db_queue

    if use_db_queue():
        CELERY_BEAT_SCHEDULE = to_beat_schedule(load_entries(START_ALL_SCHEDULES))
        CELERY_NATIVE_LEASE_SECONDS = float(os.environ.get("NATIVE_LEASE_SECONDS", "30"))
    else:  # USE_DB_QUEUE=false: the very same app on Celery itself, Redis or RabbitMQ
        CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
        CELERY_TASK_IGNORE_RESULT = True
        CELERY_TASK_ACKS_LATE = True
        CELERY_WORKER_PREFETCH_MULTIPLIER = 1
        CELERY_BEAT_SCHEDULE = to_celery_beat_schedule(load_entries(START_ALL_SCHEDULES))
elif TASK_QUEUE == "celery":
    from supervisor.kit.schedules import load_entries, to_celery_beat_schedule

    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    CELERY_TASK_IGNORE_RESULT = True
    CELERY_TASK_ACKS_LATE = True  # a job killed with its worker is delivered again
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
    CELERY_BEAT_SCHEDULE = to_celery_beat_schedule(load_entries(START_ALL_SCHEDULES))

# DATABASES (DATABASE_URL, else SQLite in DATA_DIR), CACHES and Q_CLUSTER for 512 MB:
# start-all's defaults for what is unset here, sized by start-all (`start-all check` lists them).
from supervisor.contrib.django import start_all_settings  # noqa: E402

start_all_settings(globals())
