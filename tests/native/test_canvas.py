"""Canvas on PostgreSQL with real worker processes: chains, groups, chords, links, results."""

from __future__ import annotations

import signal

import pytest
from conftest import lines

from tests.conftest import wait_for


def start_flow_worker(start_worker, *args, **kw):
    return start_worker("-c", "4", *args, app="flowtasks:app", **kw)


def test_chains_groups_and_partials(flow, start_worker):
    from supervisor.native import chain, group, signature

    t = flow
    start_flow_worker(start_worker)
    res = (t.add.s(2, 2) | t.mul.s(4) | t.add.s(1)).delay()
    assert res.get(timeout=20) == 17
    assert res.parent.get(timeout=5) == 16 and res.parent.parent.get(timeout=5) == 4
    # .si() is immutable: the previous result is not passed to it
    assert chain(t.add.s(2, 2), t.add.si(1, 1)).delay().get(timeout=20) == 2
    # signature() by name, with options; a partial signature called with the rest
    sig = signature("flowtasks.add", args=(5,), options={"queue": "celery"})
    assert sig.delay(10).get(timeout=20) == 15
    assert group(t.add.s(i, i) for i in range(5)).delay().get(timeout=20) == [0, 2, 4, 6, 8]
    # a group called with arguments: each member gets them first
    assert group(t.add.s(1), t.mul.s(3))(10).get(timeout=20) == [11, 30]
    # a group inside a group is unrolled into it, as in Celery
    nested = group(group(t.add.s(1, 1), t.add.s(2, 2)), t.add.s(3, 3)).delay()
    assert nested.get(timeout=20) == [2, 4, 6]
    # group followed by a task in a chain becomes a chord
    assert (group(t.add.s(1, 1), t.add.s(2, 2)) | t.xsum.s() | t.mul.s(3)).delay().get(
        timeout=20) == 18
    assert t.add.starmap([(1, 2), (3, 4)]).delay().get(timeout=20) == [3, 7]
    assert t.add.chunks([(i, i) for i in range(7)], 3).delay().get(timeout=20) == [
        [0, 2, 4], [6, 8, 10], [12]]


def test_chord_body_gets_header_results_and_failures_reach_errbacks(flow, start_worker,
                                                                   tmp_path, db):
    from supervisor.native import ChordError, chord

    t = flow
    start_flow_worker(start_worker)
    res = chord((t.add.s(i, i) for i in range(20)), t.xsum.s()).delay()
    assert res.get(timeout=30) == sum(2 * i for i in range(20))
    assert res.parent.completed_count() == 20
    # the counter lives in the database and ends at zero, fired once
    row = db.execute("SELECT remaining, fired_at IS NOT NULL FROM start_all.chords "
                     "WHERE id = %s", (res.parent.id,)).fetchone()
    assert row == (0, True)

    marks = tmp_path / "errbacks"
    body = t.xsum.s().on_error(t.errback_old.s(str(marks)))
    failing = chord([t.add.s(1, 1), t.fail.s()], body).delay()
    with pytest.raises(ValueError, match="expected failure"):  # the header's error, as Celery
        failing.get(timeout=30)
    stored = t.app.AsyncResult(failing.id)  # the body itself failed with ChordError
    assert stored.state == "FAILURE" and isinstance(stored.result, ChordError)
    wait_for(lambda: lines(marks), 20, "the chord body's errback")
    assert lines(marks) == [f"errback {failing.id}"]

    # retention: a chord fired longer ago than the failures' expiry is pruned with them
    db.execute("UPDATE start_all.chords SET fired_at = now() - interval '8 days' WHERE id = %s",
               (res.parent.id,))
    start_flow_worker(start_worker)  # a worker prunes when it starts

    def pruned():
        return db.execute("SELECT count(*) FROM start_all.chords WHERE id = %s",
                          (res.parent.id,)).fetchone() == (0,)

    wait_for(pruned, 20, "the old chord row pruned")
    assert db.execute("SELECT count(*) FROM start_all.chords").fetchone() == (1,)


