"""Writes through app.backend and revoke as Celery's result backend takes them, on PostgreSQL
with a real worker process (and the SQLite development store): store_result for a task run
elsewhere, revoke of an id never sent, revoke(reply=True)."""

from __future__ import annotations

import sys
import uuid

import pytest
from conftest import APPS
from test_canvas import start_flow_worker

from supervisor.native import TaskRevokedError


def _ids(n):
    return [str(uuid.uuid4()) for _ in range(n)]


def test_store_result_then_revoke_leaves_a_task_started_elsewhere(flow, start_worker):
    t = flow
    start_flow_worker(start_worker)
    backend = t.app.backend
    started, progress, never_sent = _ids(3)
    # another worker (not a native one) says it runs these
    backend.store_result(started, {"hostname": "other@host"}, "STARTED")
    backend.store_result(progress, {"done": 3}, "PROGRESS")
    assert backend.get_state(started) == "STARTED"
    assert t.app.AsyncResult(progress).result == {"done": 3}

    replies = t.app.control.revoke([started, progress, never_sent], reply=True, timeout=5)
    assert replies and all("flagged as revoked" in next(iter(r.values()))["ok"]
                           for r in replies)
    assert backend.get_state(started) == "STARTED"  # its state is the other worker's
    assert backend.get_state(progress) == "PROGRESS"
    assert backend.get_state(never_sent) == "REVOKED"
    with pytest.raises(TaskRevokedError):
        t.app.AsyncResult(never_sent).get(timeout=5)
    assert t.app.control.revoke(never_sent) is None  # no reply asked: none built

    # a final state written for it: the result reads back as a worker's would
    backend.store_result(started, 42, "SUCCESS")
    assert t.app.AsyncResult(started).get(timeout=5) == 42
    failed = str(uuid.uuid4())
    backend.store_result(failed, ValueError("from elsewhere"), "FAILURE", traceback="tb")
    with pytest.raises(ValueError, match="from elsewhere"):
        t.app.AsyncResult(failed).get(timeout=5)
    assert t.app.AsyncResult(failed).traceback == "tb"


def test_store_result_refuses_a_task_the_queue_holds(flow, start_worker):
    t = flow
    start_flow_worker(start_worker)
    waiting = t.add.apply_async((1, 1), countdown=60)
    with pytest.raises(ValueError, match="waiting or running"):
        t.app.backend.store_result(waiting.id, 5, "SUCCESS")
    assert waiting.state == "PENDING"
    waiting.revoke()
    assert waiting.state == "REVOKED"


def test_sqlite_store_result_and_revoke_of_an_unknown_id(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    monkeypatch.setenv("NATIVE_TEST_DB_URL", url)
    monkeypatch.syspath_prepend(str(APPS))
    from supervisor.native import current

    # importing qtasks makes its app current; the next tests must not send through it
    monkeypatch.setattr(current, "_current", current.get_current())
    import qtasks

    qtasks.app.close()
    qtasks.app.conf.broker_url = url
    try:
        backend = qtasks.app.backend
        elsewhere, never_sent = _ids(2)
        backend.store_result(elsewhere, {"hostname": "other@host"}, "STARTED")
        qtasks.app.control.revoke([elsewhere, never_sent])
        assert backend.get_state(elsewhere) == "STARTED"
        assert backend.get_state(never_sent) == "REVOKED"
        backend.store_result(elsewhere, [1, 2], "SUCCESS")
        assert qtasks.app.AsyncResult(elsewhere).get(timeout=5) == [1, 2]
        waiting = qtasks.add.apply_async((1, 1), countdown=60)
        with pytest.raises(ValueError, match="waiting or running"):
            backend.store_result(waiting.id, 5, "SUCCESS")
    finally:
        qtasks.app.close()
        sys.modules.pop("qtasks", None)
