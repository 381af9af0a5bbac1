"""The SQLite development backend: same API, same worker, polling instead of LISTEN."""

from __future__ import annotations

import signal
import sys

import pytest
from conftest import APPS, lines

from tests.conftest import wait_for


@pytest.fixture
def sqlite_app(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    monkeypatch.setenv("NATIVE_TEST_DB_URL", url)
    monkeypatch.syspath_prepend(str(APPS))
    import qtasks

    qtasks.app.close()
    qtasks.app.conf.broker_url = url
    yield qtasks, url
    qtasks.app.close()
    sys.modules.pop("qtasks", None)


def test_sqlite_queue_end_to_end(sqlite_app, start_worker, tmp_path):
    qtasks, url = sqlite_app
    marks = tmp_path / "marks"
    worker = start_worker("-c", "2", env={"NATIVE_TEST_DB_URL": url, "NATIVE_TEST_POLL": "0.1"})
    assert "poll-only" in worker.output
    assert qtasks.add.delay(2, 3).get(timeout=10) == 5
    assert qtasks.app.AsyncResult("unknown").state == "PENDING"
    for priority in (1, 9):
        qtasks.mark.apply_async(args=[f"p{priority}", str(marks)], priority=priority)
    wait_for(lambda: len(lines(marks)) == 2, 10, "two marks")
    failing = qtasks.retry_later.delay(str(tmp_path / "r"))
    wait_for(lambda: failing.state == "RETRY", 10, "RETRY stored")
    assert isinstance(failing.result, OSError)
    pending = qtasks.add.apply_async(args=[1, 1], countdown=30)
    pending.revoke()
    assert pending.state == "REVOKED"
    running = qtasks.hold.delay("long", str(marks), 30)
    wait_for(lambda: any(line.startswith("start long") for line in lines(marks)), 10, "start")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in worker.output, 10, "stopping")
    worker.signal(signal.SIGTERM)  # abort: the running job goes back to the queue
    assert worker.wait(15) == 0
    assert running.state == "PENDING"
    start_worker("-c", "2", env={"NATIVE_TEST_DB_URL": url, "NATIVE_TEST_POLL": "0.1"})
    wait_for(lambda: running.state == "STARTED", 10, "the returned job runs again")
    assert qtasks.add.delay(20, 22).get(timeout=10) == 42