def test_link_and_link_error_really_queue_the_linked_jobs(flow, start_worker, tmp_path, db):
    t = flow
    start_flow_worker(start_worker)
    out = tmp_path / "links"
    res = t.add.apply_async((2, 3), link=t.record.s(str(out)))
    assert res.get(timeout=20) == 5
    wait_for(lambda: lines(out), 20, "the linked task")
    assert lines(out)[0].startswith("5 ")
    # the link ran as its own job, a child of the first
    child = db.execute("SELECT options->>'parent_id' FROM start_all.jobs "
                       "WHERE name = 'flowtasks.record'").fetchone()
    assert child == (res.id,)

    errs = tmp_path / "errs"
    failed = t.fail.apply_async(link_error=[t.errback_old.s(str(errs)),
                                            t.errback_new.s(str(errs))])
    with pytest.raises(ValueError):
        failed.get(timeout=20)
    wait_for(lambda: len(lines(errs)) == 2, 20, "both errbacks")
    assert sorted(lines(errs)) == sorted([f"errback {failed.id}",
                                          f"errback-new {failed.id} ValueError"])


def test_results_save_restore_and_result_sets(flow, start_worker):
    from supervisor.native import GroupResult, ResultSet, group

    t = flow
    start_flow_worker(start_worker)
    res = group(t.add.s(i, 1) for i in range(4)).delay()
    res.save()
    again = GroupResult.restore(res.id, app=t.app)
    assert again.id == res.id and [r.id for r in again] == [r.id for r in res]
    assert again.join(timeout=20) == [1, 2, 3, 4] and again.completed_count() == 4
    assert again.ready() and again.successful()
    rs = ResultSet([t.add.delay(1, 1), t.add.delay(2, 2)])
    assert rs.get(timeout=20) == [2, 4] and rs.completed_count() == 2
    again.delete()
    assert GroupResult.restore(res.id, app=t.app) is None


def test_request_ids_headers_and_replace(flow, start_worker):
    from supervisor.native import group

    t = flow
    start_flow_worker(start_worker)
    first = t.add.s(1, 1)
    res = (first | t.request_info.s()).delay()
    info = res.get(timeout=20)
    assert info["parent_id"] == res.parent.id and info["root_id"] == res.parent.id
    direct = t.request_info.apply_async(headers={"tenant": "acme"}, time_limit=30)
    info = direct.get(timeout=20)
    assert info["headers"] == {"tenant": "acme"} and info["time_limit"] == 30
    assert info["root_id"] == direct.id and info["parent_id"] is None
    members = group(t.request_info.s(), t.request_info.s()).delay()
    assert {info["group_id"] for info in members.get(timeout=20)} == {members.id}
    # a failed step: the steps after it never run and read FAILURE with the same error
    broken = (t.add.s(1, 1) | t.fail.si("step two") | t.add.s(1)).delay()
    with pytest.raises(ValueError, match="step two"):
        broken.get(timeout=20)
    assert broken.state == "FAILURE" and str(broken.result) == "step two"
    # self.replace: the chain replacing the task gives the task's own result
    assert t.replace_with_chain.delay(4).get(timeout=20) == 50
    assert (t.replace_with_chain.s(1) | t.add.s(5)).delay().get(timeout=20) == 25


