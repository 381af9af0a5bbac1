"""Celery app for TASK_QUEUE=celery (examples/docker-compose/docker-compose.celery.yml).

The tasks are the same plain functions django-q2 runs, registered under the same names; the
periodic ones come from settings.START_ALL_SCHEDULES, converted to CELERY_BEAT_SCHEDULE.
"""

import os

from bookings import tasks
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
app = Celery("demo")
app.config_from_object("django.conf:settings", namespace="CELERY")
for function in (tasks.send_confirmation, tasks.summarize, tasks.cleanup_old_records):
    app.task(name=f"bookings.tasks.{function.__name__}")(function)
app.task(name="bookings.tasks.tally", bind=True)(tasks.tally)
