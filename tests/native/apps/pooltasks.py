"""Tasks for the pool, time-limit, signal, inspect and rate-limit tests (test_pool.py and
test_control.py). Side effects go to files so they survive the process that ran them."""

import ctypes
import os
import time

from supervisor.native import Celery

app = Celery("pooltasks", broker=os.environ.get("NATIVE_TEST_DB_URL"))
app.conf.native_lease_seconds = 3.0
app.conf.native_heartbeat_interval = 0.4
app.conf.task_track_started = True
if os.environ.get("POOL_TEST_PREFETCH"):
    app.conf.worker_prefetch_multiplier = int(os.environ["POOL_TEST_PREFETCH"])
if os.environ.get("POOL_TEST_MAX_MEMORY"):
    app.conf.worker_max_memory_per_child = int(os.environ["POOL_TEST_MAX_MEMORY"])  # KiB
MAX_TASKS = os.environ.get("POOL_TEST_MAX_TASKS")
if MAX_TASKS:
    app.conf.worker_max_tasks_per_child = int(MAX_TASKS)


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@app.task
def pid():
    return os.getpid()


@app.task
def add(x, y):
    return x + y


@app.task(soft_time_limit=1)
def soft_sleep(path):
    """One long time.sleep: only an interrupt that reaches the sleep ends it before 30 s."""
    from supervisor.native import SoftTimeLimitExceeded

    started = time.monotonic()
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        _append(path, f"soft {os.getpid()}")
        return round(time.monotonic() - started, 3)
    return "slept through"


@app.task(time_limit=1)
def blocked_in_c(path):
    """libc sleep(): C code that no Python-level exception can enter."""
    _append(path, f"start {os.getpid()}")
    ctypes.CDLL(None).sleep(30)
    _append(path, "end")


@app.task
def sleep_in_c(path, seconds):
    _append(path, f"start {os.getpid()}")
    ctypes.CDLL(None).sleep(seconds)
    _append(path, "end")
    return "finished"


@app.task
def hold(path, tag, seconds):
    _append(path, f"start {tag} {os.getpid()}")
    time.sleep(seconds)
    _append(path, f"end {tag} {os.getpid()}")
    return tag


@app.task
def spin(path, seconds):
    """CPU-bound for `seconds` of wall time; records its pid and its interval."""
    started = time.time()
    n = 0
    while time.time() - started < seconds:
        n += 1
    _append(path, f"{os.getpid()} {started} {time.time()}")
    return n


@app.task(rate_limit="5/s")
def limited(path):
    _append(path, f"{time.time()} {os.getpid()}")
    return True


@app.task
def unlimited(path):
    _append(path, f"{time.time()} {os.getpid()}")
    return True


@app.task
def boom():
    raise KeyError("boom")


@app.task(bind=True, max_retries=1)
def retry_once(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "retried"


if os.environ.get("POOL_TEST_SIGNALS"):
    # worker-side signal receivers record what they got, one line per event
    from supervisor.native import signals

    _events = os.environ["POOL_TEST_SIGNALS"]

    def _recorder(name, fields):
        def receiver(sender=None, **kwargs):
            parts = [name, getattr(sender, "name", type(sender).__name__)]
            parts += [f"{k}={kwargs.get(k)!r}" for k in fields]
            _append(_events, " ".join(parts) + f" pid={os.getpid()}")
        return receiver

    _receivers = [
        (signals.task_received, "task_received", ()),
        (signals.task_prerun, "task_prerun", ("task_id", "args")),
        (signals.task_postrun, "task_postrun", ("task_id", "retval", "state")),
        (signals.task_success, "task_success", ("result",)),
        (signals.task_failure, "task_failure", ("task_id", "exception")),
        (signals.task_retry, "task_retry", ()),
        (signals.task_revoked, "task_revoked", ("terminated",)),
        (signals.worker_ready, "worker_ready", ()),
        (signals.worker_shutdown, "worker_shutdown", ()),
        (signals.worker_process_init, "worker_process_init", ()),
        (signals.task_unknown, "task_unknown", ("name",)),
    ]
    for _signal, _name, _fields in _receivers:
        _signal.connect(_recorder(_name, _fields), weak=False)


@app.task
def crunch(n):
    """A fixed amount of pure-Python CPU work (holds the GIL between bytecodes)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


@app.task
def grow(path, mib, seconds):
    """Hold `mib` MiB of touched memory in the process running the task for `seconds`."""
    block = b"x" * (mib * 1024 * 1024)
    _append(path, f"holding {len(block) // 2**20} {os.getpid()}")
    time.sleep(seconds)
    return len(block) // 2**20


@app.task(bind=True, time_limit=60, soft_time_limit=45)
def declared_limits(self):
    return [self.request.time_limit, self.request.soft_time_limit, list(self.request.timelimit)]