def test_chord_body_fires_once_when_the_worker_dies_finishing_the_last_header(
        flow, start_worker, tmp_path, db, pg_url):
    """SIGKILL a worker while the transaction recording its last header finish is open: the
    finish and the chord's decrement roll back together, the header reruns elsewhere, and the
    body runs exactly once."""
    import psycopg

    from supervisor.native import chord

    t = flow
    runs, body_runs = tmp_path / "runs", tmp_path / "body"
    blocker = psycopg.connect(pg_url)  # holds the chord row: the finish blocks inside
    res = chord([t.record.s(i, str(runs)) for i in range(3)], t.record.s(str(body_runs))).delay()
    chord_id = res.parent.id
    blocker.execute("SELECT 1 FROM start_all.chords WHERE id = %s FOR UPDATE", (chord_id,))
    doomed = start_flow_worker(start_worker, env={"NATIVE_TEST_LEASE": "1"})

    def finish_blocked():
        return db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%start_all.chords%%'").fetchone()[0]

    wait_for(lambda: len(lines(runs)) == 3 and finish_blocked(), 30,
             "all header tasks run and their finish waiting on the chord row")
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    blocker.rollback()
    blocker.close()
    # nothing was recorded: the headers are still held under the dead worker's lease
    assert db.execute("SELECT remaining FROM start_all.chords WHERE id = %s",
                      (chord_id,)).fetchone() == (3,)
    start_flow_worker(start_worker, env={"NATIVE_TEST_LEASE": "1"})
    assert res.get(timeout=30) == [0, 1, 2]
    # nothing is left to run (a second body could only come from a second queued row)
    assert db.execute("SELECT count(*) FROM start_all.jobs WHERE status NOT IN "
                      "('SUCCESS', 'FAILURE', 'REVOKED')").fetchone() == (0,)
    assert len(lines(runs)) == 6, "every header task ran twice: the kill really landed"
    assert len(lines(body_runs)) == 1, lines(body_runs)


def test_map_ignores_the_previous_result_and_workflow_countdown_reaches_the_first_tasks(
        flow, start_worker):
    import time

    from supervisor.native import chain, group

    t = flow
    start_flow_worker(start_worker)
    # a map/starmap is immutable in a chain, as in Celery: it does not get the result before
    assert chain(t.add.si(1, 1), t.add.starmap([(1, 1), (2, 2)])).delay().get(
        timeout=20) == [2, 4]
    # a one-task group inside a chain is that task: its result is passed on as a value
    assert chain(group(t.add.s(0, 0)), t.add.s(-1)).delay().get(timeout=20) == -1
    # countdown given to (group | task) delays the header tasks, not only the body
    started = time.monotonic()
    result = (group(t.add.s(1, 1), t.add.s(2, 2)) | t.xsum.s()).apply_async(countdown=1.5)
    assert result.get(timeout=20) == 6
    assert time.monotonic() - started >= 1.4


def test_a_copied_workflow_keeps_the_app_of_its_tasks(flow, pg_url):
    """Another app made current later (as importing a second project's module does) does not
    capture a chord's header when the chord is copied or cloned (stamp() and delay() do)."""
    import copy

    from supervisor.native import Celery, chord

    t = flow
    other = Celery("other-current", broker=pg_url)
    other.conf.task_default_queue = "not-this-one"
    other.set_current()
    try:
        workflow = chord([t.stamps_seen.si(1), t.stamps_seen.si(2) | t.stamps_seen.si(3)],
                         t.stamps_with_header_results.s())
        for copied in (copy.deepcopy(workflow), workflow.clone()):
            assert [s.app for s in copied.header.tasks] == [t.app, t.app]
            assert copied.body.app is t.app
    finally:
        t.app.set_current()
        other.close()


def test_one_signature_object_repeated_runs_in_each_place(flow, start_worker, tmp_path):
    """chain(sig for _ in range(n)) repeats one object: each place is its own task, and
    each runs its own link callback (Celery's chain/group children with callbacks)."""
    from supervisor.native import chain, group

    t = flow
    start_flow_worker(start_worker)
    marks = tmp_path / "links"
    step = t.identity.si(7)
    step.link(t.record.s(str(marks)))
    assert chain(step for _ in range(5)).delay().get(timeout=30) == 7
    wait_for(lambda: len(lines(marks)) >= 5, 20, "a link callback per chain step")
    members = group(step for _ in range(4)).delay()
    assert members.get(timeout=30) == [7] * 4
    assert len({r.id for r in members.results}) == 4
    wait_for(lambda: len(lines(marks)) >= 9, 20, "a link callback per group member")
    assert [line.split()[0] for line in lines(marks)] == ["7"] * 9


