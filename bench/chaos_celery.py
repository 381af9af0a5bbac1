"""Celery worker for the chaos suite's outage comparison: Redis is the broker, the task needs
the database (a SELECT 1 on DATABASE_URL, as a task using the ORM would)."""

import os

from celery import Celery
from chaos_marks import record

app = Celery("chaos_celery", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.task_default_queue = os.environ.get("CHAOS_CELERY_QUEUE", "chaos")
app.conf.worker_hijack_root_logger = False


@app.task
def touch_db(i: int, seconds: float = 0.0) -> int:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return record(i, seconds)
