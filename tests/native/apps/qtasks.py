"""Tasks for the native worker tests. Loaded by the test process and by worker processes.

Every task that must be counted appends a line to a file: a real side effect that survives the
process that ran it (SIGKILL included).
"""

import os
import time

from supervisor.native import Celery

app = Celery("qtasks", broker=os.environ.get("NATIVE_TEST_DB_URL"))
app.conf.native_lease_seconds = float(os.environ.get("NATIVE_TEST_LEASE", "2"))
app.conf.native_heartbeat_interval = float(os.environ.get("NATIVE_TEST_HEARTBEAT", "0.4"))
app.conf.native_max_recoveries = int(os.environ.get("NATIVE_TEST_MAX_RECOVERIES", "3"))
app.conf.native_poll_interval = float(os.environ.get("NATIVE_TEST_POLL", "0")) or None
app.conf.task_track_started = True
if os.environ.get("NATIVE_TEST_BEAT"):
    app.conf.beat_schedule = {
        "every-second": {"task": "qtasks.mark", "schedule": 1.0, "args": ["beat"]},
    }


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@app.task
def add(x, y):
    return x + y


@app.task
def mark(tag, path=None):
    _append(path or os.environ["NATIVE_TEST_MARKS"], f"{tag} {os.getpid()}")
    return tag


@app.task
def hold(tag, path, seconds):
    """Mark the start, hold for `seconds` (in small steps so interrupts land), mark the end."""
    _append(path, f"start {tag} {os.getpid()}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    _append(path, f"end {tag} {os.getpid()}")
    return tag


@app.task(soft_time_limit=0.3)
def soft_limited(path):
    from supervisor.native import SoftTimeLimitExceeded

    try:
        while True:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        _append(path, "soft limit caught")
        return "cleaned up"


@app.task(time_limit=0.3)
def hard_limited():
    while True:
        time.sleep(0.01)


@app.task(bind=True, max_retries=2)
def retry_later(self, path):
    _append(path, f"attempt {self.request.retries}")
    raise self.retry(exc=OSError("flaky"), countdown=30)


@app.task(bind=True, autoretry_for=(OSError,), retry_backoff=2, retry_backoff_max=5,
          max_retries=4)
def backoff(self, path):
    _append(path, f"attempt {self.request.retries} {time.time()}")
    raise OSError("still down")


@app.task
def die():
    os._exit(3)

if os.environ.get("NATIVE_TEST_MAX_TASKS"):
    app.conf.worker_max_tasks_per_child = int(os.environ["NATIVE_TEST_MAX_TASKS"])
app.conf.task_routes = {"qtasks.routed_*": {"queue": "routed"}}


@app.task
def routed_add(x, y):
    return x + y


@app.task
def stamp():
    """When it ran (wall clock): pickup and resume timings."""
    return time.time()


@app.task
def echo(value):
    """Its argument back: a value's round trip through the queue, both ways."""
    return value


@app.task
def nan_result():
    return {"nan": float("nan"), "inf": float("inf"), "neg": -float("inf")}


@app.task
def raise_with(message):
    raise ValueError(message)


@app.task(bind=True)
def retry_beyond_the_calendar(self):
    """A retry whose due time PostgreSQL's timestamps cannot hold (year 300,000 and more)."""
    raise self.retry(countdown=1e13)


@app.task
def long_text(n):
    return "x" * n