def test_add_to_chord_grows_the_running_chord(flow, start_worker, db):
    """Task.add_to_chord(): the chord's body waits for the added tasks and gets their results
    with the others'; the counter row ends at zero with every header id recorded."""
    from supervisor.native import chord

    t = flow
    start_flow_worker(start_worker)
    res = chord([t.grow_chord.s([1, 2, 3], 4), t.add.s(1, 1)], t.identity.s()).delay()
    assert sorted(res.get(timeout=30)) == [0, 2, 5, 6, 7]
    remaining, header_ids = db.execute("SELECT remaining, header_ids FROM start_all.chords "
                                       "WHERE id = %s", (res.parent.id,)).fetchone()
    assert remaining == 0 and len(header_ids) == 5
    # an added chord counts as one result: its body's
    res = chord([t.grow_chord_with_chord.s([1, 2, 3], 4)], t.identity.s()).delay()
    assert sorted(res.get(timeout=30)) == [0, 5 + 6 + 7]
    # outside a chord there is nothing to add to
    with pytest.raises(ValueError, match="not member of any chord"):
        t.grow_chord.delay([1], 1).get(timeout=30)


def test_group_link_and_link_error_reach_its_members(flow, start_worker, tmp_path):
    """group.link(cb) runs cb once, from the first member (immutable, as Celery);
    group.link_error(eb) runs eb for each member that fails. A bytes argument in a
    callback stays bytes (a Celery JSON type)."""
    from supervisor.native import group

    t = flow
    start_flow_worker(start_worker)
    marks = tmp_path / "marks"
    ok = group(t.identity.si(1), t.identity.si(2))
    ok.link(t.record.si(b"raw", str(marks)))
    assert ok.delay().get(timeout=30) == [1, 2]
    wait_for(lambda: lines(marks), 20, "the group's callback")
    failing = group(t.fail.si(), t.identity.si(3), t.fail.si())
    failing.link_error(t.errback_old.s(str(marks)))
    res = failing.delay()
    with pytest.raises(ValueError, match="expected failure"):
        res.get(timeout=30)
    wait_for(lambda: len(lines(marks)) >= 3, 20, "an errback per failed member")
    got = lines(marks)
    assert got[0].split()[0] == "b'raw'" and len(got) == 3
    assert sorted(got[1:]) == sorted(f"errback {r.id}" for r in (res.results[0],
                                                                 res.results[2]))


def test_chord_body_parent_is_the_header_task_that_completed_it(flow, start_worker):
    """As Celery: the body's request.parent_id is a header task's id (the last to finish),
    its root_id the workflow's."""
    from supervisor.native import chord

    t = flow
    start_flow_worker(start_worker)
    first = t.add.si(1, 1)
    root_id = first.freeze().id
    res = (first | chord([t.add.si(i, i) for i in range(5)], t.request_info.s())).delay()
    info = res.get(timeout=30)
    assert info["parent_id"] in {r.id for r in res.parent.results}
    assert info["root_id"] == root_id


