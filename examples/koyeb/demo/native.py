"""start-all's native worker app for TASK_QUEUE=native (PostgreSQL only: the queue is a table).

The same plain functions django-q2 runs, under the same names; periodic ones come from
settings.START_ALL_SCHEDULES (CELERY_BEAT_SCHEDULE), fired by the worker itself.
"""

import os

from bookings import tasks

from supervisor.native import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
app = Celery("demo")
app.config_from_object("django.conf:settings", namespace="CELERY")
for function in (tasks.send_confirmation, tasks.summarize, tasks.cleanup_old_records):
    app.task(name=f"bookings.tasks.{function.__name__}")(function)
app.task(name="bookings.tasks.tally", bind=True)(tasks.tally)
