"""supervisor.native.worker_state (celery.worker.state's names), with real worker processes
on PostgreSQL: the ids a worker counts as succeeded, and the revoked stamps as one table."""

from __future__ import annotations

import pytest
from test_canvas import start_flow_worker

from supervisor.native import TaskRevokedError
from supervisor.native.canvas import StampingVisitor


def test_successful_requests_holds_the_ids_that_succeeded_in_that_worker(flow, start_worker):
    t = flow
    # one thread: jobs run one at a time in the order sent
    start_worker("-c", "1", "-P", "threads", app="flowtasks:app")
    ok = t.add.delay(1, 2)
    assert ok.get(timeout=20) == 3
    failed = t.fail.delay()
    with pytest.raises(Exception):  # noqa: B017 - which exception is not the point here
        failed.get(timeout=20)
    ignored = t.ignored.delay(5)  # ignore_result: no result to wait for, but it succeeded
    assert t.add.delay(0, 0).get(timeout=20) == 0  # ran after `ignored`
    # an id is added once its result is written, before the worker claims what comes next
    seen = t.successful_here.delay([ok.id, failed.id, ignored.id, "never-sent"])
    assert seen.get(timeout=20) == [True, False, True, False]


class Monitor(StampingVisitor):
    def __init__(self, value):
        self.value = value

    def on_signature(self, sig, **headers):
        return {"monitoring_id": self.value}


def test_revoked_stamps_reads_and_clears_the_table_every_worker_uses(flow, start_worker):
    from supervisor.native import worker_state

    t = flow
    start_flow_worker(start_worker)
    flow.app.set_current()
    worker_state.revoked_stamps.clear()
    t.app.control.revoke_by_stamped_headers({"monitoring_id": ["m-9", 4]})
    assert dict(worker_state.revoked_stamps) == {"monitoring_id": ["m-9", 4]}

    stamped = t.add.si(2, 2)
    stamped.stamp(Monitor("m-9"))
    with pytest.raises(TaskRevokedError):
        stamped.delay().get(timeout=20)

    worker_state.revoked_stamps.clear()
    assert dict(worker_state.revoked_stamps) == {}
    again = t.add.si(2, 2)
    again.stamp(Monitor("m-9"))
    assert again.delay().get(timeout=20) == 4  # the worker no longer refuses the stamp