def test_frozen_signature_in_two_workflows_runs_in_both(flow, start_worker, tmp_path):
    """A follow-up whose id was fixed by the caller (freeze()) runs again in a second
    workflow, as Celery re-runs a task sent again with the same id; within one run a
    follow-up still starts once."""
    from supervisor.native import chord, group

    t = flow
    start_flow_worker(start_worker)
    marks = tmp_path / "runs"
    step = t.record.s(str(marks))
    step_id = step.freeze().id
    assert (t.identity.si(1) | step).delay().get(timeout=30) == 1
    second = (t.identity.si(2) | step).delay()
    assert second.id == step_id  # until it runs again, the id holds the first run's result
    wait_for(lambda: len(lines(marks)) >= 2, 20, "the frozen step run by the second chain")
    wait_for(lambda: t.app.AsyncResult(step_id).result == 2, 20, "the second run's result")
    assert [line.split()[0] for line in lines(marks)] == ["1", "2"]
    # the same frozen task in a chord's header, then again in the header of another chord,
    # then in a chord's body group: it runs each time
    other = t.record.si(3, str(marks))
    other.freeze()
    assert chord([other], t.xsum.s()).delay().get(timeout=30) == 3
    wait_for(lambda: len(lines(marks)) >= 3, 20, "the frozen task in a first header")
    chord([other], t.xsum.s()).delay()
    wait_for(lambda: len(lines(marks)) >= 4, 20, "the frozen task in a second header")
    assert chord([t.identity.si(1)], group(t.identity.s(), other)).delay().get(
        timeout=30) == [[1], 3]
    assert [line.split()[0] for line in lines(marks)] == ["1", "2", "3", "3", "3"]


def test_chord_header_generator_is_sent_as_it_yields(flow, start_worker, tmp_path):
    """A chord header given as a generator: each task is sent when yielded (the first runs
    while the generator makes the next, as Celery), and the body waits for all of them,
    also when the last finished before the generator ended (the sender fires it then)."""
    from supervisor.native import chord

    t = flow
    start_flow_worker(start_worker)
    marks = tmp_path / "header"

    def header():
        yield t.record.s(1, str(marks))
        wait_for(lambda: lines(marks), 20, "the first header task, run before the next one")
        yield t.record.s(2, str(marks))
        wait_for(lambda: len(lines(marks)) >= 2, 20, "the second header task")

    res = chord(header(), t.xsum.s()).delay()
    assert res.get(timeout=30) == 3
    assert [line.split()[0] for line in lines(marks)] == ["1", "2"]
    assert len(res.parent.results) == 2
    assert chord(iter(()), t.xsum.s()).delay().get(timeout=30) == 0


def test_empty_chains_and_groups_are_left_out(flow, start_worker):
    """As Celery: an empty chain or group in a chain, a group or a chord header does
    nothing; results and partial arguments go past it."""
    from supervisor.native import chain, chord, group

    t = flow
    start_flow_worker(start_worker)
    assert chain(group(t.add.s(2, 2), t.add.s(4, 4)), group(), group()).delay().get(
        timeout=30) == [4, 8]
    assert chain(group(), t.add.s(10)).apply_async((5,)).get(timeout=30) == 15
    assert chain(chain(), t.add.s(10)).apply_async((5,)).get(timeout=30) == 15
    members = group(chain(), t.add.s(1, 2), chain(), t.add.s(3, 4)).delay()
    assert len(members.results) == 2 and members.get(timeout=30) == [3, 7]
    assert chord([chain()], t.xsum.s()).delay().get(timeout=30) == 0
    assert chord([chain(), t.add.s(1, 1), chain(), t.add.s(2, 2)], t.xsum.s()).delay().get(
        timeout=30) == 6
    # Celery's _chain (steps as given, as rebuilt from JSON) is native's chain
    from supervisor.native.canvas import _chain

    assert _chain(_chain(group(), t.add.s(10)), t.add.s(20)).apply_async((5,)).get(
        timeout=30) == 35


def test_chord_apply_async_link_options_take_one_signature(flow, start_worker, tmp_path):
    """chord(...).apply_async(link=sig) / (link_error=sig): one signature, not a list, runs
    after the body (with its result) or when it fails; the body keeps its own callbacks."""
    from supervisor.native import chord

    t = flow
    start_flow_worker(start_worker)
    marks = tmp_path / "links"
    body = t.xsum.s()
    body.link(t.record.si("own", str(marks)))
    res = chord([t.add.si(1, 1), t.add.si(2, 2)], body).apply_async(
        link=t.record.s(str(marks)))
    assert res.get(timeout=30) == 6
    wait_for(lambda: len(lines(marks)) >= 2, 20, "both callbacks")
    assert sorted(line.split()[0] for line in lines(marks)) == ["'own'", "6"]
    failing = chord([t.add.si(1, 1)], t.fail.si()).apply_async(
        link_error=t.errback_old.s(str(marks)))
    with pytest.raises(ValueError):
        failing.get(timeout=30)
    wait_for(lambda: len(lines(marks)) >= 3, 20, "the errback")
    assert lines(marks)[2] == f"errback {failing.id}"


