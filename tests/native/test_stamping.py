"""Stamping (Celery's StampingVisitor API) and unrebuildable exceptions, with real worker
processes on PostgreSQL: stamps are stored with each job and reach every task of a workflow."""

from __future__ import annotations

import json

import pytest
from conftest import job_row
from test_canvas import start_flow_worker

from supervisor.native import TaskRevokedError, chain, chord, group
from supervisor.native.canvas import StampingVisitor


class Monitor(StampingVisitor):
    def __init__(self, value):
        self.value = value

    def on_signature(self, sig, **headers):
        return {"monitoring_id": self.value}


def test_a_visitor_stamps_every_task_of_a_workflow(flow, start_worker, db):
    t = flow
    start_flow_worker(start_worker)
    workflow = chord([t.stamps_seen.si(1), t.stamps_seen.si(2) | t.stamps_seen.si(3)],
                     t.stamps_with_header_results.s())
    workflow.stamp(Monitor("m-1"))
    out = workflow.delay().get(timeout=30)
    stamp = {"monitoring_id": "m-1"}
    assert out["stamps"] == stamp  # the chord body
    assert [r["stamps"] for r in out["header"]] == [stamp, stamp]  # header, chain's last step
    assert all(r["stamped_headers"] == ["monitoring_id"] for r in out["header"])

    # stored with the job in PostgreSQL, in its options
    one = t.stamps_seen.si("stored")
    one.stamp(Monitor("m-2"))
    result = one.delay()
    result.get(timeout=20)
    headers = job_row(db, result.id)["options"]["headers"]
    assert headers["stamps"] == {"monitoring_id": "m-2"}
    assert headers["stamped_headers"] == ["monitoring_id"]


def test_group_and_chain_hooks_and_keyword_stamps(flow, start_worker):
    t = flow
    seen = []

    class Hooks(StampingVisitor):
        def on_group_start(self, group, **headers):
            seen.append("group")
            return {"in_group": True}

        def on_chain_start(self, chain, **headers):
            seen.append("chain")
            return {}

        def on_signature(self, sig, **headers):
            seen.append(sig.args[0])
            return {"task": sig.args[0]}

    start_flow_worker(start_worker)
    workflow = group(t.stamps_seen.si("a"), chain(t.stamps_seen.si("b"), t.stamps_seen.si("c")))
    workflow.stamp(Hooks(), owner="ops")  # keyword stamps go to every task as well
    assert seen == ["group", "a", "chain", "b", "c"]
    res = workflow.delay().get(timeout=30)
    assert res[0]["stamps"] == {"owner": "ops", "in_group": True, "task": "a"}
    assert res[1]["stamps"] == {"owner": "ops", "in_group": True, "task": "c"}


def test_append_stamps_keeps_both_values(flow, start_worker):
    t = flow
    start_flow_worker(start_worker)
    sig = t.stamps_seen.si()
    sig.stamp(Monitor("first"))
    sig.stamp(Monitor("second"))  # the newer value wins
    assert sig.options["monitoring_id"] == "second"
    sig.stamp(Monitor("third"), append_stamps=True)
    assert sig.delay().get(timeout=20)["stamps"] == {"monitoring_id": ["second", "third"]}


def test_callbacks_and_errbacks_are_stamped(flow, start_worker):
    t = flow
    start_flow_worker(start_worker)
    ok = t.stamps_seen.si("ok")
    callback = t.stamps_seen.si("callback")
    callback_result = callback.freeze()
    ok.link(callback)
    ok.stamp(Monitor("linked"))
    ok.delay().get(timeout=20)
    assert callback_result.get(timeout=20)["stamps"] == {"monitoring_id": "linked"}

    bad = t.fail.si()
    errback = t.stamps_seen.si("errback")
    bad.options["link_error"] = dict(errback)  # one dict, as Celery allows
    bad.stamp(Monitor("err"))
    assert bad.options["link_error"][0]["options"]["monitoring_id"] == "err"


def test_stamps_survive_retry_and_replace(flow, start_worker):
    t = flow
    start_flow_worker(start_worker)
    sig = t.stamped_retry.si()
    sig.stamp(Monitor("r"))
    assert sig.delay().get(timeout=20) == {"monitoring_id": "r"}

    sig = t.replace_stamped.si()
    sig.stamp(Monitor("before"))
    out = sig.delay().get(timeout=20)  # the replacement keeps the stamps and adds its own
    assert out["args"] == ["replacement"]
    assert out["stamps"] == {"monitoring_id": "before", "replaced": "yes"}


def test_revoke_by_stamped_headers(flow, start_worker):
    t = flow
    app = t.app
    from supervisor.native import stamping

    stamping.clear_revoked_stamps(app)
    start_flow_worker(start_worker)
    doomed = t.stamps_seen.si("doomed")
    doomed.stamp(Monitor("bad"))
    spared = t.stamps_seen.si("spared")
    spared.stamp(Monitor("good"))
    # revoked before it is even sent, as Celery's worker remembers revoked stamps
    replies = app.control.revoke_by_stamped_headers({"monitoring_id": ["bad"]}, reply=True)
    assert replies and "flagged as revoked" in next(iter(replies[0].values()))["ok"]
    result = doomed.delay()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=20)
    assert result.status == "REVOKED"
    # inside a workflow, the stamped step is revoked and the steps after it do not run
    in_chain = chain(t.stamps_seen.si("first"), doomed.clone(), t.stamps_seen.si("never"))
    with pytest.raises(TaskRevokedError):
        in_chain.delay().get(timeout=20)
    assert spared.delay().get(timeout=20)["stamps"] == {"monitoring_id": "good"}
    stamping.clear_revoked_stamps(app)
    assert doomed.clone().delay().get(timeout=20)["args"] == ["doomed"]


def test_plain_tasks_carry_no_stamps(flow, start_worker, db):
    t = flow
    start_flow_worker(start_worker)
    result = t.stamps_seen.delay("plain")
    assert result.get(timeout=20) == {"args": ["plain"], "stamps": None, "stamped_headers": []}
    assert job_row(db, result.id)["options"] is None  # nothing stored, nothing to check


def test_an_exception_that_cannot_be_rebuilt_comes_back_wrapped(flow, start_worker, db):
    from supervisor.native.exceptions import UnpickleableExceptionWrapper

    t = flow
    start_flow_worker(start_worker)
    result = t.picky_error.delay()
    with pytest.raises(t.PickyError) as caught:  # still caught by its own class
        result.get(timeout=20)
    error = caught.value
    assert isinstance(error, UnpickleableExceptionWrapper)
    assert error.exc_cls_name == "PickyError" and error.exc_args == ("bad thing",)
    assert "PickyError" in str(error) and "bad thing" in str(error)
    assert result.status == "FAILURE"
    assert json.loads(json.dumps(job_row(db, result.id)["result"]))["exc_type"] == "PickyError"
    restored = error.restore()
    assert type(restored) is t.PickyError and restored.args == ("bad thing",)
