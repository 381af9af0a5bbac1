"""The same API checks against the native queue and against real Celery + Redis.

The task module (apps/apiapp.py) is copied under two module names and imported once with
USE_DB_QUEUE unset (native) and once with USE_DB_QUEUE=false (Celery). The Celery worker is
started through `python -m supervisor.native worker` too: with USE_DB_QUEUE=false it execs
`celery ... worker`, which is the switch users rely on.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from conftest import APPS, REDIS_URL, WorkerProcess, lines

from tests.conftest import need, wait_for


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module", params=["native", "celery"])
def api(request, pg_url, tmp_path_factory):
    kind = request.param
    if kind == "celery":
        need(_redis_up(), f"Redis at {REDIS_URL}")
    tmp = tmp_path_factory.mktemp(f"api_{kind}")
    module = f"apiapp_{kind}"
    shutil.copy(APPS / "apiapp.py", tmp / f"{module}.py")
    queue = f"api-{kind}-{uuid.uuid4().hex[:8]}"
    env = {
        "API_BROKER": pg_url if kind == "native" else REDIS_URL,
        "API_BACKEND": "" if kind == "native" else REDIS_URL,
        "API_QUEUE": queue,
        "USE_DB_QUEUE": "true" if kind == "native" else "false",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.path.insert(0, str(tmp))
    try:
        mod = importlib.import_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    worker = WorkerProcess(tmp, f"{module}:app", ["-c", "2", "--without-beat"], env, cwd=tmp)

    def ready():
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker.output}")
        return " ready" in worker.output

    wait_for(ready, 60, f"{kind} worker ready:\n{worker.output}")
    mod.tmp = tmp
    mod.kind = kind
    yield mod
    worker.signal(signal.SIGTERM)
    try:
        worker.wait(20)
    except subprocess.TimeoutExpired:
        worker.signal(signal.SIGKILL)
    worker.close()
    sys.path.remove(str(tmp))


def path_in(api, name: str) -> str:
    return str(api.tmp / f"{name}-{uuid.uuid4().hex[:6]}")


def test_delay_and_result_api(api):
    r = api.add.delay(2, 3)
    assert r.get(timeout=20) == 5
    assert r.state == r.status == api.states.SUCCESS
    assert r.result == 5 and r.ready() and r.successful() and not r.failed()
    assert r.id == r.task_id


def test_apply_async_options(api):
    r = api.who.apply_async(args=[1], kwargs={"k": "v"}, task_id="custom-" + uuid.uuid4().hex,
                            countdown=0.5, priority=5)
    info = r.get(timeout=20)
    assert info == {"id": r.id, "retries": 0, "args": [1], "kwargs": {"k": "v"}}
    assert r.id.startswith("custom-")
    eta = api.add.apply_async(args=[1, 1], eta=datetime.now(UTC) + timedelta(seconds=0.5))
    assert eta.get(timeout=20) == 2


def test_unknown_id_is_pending(api):
    r = api.app.AsyncResult(str(uuid.uuid4()))
    assert r.state == "PENDING" and r.result is None and not r.ready()


def test_failure_reraises_the_original_exception(api):
    r = api.boom.delay("bad input")
    with pytest.raises(ValueError, match="bad input"):
        r.get(timeout=20)
    assert r.state == "FAILURE" and r.failed() and not r.successful()
    assert isinstance(r.result, ValueError)
    assert isinstance(r.get(timeout=1, propagate=False), ValueError)
    assert "bad input" in (r.traceback or "")


def test_max_retries_3_means_4_attempts_then_exc_reraised(api):
    path = path_in(api, "retry")
    r = api.always_retry.delay(path)
    with pytest.raises(ValueError, match="still failing"):
        r.get(timeout=30)
    assert lines(api.tmp / os.path.basename(path)) == [f"attempt {i}" for i in range(4)]


def test_retry_without_exc_raises_max_retries_exceeded(api):
    path = path_in(api, "noexc")
    r = api.retry_without_exc.delay(path)
    with pytest.raises(api.MaxRetriesExceededError):
        r.get(timeout=30)
    assert len(lines(api.tmp / os.path.basename(path))) == 2


def test_autoretry_for(api):
    path = path_in(api, "auto")
    assert api.auto.delay(path).get(timeout=30) == "recovered"
    assert len(lines(api.tmp / os.path.basename(path))) == 3


def test_ignore_result_reads_pending(api):
    path = path_in(api, "quiet")
    r = api.quiet.delay(path)
    wait_for(lambda: lines(api.tmp / os.path.basename(path)) == ["ran"], 20, "quiet ran")
    time.sleep(0.3)  # give a (wrong) result write the chance to land
    assert r.state == "PENDING"


def test_revoke_pending(api):
    r = api.add.apply_async(args=[1, 2], countdown=2)
    r.revoke()
    wait_for(lambda: r.state == "REVOKED", 20, "REVOKED")
    with pytest.raises(api.TaskRevokedError):
        r.get(timeout=1)


def test_expired_task_is_revoked(api):
    r = api.add.apply_async(args=[1, 2], countdown=1, expires=0.2)
    wait_for(lambda: r.state == "REVOKED", 20, "expired -> REVOKED")


def test_a_task_that_expires_while_waiting_in_the_worker_is_revoked(api, tmp_path):
    """Celery judges `expires` when the task is about to run: a task the worker already holds
    (prefetched behind busy threads) and that expires while it waits is revoked, not run."""
    started, release = tmp_path / "started", tmp_path / "release"
    holds = [api.hold.delay(str(started), str(release)) for _ in range(2)]  # both threads
    wait_for(lambda: started.exists() and started.read_text().count("holding") == 2, 30,
             "both worker threads busy")
    expires = datetime.now(UTC) + timedelta(seconds=0.5)
    r = api.add.apply_async(args=[1, 2], expires=expires)
    wait_for(lambda: datetime.now(UTC) > expires + timedelta(seconds=0.2), 5, "the expiry")
    release.touch()
    for h in holds:
        h.get(timeout=30)
    wait_for(lambda: r.state == "REVOKED", 20, "expired while held -> REVOKED")


def test_shared_task(api):
    assert api.shared_mul.delay(6, 7).get(timeout=20) == 42


def test_non_json_argument_fails_at_delay(api):
    with pytest.raises(Exception) as caught:
        api.add.delay(object(), 1)
    assert type(caught.value).__name__ == "EncodeError"


def test_get_timeout(api):
    r = api.add.apply_async(args=[1, 1], countdown=30)
    with pytest.raises(Exception) as caught:
        r.get(timeout=0.2)
    assert type(caught.value).__name__ == "TimeoutError"
    r.revoke()


def test_eager_mode(api):
    api.app.conf.task_always_eager = True
    try:
        r = api.add.delay(4, 5)
        assert r.get() == 9 and r.successful() and r.state == "SUCCESS"
        failed = api.boom.delay("eager")
        assert failed.failed() and isinstance(failed.result, ValueError)
        with pytest.raises(ValueError, match="eager"):
            failed.get()
        path = path_in(api, "eager-retry")
        retried = api.always_retry.delay(path)  # retries run at once, countdowns skipped
        assert retried.state == "FAILURE" and isinstance(retried.result, ValueError)
        assert len(lines(api.tmp / os.path.basename(path))) == 4
        api.app.conf.task_eager_propagates = True
        with pytest.raises(ValueError, match="eager"):
            api.boom.delay("eager")
    finally:
        api.app.conf.task_always_eager = False
        api.app.conf.task_eager_propagates = False


def test_calling_the_task_runs_it_here(api):
    assert api.add(2, 2) == 4