def _queue_drained(db) -> bool:
    """No job left to run: every follow-up a finish planned has run (they are inserted in
    that finish's transaction, so none can appear later)."""
    return db.execute("SELECT count(*) FROM start_all.jobs WHERE status IN "
                      "('PENDING', 'RETRY', 'RESERVED', 'STARTED')").fetchone() == (0,)


def _labels(path) -> list[str]:
    return sorted(line.split()[0].strip("'") for line in lines(path))


def test_chord_with_a_group_body_calls_each_body_task_errbacks_on_header_failure(
        flow, start_worker, tmp_path, db):
    """As Celery: when a header task fails, each task of a group body calls its errbacks
    (its own, and the chord's link_error, which goes on to each of them, once each); a
    chord in the body calls those of its body; an errback set as one signature runs; a
    chord body's link_error option runs once; link= on a group body runs once."""
    from supervisor.native import ChordError, chord, group

    t = flow
    start_flow_worker(start_worker)

    cases = []

    def case(make, expected, how="option"):
        marks = tmp_path / f"marks-{len(cases)}"
        eb = t.record.si("chord", str(marks))
        workflow = make(marks)
        if how == "option":
            res = workflow.apply_async(link_error=eb)
        elif how == "method":
            workflow.link_error(eb)
            res = workflow.apply_async()
        else:
            res = workflow.apply_async()
        cases.append((res, marks, expected))

    def own(marks, label="own"):
        return t.record.si(label, str(marks))

    header = [t.add.si(1, 1), t.fail.si()]
    for how in ("option", "method"):
        def body_tasks(marks):
            first = t.xsum.s()
            first.link_error(own(marks))
            return chord(header, group(first, t.xsum.s()))

        case(body_tasks, ["chord", "chord", "own"], how)
        case(lambda marks: chord(header, group(chord([t.add.si(2, 2)], t.xsum.s()),
                                               t.xsum.s())), ["chord", "chord"], how)
    case(lambda marks: chord(header, group(t.xsum.s(), t.xsum.s())), ["chord", "chord"])
    case(lambda marks: chord(header, chord([t.xsum.s(), t.xsum.s()], t.xsum.s())),
         ["chord"])
    case(lambda marks: chord(header, group(t.xsum.s().set(link_error=own(marks)),
                                           t.xsum.s())), ["own"], how="none")
    # the header succeeds, a task of the group body fails: its own errback and the chord's
    case(lambda marks: chord([t.add.si(1, 1)], group(t.fail.s().on_error(own(marks)),
                                                     t.xsum.s())), ["chord", "own"])
    # a group body with its own link_error option: the chord's errback joins it, once each
    case(lambda marks: chord([t.add.si(1, 1)], group(t.fail.s(), t.xsum.s()).set(
        link_error=own(marks, "group"))), ["chord", "group"])
    case(lambda marks: chord([t.add.si(1, 1)], group(
        chord([t.add.si(1, 1)], group(t.fail.s(), t.xsum.s()))).set(
        link_error=own(marks, "group"))), ["chord", "group"])
    for res, _marks, _expected in cases:
        with pytest.raises((ValueError, ChordError)):
            res.get(timeout=30)
    wait_for(lambda: _queue_drained(db), 30, "every errback run")
    got = [_labels(marks) for _res, marks, _e in cases]
    assert got == [expected for _res, _marks, expected in cases]

    # link= given to a chord with a group body runs once; the body's tasks keep theirs
    marks = tmp_path / "links"
    first = t.xsum.s()
    first.link(own(marks))
    res = chord([t.add.si(1, 1), t.add.si(2, 2)], group(first, t.xsum.s())).apply_async(
        link=own(marks, "chord"))
    assert res.get(timeout=30) == [6, 6]
    wait_for(lambda: _queue_drained(db), 30, "the callbacks run")
    assert _labels(marks) == ["chord", "own"]


