"""Tasks for the canvas and task-API tests, loaded by the test process and by workers."""

import os
import signal
import time

from supervisor.native import Celery, Reject, Task, shared_task

app = Celery("flowtasks", broker=os.environ.get("NATIVE_TEST_DB_URL"))
app.conf.native_lease_seconds = float(os.environ.get("NATIVE_TEST_LEASE", "2"))
app.conf.native_heartbeat_interval = float(os.environ.get("NATIVE_TEST_HEARTBEAT", "0.4"))
app.conf.native_poll_interval = 0.2


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task
def identity(value):
    return value


@app.task
def fail(message="expected failure"):
    raise ValueError(message)


@app.task(bind=True)
def request_info(self, *args):
    r = self.request
    return {"id": r.id, "root_id": r.root_id, "parent_id": r.parent_id,
            "headers": r.headers, "time_limit": r.time_limit, "group_id": r.group_id}


@app.task
def record(value, path):
    """Append a line per run: how many times a follow-up really ran survives any process."""
    _append(path, f"{value!r} {os.getpid()}")
    return value


@app.task
def errback_old(task_id, path):
    _append(path, f"errback {task_id}")


@app.task
def errback_new(request, exc, traceback, path):
    _append(path, f"errback-new {request.id} {type(exc).__name__}")


@app.task
def header_then_die(value, path):
    """A chord header task: the first run marks the file and SIGKILLs its own worker right
    after the task body, before the finish is written; the rerun completes."""
    first = not os.path.exists(path)
    _append(path, f"run {value} {os.getpid()}")
    if first and value == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return value


@app.task(bind=True)
def replace_with_chain(self, x):
    return self.replace(add.s(x, 1) | mul.s(10))


@app.task(bind=True)
def reject_once(self, path):
    if not os.path.exists(path):
        _append(path, "rejected")
        raise Reject("not now", requeue=True)
    return "accepted"


@app.task(ignore_result=True)
def ignored(x):
    return x


@app.task
def typed(when, ident, amount, raw, day, moment):
    return [when, ident, amount, raw, day, moment]


class ClassBased(Task):
    name = "flowtasks.ClassBased"
    autoretry_for = (KeyError,)
    max_retries = 2
    default_retry_delay = 0

    def run(self, path):
        _append(path, "try")
        if len(open(path).read().splitlines()) < 3:
            raise KeyError("again")
        return "done after retries"


app.register_task(ClassBased())


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code


@app.task
def custom_error():
    raise CustomError(42, "custom")


@shared_task
def shared_add(x, y):
    return x + y


@app.task
def sleeper(seconds):
    time.sleep(seconds)
    return seconds
