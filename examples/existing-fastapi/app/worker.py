"""The Celery app (Redis as the broker)."""

import os

from celery import Celery

celery_app = Celery(
    "reports",
    broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    include=["app.tasks"],
)
celery_app.conf.task_acks_late = True