@pytest.mark.parametrize("allow", [True, False])
def test_allow_error_cb_on_chord_header_links_errbacks_to_the_header_tasks(
        flow, start_worker, tmp_path, db, monkeypatch, allow):
    """task_allow_error_cb_on_chord_header: on, chord.link_error(eb) (and a chain's errback
    on a chord it upgrades from group | task) runs for each header task that fails and for
    the body; off (the default), once, for the body. The body never runs."""
    from supervisor.native import chain, chord, group

    t = flow
    monkeypatch.setitem(t.app.conf, "task_allow_error_cb_on_chord_header", allow)
    start_flow_worker(start_worker)
    cases = []
    for upgraded in (False, True):
        marks = tmp_path / f"marks-{upgraded}"
        header = [t.fail.si(), t.identity.si(42), t.fail.si()]
        body = t.record.si("body", str(marks))
        workflow = chain(group(header), body) if upgraded else chord(header, body)
        workflow.link_error(t.record.si("eb", str(marks)))
        cases.append((workflow.delay(), marks))
    for res, _marks in cases:
        with pytest.raises(ValueError, match="expected failure"):
            res.get(timeout=30)
    wait_for(lambda: _queue_drained(db), 30, "every errback run")
    expected = ["eb"] * (3 if allow else 1)
    assert [_labels(marks) for _res, marks in cases] == [expected, expected]


def test_chain_of_implicit_chords_as_a_chord_body(flow, start_worker, tmp_path, db):
    """A chord body that is a chain of group | task steps (implicit chords): it runs through,
    apply_async(task_id=...) names its last result (as Celery names the body's), and when
    a chord inside it fails in its header, the chain's errback still runs."""
    from supervisor.native import ChordError, chain, chord, group

    t = flow
    start_flow_worker(start_worker)
    steps = [t.xsum.s()]
    for _ in range(3):
        steps += [group(t.add.s(1), t.add.s(2)), t.xsum.s()]
    callback = t.identity.s()
    callback_result = callback.freeze()
    steps[-1].link(callback)
    wanted = "chain-of-implicit-chords"
    res = chord([t.add.si(1, 1), t.add.si(2, 2)], chain(*steps)).apply_async(task_id=wanted)
    assert res.id == wanted
    # 6 -> 2x + 3 three times
    assert res.get(timeout=30) == 69 and callback_result.get(timeout=30) == 69

    marks = tmp_path / "failed"
    inner = chain(t.xsum.s(), group(t.add.s(1), t.add.s(2)), t.xsum.s())
    inner.link_error(t.record.si("failed", str(marks)))
    res = chord([t.add.si(1, 1)], chain(t.xsum.s(), chord(
        group(t.fail.si(), t.add.si(1, 2)), inner))).delay()
    with pytest.raises((ValueError, ChordError)):
        res.get(timeout=30)
    wait_for(lambda: _queue_drained(db), 30, "the errback run")
    assert _labels(marks) == ["failed"]


def test_frozen_chord_sent_again_runs_its_body_again(flow, start_worker, tmp_path):
    """As Celery: a frozen chord keeps its ids, and each apply_async is a new run, body
    included (its counter starts over, the body's finished row is queued again)."""
    from supervisor.native import chord, group

    t = flow
    start_flow_worker(start_worker)
    marks = tmp_path / "bodies"
    frozen = chord(group(t.add.s(1, 2), t.add.s(3, 4)), t.record.si("body", str(marks)))
    frozen.freeze()
    assert frozen.apply_async().get(timeout=30) == "body"
    wait_for(lambda: len(lines(marks)) == 1, 20, "the first run's body")
    second = frozen.apply_async()
    wait_for(lambda: len(lines(marks)) == 2, 20, "the second run's body")
    assert second.get(timeout=30) == "body"


