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


@app.task(bind=True)
def stamps_seen(self, *args):
    """What a stamped task sees: its request's stamps (and its own label, when given)."""
    return {"args": list(args), "stamps": self.request.stamps,
            "stamped_headers": sorted(self.request.stamped_headers or [])}


@app.task(bind=True)
def stamps_with_header_results(self, results):
    return {"header": results, "stamps": self.request.stamps}


@app.task(bind=True, max_retries=1)
def stamped_retry(self):
    if not self.request.retries:
        raise self.retry(countdown=0)
    return self.request.stamps


class StampsOnReplace(Task):
    def on_replace(self, sig):
        sig.stamp(replaced="yes")
        return super().on_replace(sig)


@app.task(bind=True, base=StampsOnReplace)
def replace_stamped(self):
    return self.replace(stamps_seen.si("replacement"))


class PickyError(Exception):
    """Its __init__ refuses the arguments it stores: it cannot be rebuilt from them."""

    def __init__(self, message, code=None):
        if code is None:
            raise TypeError("code is required")
        super().__init__(message)
        self.code = code


@app.task
def picky_error():
    raise PickyError("bad thing", 7)


@app.task(bind=True)
def grow_chord(self, nums, val):
    """A chord header task adding one task per number to its chord (Task.add_to_chord)."""
    for num in nums:
        self.add_to_chord(add.s(num, val))
    return 0


@app.task(bind=True)
def grow_chord_with_chord(self, nums, val):
    """Adds a whole chord to its chord: the sum of its header counts as one result."""
    from supervisor.native import group

    self.add_to_chord(group(add.s(num, val) for num in nums) | xsum.s())
    return 0


@app.task(bind=True)
def replace_with_chain_group(self):
    """Replaced by a chain ending in a group: its result is the group's list."""
    from supervisor.native import chain, group

    return self.replace(chain(add.s(1, 2), group(add.s(1), add.s(1))))


@app.task(bind=True)
def eta_seen(self, *args):
    return self.request.eta


@app.task
def successful_here(task_ids):
    """Which of these ids this worker process counts as succeeded (worker_state)."""
    from supervisor.native import worker_state

    return [task_id in worker_state.successful_requests for task_id in task_ids]
