"""Run in a subprocess while start-all runs the three workers: one call each way."""

import json
import os
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "threeways.settings")
django.setup()

import threeways.celery  # noqa: E402,F401  (the Celery-API app, as proj/__init__.py would)
from booking.tasks import confirm_booking, confirm_booking_task  # noqa: E402
from django_q.tasks import async_task, result  # noqa: E402

out = {}
# 1. Celery's API on the native queue
out["celery"] = confirm_booking.delay(1).get(timeout=30)
# 2. django.tasks on the native queue
task_result = confirm_booking_task.enqueue(2)
deadline = time.monotonic() + 30
while not task_result.is_finished and time.monotonic() < deadline:
    time.sleep(0.05)
    task_result.refresh()
out["django_tasks"] = task_result.return_value
# 3. django-q2
task_id = async_task("booking.tasks.confirm", 3)
out["django_q2"] = result(task_id, wait=30000)
print(json.dumps(out))
