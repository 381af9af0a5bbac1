"""One task module, run unchanged on the native queue and on real Celery + Redis.

The only switch is the environment: USE_DB_QUEUE=false makes `supervisor.native` hand out
Celery's own classes; the broker URL comes from the environment as in any real project.
"""

import os

from supervisor.native import (
    Celery,
    MaxRetriesExceededError,
    TaskRevokedError,
    shared_task,
    states,
)

app = Celery("apiapp", broker=os.environ["API_BROKER"], backend=os.environ.get("API_BACKEND"))
app.conf.task_default_queue = os.environ.get("API_QUEUE", "celery")
app.conf.result_expires = 3600

__all__ = ["MaxRetriesExceededError", "TaskRevokedError", "states"]


def _append(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


@app.task
def add(x, y):
    return x + y


@app.task
def boom(message):
    raise ValueError(message)


@app.task(bind=True, max_retries=3)
def always_retry(self, path):
    _append(path, f"attempt {self.request.retries}")
    raise self.retry(exc=ValueError("still failing"), countdown=0)


@app.task(bind=True, max_retries=1)
def retry_without_exc(self, path):
    _append(path, f"attempt {self.request.retries}")
    self.retry(countdown=0)


@app.task(bind=True, autoretry_for=(OSError,), max_retries=2, retry_kwargs={"countdown": 0})
def auto(self, path):
    _append(path, f"attempt {self.request.retries}")
    if self.request.retries < 2:
        raise OSError("transient")
    return "recovered"


@app.task(ignore_result=True)
def quiet(path):
    _append(path, "ran")
    return "not stored"


@app.task(bind=True)
def who(self, *args, **kwargs):
    return {"id": self.request.id, "retries": self.request.retries, "args": list(args),
            "kwargs": kwargs}


@shared_task
def shared_mul(x, y):
    return x * y


@app.task
def hold(path, release):
    """Occupies a worker thread until the test creates `release` (at most 60 s)."""
    import time

    _append(path, "holding")
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