def test_group_results_in_chain_and_replace_with_a_chain_ending_in_a_group(flow,
                                                                          start_worker):
    """group(a | group(b, c)) gives the inner group's results (Celery's special case), and
    a task replaced by a chain ending in a group gets that group's list as its result."""
    from supervisor.native import group

    t = flow
    start_flow_worker(start_worker)
    assert group(t.add.s(1, 2) | group(t.add.s(1), t.add.s(2)))().get(timeout=30) == [4, 5]
    assert t.replace_with_chain_group.delay().get(timeout=30) == [4, 4]


def test_countdown_on_group_or_task_delays_the_header_and_sets_request_eta(flow,
                                                                          start_worker):
    """(group | task).apply_async(countdown=...) delays the header tasks, which see when
    they were due in request.eta (an ISO time, as Celery); a task sent without one has
    none."""
    import time
    from datetime import datetime

    from supervisor.native import group

    t = flow
    start_flow_worker(start_worker)
    started = time.monotonic()
    sent = datetime.now().astimezone()
    res = (group(t.eta_seen.s(), t.eta_seen.s()) | t.identity.s()).apply_async(countdown=1.5)
    etas = res.get(timeout=30)
    assert time.monotonic() - started >= 1.4
    assert len(etas) == 2 and all(
        (datetime.fromisoformat(eta) - sent).total_seconds() >= 1.4 for eta in etas)
    assert t.eta_seen.apply_async(countdown=0.1).get(timeout=30) is not None
    assert t.eta_seen.delay().get(timeout=30) is None


def test_async_result_children_are_the_tasks_it_started(flow, start_worker, tmp_path):
    """AsyncResult.children, as Celery: None until the task is ready, then the tasks it
    started: the next chain step, its callbacks, the errbacks of a failure."""
    from supervisor.native import ChordError, chord

    t = flow
    assert t.add.s(1, 1).freeze().children is None  # not sent: not ready
    start_flow_worker(start_worker)
    marks = tmp_path / "marks"
    first = t.add.s(1, 1)
    first.link(t.record.s(str(marks)))
    res = (first | t.add.s(2)).delay()
    assert res.get(timeout=30) == 4
    wait_for(lambda: lines(marks), 20, "the callback")
    children = res.parent.children
    assert res.id in {c.id for c in children}
    assert sorted(c.name for c in children) == ["flowtasks.add", "flowtasks.record"]
    assert res.children == []
    # the body of a chord whose header failed: its errback is its child
    body = t.xsum.s().on_error(t.errback_old.s(str(marks)))
    failing = chord([t.fail.si()], body).delay()
    with pytest.raises((ValueError, ChordError)):
        failing.get(timeout=30)
    wait_for(lambda: failing.children, 20, "the errback as the body's child")
    assert [c.name for c in failing.children] == ["flowtasks.errback_old"]


def test_chord_copies_a_header_given_as_a_list(flow):
    """As Celery: chord([a, b], body) copies a and b, so what is linked to the chord's
    header tasks (chord.tasks) leaves the caller's signatures alone; a group header is the
    chord's own."""
    from supervisor.native import chord, group

    t = flow
    header = (t.fail.si(), t.identity.si(1))
    workflow = chord(header, t.xsum.s())
    for task in workflow.tasks:
        task.link_error(t.identity.si(2))
    assert header == (t.fail.si(), t.identity.si(1))
    assert workflow.tasks[0] != t.fail.si() and workflow.tasks[0].options["link_error"]
    members = group(t.identity.si(3))
    assert chord(members, t.xsum.s()).tasks[0] is members.tasks[0]
