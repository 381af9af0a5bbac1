"""The worker's guarantees, with real worker processes, real signals, real PostgreSQL."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from conftest import job_row, lines

from tests.conftest import wait_for


def test_delay_get_and_unknown_id(qapp, start_worker):
    start_worker("-c", "2")
    r = qapp.add.delay(2, 3)
    assert r.get(timeout=10) == 5
    assert (r.state, r.status, r.ready(), r.successful(), r.failed()) == (
        "SUCCESS", "SUCCESS", True, True, False)
    assert qapp.app.AsyncResult("no-such-id").state == "PENDING"


def test_priority_higher_first_then_eta_order(qapp, db, start_worker, tmp_path):
    marks = str(tmp_path / "order")
    # queued while no worker runs, so the worker sees them all at once
    for priority in (1, 9, 5):
        qapp.mark.apply_async(args=[f"p{priority}", marks], priority=priority)
    qapp.mark.apply_async(args=["eta-late", marks], eta=datetime.now(UTC) + timedelta(seconds=2))
    qapp.mark.apply_async(args=["eta-early", marks], countdown=1)
    start_worker("-c", "1")
    wait_for(lambda: len(lines(tmp_path / "order")) == 5, 20, "five marks")
    tags = [line.split()[0] for line in lines(tmp_path / "order")]
    assert tags == ["p9", "p5", "p1", "eta-early", "eta-late"]


def test_countdown_is_respected(qapp, db, start_worker, tmp_path):
    start_worker("-c", "1")
    sent = time.time()
    r = qapp.mark.apply_async(args=["later", str(tmp_path / "m")], countdown=1.5)
    time.sleep(0.3)
    state = r.state
    if time.time() - sent < 1.4:  # a stalled machine may be past the countdown already
        assert state == "PENDING"
    r.get(timeout=10)
    assert time.time() - sent >= 1.4


@pytest.mark.parametrize("queues", [["celery"], ["celery", "other"]])
def test_idle_worker_starts_a_delayed_job_when_due(qapp, db, start_worker, queues):
    """An idle worker learns when the next delayed job is due from its claim (store.CLAIM_DUE),
    with no poll to fall back on (30 s): the job must start at its countdown, not at a poll,
    and not before. Also with two queues (the claim's other form)."""
    start_worker("-c", "1", "-Q", ",".join(queues), env={"NATIVE_TEST_POLL": "30"})
    assert qapp.add.delay(1, 1).get(timeout=10) == 2  # idle now: its claims come back short
    sent = time.time()
    early = qapp.add.delay(2, 2)  # due now: claimed with the delayed job's due time asked
    later = qapp.add.apply_async(args=[3, 3], countdown=1.5)
    assert early.get(timeout=10) == 4
    assert later.get(timeout=10) == 6
    started = job_row(db, later.id)["started_at"].timestamp()
    assert 1.4 <= started - sent < 6  # a poll would have taken 30 s


def test_a_call_due_now_is_named_in_its_notification(qapp, db):
    """.delay() names its row in the NOTIFY (queue, \\x1f, row id): an idle worker claims that
    row by its primary key. A delayed call, or one with the caller's own id, names none."""
    db.execute("LISTEN start_all_jobs")
    now = qapp.add.delay(1, 1)
    later = qapp.add.apply_async((1, 2), countdown=30)
    own = qapp.add.apply_async((1, 3), task_id="callers-own-id")
    payloads = [n.payload for n in db.notifies(timeout=5, stop_after=3)]
    assert payloads == [f"celery\x1f{job_row(db, now.id)['id']}", "celery", "celery"]
    assert job_row(db, later.id)["status"] == job_row(db, own.id)["status"] == "PENDING"


def test_idle_worker_keeps_its_due_time_across_a_named_pickup(qapp, db, start_worker):
    """A job picked up by its row id (no due time asked) must not make the worker forget the
    delayed job it already knew of: with no poll to fall back on (30 s), that one still starts
    at its countdown."""
    # a long heartbeat: the worker's only statements during the test are its claims
    start_worker("-c", "1", env={"NATIVE_TEST_POLL": "30", "NATIVE_TEST_HEARTBEAT": "10",
                                 "NATIVE_TEST_LEASE": "30"})
    assert qapp.add.delay(1, 1).get(timeout=10) == 2

    def worker_idle() -> bool:  # its claim after that finish has returned too
        return db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'active'").fetchone()[0] == 0

    wait_for(worker_idle, 10, "the worker idle")
    sent = time.time()
    since = db.execute("SELECT now()").fetchone()[0]
    later = qapp.add.apply_async(args=[3, 3], countdown=1.5)

    def claimed_asking_when_due() -> bool:  # CLAIM_DUE's extra row: the next due time
        return db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'idle' AND state_change > %s "
            "AND query LIKE %s", (since, "%UNION ALL%")).fetchone()[0] > 0

    wait_for(claimed_asking_when_due, 10, "the worker's claim that learns when it is due")
    assert qapp.add.delay(2, 2).get(timeout=10) == 4  # named: claimed by id
    assert later.get(timeout=10) == 6
    started = job_row(db, later.id)["started_at"].timestamp()
    assert 1.4 <= started - sent < 6  # a poll would have taken 30 s


def test_notifications_naming_rows_not_waiting_change_nothing(qapp, db, start_worker, tmp_path):
    """A NOTIFY naming a row that is gone, finished, or not a number at all: the worker stays
    up, runs nothing twice, and still picks up what comes next."""
    marks = str(tmp_path / "m")
    worker = start_worker("-c", "2")
    done = qapp.mark.delay("first", marks)
    done.get(timeout=10)
    finished_id = job_row(db, done.id)["id"]
    for payload in (f"celery\x1f{finished_id}", "celery\x1f999999999", "celery\x1fnot-a-row",
                    "other\x1f1"):
        db.execute("SELECT pg_notify('start_all_jobs', %s)", (payload,))
    assert qapp.mark.delay("second", marks).get(timeout=10) == "second"
    assert [line.split()[0] for line in lines(tmp_path / "m")] == ["first", "second"]
    assert worker.proc.poll() is None


def test_two_idle_workers_race_for_named_rows_and_each_job_runs_once(qapp, db, start_worker,
                                                                       tmp_path):
    """Both idle workers are woken by every .delay() and both claim the named row: one gets
    it (FOR UPDATE SKIP LOCKED), the other nothing."""
    marks = tmp_path / "once"
    start_worker("-c", "2")
    start_worker("-c", "2")
    results = []
    for i in range(150):
        results.append(qapp.mark.delay(f"job{i}", str(marks)))
        time.sleep(0.002)  # mostly idle between sends: the named path, not the usual claim
    assert [r.get(timeout=20) for r in results] == [f"job{i}" for i in range(150)]
    counts = Counter(line.split()[0] for line in lines(marks))
    assert len(counts) == 150 and set(counts.values()) == {1}
    assert len({line.split()[1] for line in lines(marks)}) == 2, "both workers took jobs"


def test_named_queues(qapp, db, start_worker, tmp_path):
    start_worker("-c", "1", "-Q", "slow")
    fast = qapp.add.apply_async(args=[1, 1])  # default queue "celery": nobody listens
    slow = qapp.add.apply_async(args=[2, 2], queue="slow")
    assert slow.get(timeout=10) == 4
    assert fast.state == "PENDING" and job_row(db, fast.id)["status"] == "PENDING"


def test_two_workers_never_run_the_same_job(qapp, db, start_worker, tmp_path):
    marks = tmp_path / "once"
    start_worker("-c", "4")
    start_worker("-c", "4")
    from supervisor.native import group

    group(qapp.mark.s(f"job{i}", str(marks)) for i in range(400)).apply_async()
    wait_for(lambda: len(lines(marks)) >= 400, 60, "400 jobs")
    wait_for(lambda: db.execute(
        "SELECT count(*) FROM start_all.jobs WHERE status = 'SUCCESS'").fetchone()[0] == 400,
        20, "400 successes")
    counts = Counter(line.split()[0] for line in lines(marks))
    assert len(counts) == 400 and set(counts.values()) == {1}
    assert len({line.split()[1] for line in lines(marks)}) == 2, "both workers took jobs"


def test_a_plain_group_stores_what_its_members_sent_one_by_one_would(qapp, db, monkeypatch):
    """A group of one task's plain calls is sent as one batch (store.ENQUEUE_BATCH): each
    row holds what apply_async() of that call stores (route, priority, expiry, arguments,
    ignore_result), plus the group's id; the ids are UUIDs of their own."""
    import uuid

    from supervisor.native import group

    monkeypatch.setattr(qapp.routed_add, "priority", 7, raising=False)
    monkeypatch.setattr(qapp.routed_add, "expires", 60, raising=False)
    monkeypatch.setattr(qapp.routed_add, "ignore_result", True, raising=False)
    calls = [((1, 2), {}), ((3,), {"y": 4}), ((), {"x": "a", "y": "b"})]
    single = [qapp.routed_add.apply_async(args, kwargs).id for args, kwargs in calls]
    grouped = group(qapp.routed_add.s(*args, **kwargs) for args, kwargs in calls).apply_async()
    assert [r.id for r in grouped.results] != single
    fields = ("name", "queue", "priority", "args", "kwargs", "ignore_result", "retries",
              "status")
    for one, member in zip(single, grouped.results, strict=True):
        a, b = job_row(db, one), job_row(db, member.id)
        assert [a[f] for f in fields] == [b[f] for f in fields]
        assert b["queue"] == "routed" and b["priority"] == 7 and b["ignore_result"]
        assert b["options"] == {"group_id": grouped.id}
        assert abs((a["expires_at"] - b["expires_at"]).total_seconds()) < 30
        assert uuid.UUID(member.id).version == 4 and str(uuid.UUID(member.id)) == member.id
    assert len({r.id for r in grouped.results}) == 3
    empty = group(qapp.add.s() for _ in range(2)).apply_async()  # no arguments at all
    assert [(job_row(db, r.id)["args"], job_row(db, r.id)["kwargs"]) for r in empty.results] \
        == [([], {}), ([], {})]


def test_a_batch_sent_again_after_a_lost_answer_changes_nothing(qapp, db):
    """A second attempt of a batch (its first answer was lost: it may have committed) and a
    batch run at a Django commit keep the rows already there, raising nothing."""
    from supervisor.native import store
    from supervisor.native.job import JobBatch, new_ids

    template = qapp.add.build_job(task_id="")
    batch = JobBatch(template, new_ids(3), ["[1, 2]", "[3, 4]", "[5, 6]"], None)
    params = store.batch_params(batch)
    db.execute(store.ENQUEUE_BATCH, params)
    db.execute("UPDATE start_all.jobs SET status = 'SUCCESS' WHERE task_id = %s",
               (batch.task_ids[0],))
    db.execute(store.ENQUEUE_BATCH_AGAIN, params)
    rows = db.execute("SELECT task_id, status, args FROM start_all.jobs ORDER BY id").fetchall()
    assert rows == [(batch.task_ids[0], "SUCCESS", [1, 2]), (batch.task_ids[1], "PENDING", [3, 4]),
                    (batch.task_ids[2], "PENDING", [5, 6])]


def test_the_plain_finishes_write_what_finish_writes_and_stay_fenced(qapp, db):
    """FINISH_SAME (one claim, one outcome for all) and FINISH_PLAIN (mixed outcomes) write
    what FINISH does, and only under the claim's lease token."""
    import uuid

    from supervisor.native import group, store

    group(qapp.add.s(i, i) for i in range(6)).apply_async()
    token, stale = uuid.uuid4(), uuid.uuid4()
    rows = db.execute(store.CLAIM_ONE, {"queue": "celery", "limit": 6, "token": token,
                                        "worker": "t", "lease": 60}).fetchall()
    ids = sorted(r[0] for r in rows)
    same = [(i, token, "SUCCESS", "null", None, 0.0, None, None, False) for i in ids[:3]]
    mixed = [(ids[3], token, "SUCCESS", '{"a": [1, "x,y"]}', None, 0.0, None, None, False),
             (ids[4], token, "FAILURE", '{"exc_type": "E"}', "Traceback, with a comma\n", 0.0,
              None, None, False),
             (ids[5], token, "REVOKED", '"r"', None, 0.0, None, None, False)]
    for batch, kind in ((same, store.SameFinish), (mixed, store.PlainFinish)):
        params = store.PgWorkerDb.finish_params(batch, plain=True)
        assert type(params) is kind
        stale_params = store.PgWorkerDb.finish_params(
            [(i, stale, *rest) for i, _t, *rest in batch], plain=True)
        assert db.execute(stale_params.statement, stale_params).fetchone()[0] == 0
        assert db.execute(params.statement, params).fetchone()[0] == 3
    got = db.execute("SELECT status, result, traceback, lease_token, finished_at IS NOT NULL "
                     "FROM start_all.jobs WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall()
    assert [g[0] for g in got] == ["SUCCESS"] * 4 + ["FAILURE", "REVOKED"]
    assert [g[1] for g in got] == [None, None, None, {"a": [1, "x,y"]}, {"exc_type": "E"}, "r"]
    assert [g[2] for g in got] == [None] * 4 + ["Traceback, with a comma\n", None]
    assert all(g[3] is None and g[4] for g in got)
    # a batch that retries, forgets or has no result text takes FINISH
    for odd in [(ids[0], token, "RETRY", "{}", None, 1.0, None, None, False),
                (ids[0], token, "SUCCESS", "null", None, 0.0, None, None, True),
                (ids[0], token, "FAILURE", None, None, 0.0, None, None, False)]:
        assert store.PgWorkerDb.finish_params([odd], plain=True).statement == store.FINISH


def test_revoke_pending_and_running(qapp, db, start_worker, tmp_path):
    marks = tmp_path / "rv"
    pending = qapp.mark.apply_async(args=["never", str(marks)], countdown=1)
    pending.revoke()
    assert pending.state == "REVOKED"
    start_worker("-c", "1")
    running = qapp.hold.delay("long", str(marks), 30)
    wait_for(lambda: any(line.startswith("start long") for line in lines(marks)), 10, "start")
    running.revoke(terminate=True)
    wait_for(lambda: running.state == "REVOKED", 10, "REVOKED")
    from supervisor.native import TaskRevokedError

    with pytest.raises(TaskRevokedError):
        running.get(timeout=1)
    time.sleep(1.2)  # past the revoked job's countdown: it must not have run
    assert not any("never" in line for line in lines(marks))
    assert not any(line.startswith("end long") for line in lines(marks))


def test_sigkill_mid_task_reruns_after_lease_and_old_owner_is_fenced(qapp, db, start_worker,
                                                                      tmp_path):
    marks = tmp_path / "k"
    first = start_worker("-c", "1")
    r = qapp.hold.delay("job", str(marks), 0.5)
    wait_for(lambda: any(line.startswith("start") for line in lines(marks)), 10, "start")
    stale_token = job_row(db, r.id)["lease_token"]
    first.signal(signal.SIGKILL)
    first.wait(5)
    start_worker("-c", "1")
    assert r.get(timeout=20) == "job"
    row = job_row(db, r.id)
    # requeued uncounted (no durable start mark yet: see test_durability.py), then run again
    assert (row["recoveries"], row["orphaned"], row["status"]) == (0, 1, "SUCCESS")
    ends = [line for line in lines(marks) if line.startswith("end")]
    assert len(ends) == 1, "finished exactly once"
    # the killed worker's finish, replayed now with its old lease token, must not land
    from supervisor.native import store

    written = db.execute(store.FINISH, store.PgWorkerDb.finish_params(
        [(row["id"], stale_token, "FAILURE", None, None, 0.0, None, None, False)])).fetchone()[0]
    assert written == 0 and job_row(db, r.id)["status"] == "SUCCESS"


def test_poison_pill_fails_after_k_recoveries(qapp, db, start_worker):
    r = qapp.die.delay()
    # each worker dies on the job; the reaper of the next one requeues it. The first death is
    # not counted (the job ran without a durable start mark, like jobs merely fetched); from
    # then on it runs with one, and each death counts
    for _ in range(4):
        worker = start_worker("-c", "1", env={"NATIVE_TEST_MAX_RECOVERIES": "2"}, ready=False)
        worker.wait(30)
        if job_row(db, r.id)["status"] == "FAILURE":
            break
    reaper = start_worker("-c", "1", "-Q", "elsewhere", env={"NATIVE_TEST_MAX_RECOVERIES": "2"})
    wait_for(lambda: r.state == "FAILURE", 20, "poison pill given up")
    from supervisor.native import WorkerLostError

    with pytest.raises(WorkerLostError, match="poison pill"):
        r.get(timeout=1)
    row = job_row(db, r.id)
    assert (row["recoveries"], row["orphaned"]) == (3, 1)
    reaper.signal(signal.SIGTERM)
    assert reaper.wait(10) == 0


def test_sigterm_finishes_running_and_returns_prefetched(qapp, db, start_worker, tmp_path):
    marks = tmp_path / "t"
    worker = start_worker("-c", "1", "--stop-timeout", "10")
    running = qapp.hold.delay("running", str(marks), 1.0)
    wait_for(lambda: any("start running" in line for line in lines(marks)), 10, "start")
    queued = [qapp.mark.delay(f"q{i}", str(marks)) for i in range(3)]
    wait_for(lambda: any(job_row(db, r.id)["status"] == "RESERVED" for r in queued), 10,
             "prefetched")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert running.get(timeout=1) == "running", "the running task was finished"
    assert all(job_row(db, r.id)["status"] == "PENDING" for r in queued), "returned, unstarted"
    assert "stopped cleanly" in worker.output
    assert db.execute("SELECT count(*) FROM start_all.workers").fetchone()[0] == 0
    start_worker("-c", "2")
    assert [r.get(timeout=10) for r in queued] == ["q0", "q1", "q2"]


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGQUIT])
def test_second_signal_aborts_and_requeues(qapp, db, start_worker, tmp_path, second):
    marks = tmp_path / "a"
    worker = start_worker("-c", "1", "--stop-timeout", "30")
    r = qapp.hold.delay("long", str(marks), 30)
    wait_for(lambda: any("start long" in line for line in lines(marks)), 10, "start")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in worker.output, 10, "stopping")
    worker.signal(second)
    assert worker.wait(10) == 0
    assert "aborting" in worker.output
    row = job_row(db, r.id)
    assert row["status"] == "PENDING" and row["lease_token"] is None, "requeued, not lost"


def test_stop_budget_spent_requeues(qapp, db, start_worker, tmp_path):
    marks = tmp_path / "b"
    worker = start_worker("-c", "1", "--stop-timeout", "0.5")
    r = qapp.hold.delay("long", str(marks), 30)
    wait_for(lambda: any("start long" in line for line in lines(marks)), 10, "start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert "stop budget spent" in worker.output
    assert job_row(db, r.id)["status"] == "PENDING"


def test_poll_only_mode(qapp, db, start_worker, tmp_path):
    worker = start_worker("-c", "1", "--poll-only", env={"NATIVE_TEST_POLL": "0.2"})
    assert "poll-only" in worker.output
    assert qapp.add.delay(20, 22).get(timeout=10) == 42
    assert db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' "
        "AND datname = current_database()").fetchone()[0] == 0


def test_heartbeat_file_and_row(qapp, db, start_worker, tmp_path):
    beat = tmp_path / "heartbeat"
    worker = start_worker("-c", "1", env={"START_ALL_HEARTBEAT_FILE": str(beat)})
    wait_for(beat.exists, 10, "heartbeat file")
    first = beat.stat().st_mtime
    wait_for(lambda: beat.stat().st_mtime > first, 10, "heartbeat file touched again")
    row = db.execute("SELECT pid, queues, concurrency FROM start_all.workers").fetchone()
    assert row == (worker.proc.pid, ["celery"], 1)


def test_time_limits(qapp, db, start_worker, tmp_path):
    start_worker("-c", "1")
    assert qapp.soft_limited.delay(str(tmp_path / "s")).get(timeout=10) == "cleaned up"
    assert lines(tmp_path / "s") == ["soft limit caught"]
    r = qapp.hard_limited.delay()
    from supervisor.native import TimeLimitExceeded

    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=10)
    assert qapp.add.delay(1, 2).get(timeout=10) == 3, "the worker still has its thread"


def test_retry_countdown_stored_and_max_retries(qapp, db, start_worker, tmp_path):
    start_worker("-c", "1")
    path = tmp_path / "r"
    r = qapp.retry_later.delay(str(path))
    wait_for(lambda: r.state == "RETRY", 10, "RETRY")
    row = job_row(db, r.id)
    wait_s = (row["run_at"] - datetime.now(UTC)).total_seconds()
    assert 25 < wait_s <= 30 and row["retries"] == 1
    assert isinstance(r.result, OSError)
    for _ in range(2):  # fast-forward the countdowns instead of waiting for them
        db.execute("UPDATE start_all.jobs SET run_at = now() WHERE task_id = %s", (r.id,))
        db.execute("SELECT pg_notify('start_all_jobs', 'celery')")
        retries = job_row(db, r.id)["retries"]
        wait_for(lambda n=retries: job_row(db, r.id)["retries"] > n
                 or r.state == "FAILURE", 10, "next attempt")
    with pytest.raises(OSError, match="flaky"):
        r.get(timeout=10)
    assert lines(path) == ["attempt 0", "attempt 1", "attempt 2"], "max_retries=2: 3 attempts"


def test_retry_backoff_with_full_jitter_bounds(qapp, db, start_worker, tmp_path):
    start_worker("-c", "1")
    path = tmp_path / "bo"
    r = qapp.backoff.delay(str(path))
    delays: dict[int, float] = {}

    def step():
        row = job_row(db, r.id)
        if row["status"] == "FAILURE":
            return True
        if row["status"] == "RETRY" and row["retries"] not in delays:
            # countdown chosen by the task = next run time - when this attempt was claimed
            delays[row["retries"]] = (row["run_at"] - row["started_at"]).total_seconds()
            db.execute("UPDATE start_all.jobs SET run_at = now() WHERE task_id = %s", (r.id,))
            db.execute("SELECT pg_notify('start_all_jobs', 'celery')")
        return False

    wait_for(step, 30, "all attempts")
    with pytest.raises(OSError, match="still down"):
        r.get(timeout=1)
    assert len(lines(path)) == 5, "max_retries=4: 5 attempts"
    assert delays, "saw at least one stored retry"
    for retries, delay in delays.items():
        cap = min(5, 2 * 2 ** (retries - 1))  # retry_backoff=2, retry_backoff_max=5
        assert -0.05 <= delay <= cap + 0.5, (retries, delay, cap)


def test_cron_slot_fires_once_with_two_schedulers(qapp, db, start_worker, tmp_path):
    env = {"NATIVE_TEST_BEAT": "1"}
    start_worker("-c", "1", env=env)
    start_worker("-c", "1", env=env)
    wait_for(lambda: db.execute("SELECT count(*) FROM start_all.cron_slots").fetchone()[0] >= 3,
             15, "three slots")
    slots = db.execute("SELECT name, slot, task_id FROM start_all.cron_slots").fetchall()
    assert len({s[1] for s in slots}) == len(slots), "one row per slot"
    wait_for(lambda: len(lines(tmp_path / "marks")) >= 3, 15, "beat tasks ran")
    fired = db.execute(
        "SELECT count(*) FROM start_all.jobs WHERE name = 'qtasks.mark'").fetchone()[0]
    assert fired == db.execute("SELECT count(*) FROM start_all.cron_slots").fetchone()[0]


def test_retention_prunes_old_rows(qapp, db, start_worker):
    ok = qapp.add.delay(1, 1)
    ok_old = qapp.add.delay(2, 2)
    bad_old = qapp.add.apply_async(args=[1, None], countdown=0)  # TypeError in the task
    bad_older = qapp.add.apply_async(args=[2, None])
    first = start_worker("-c", "1")
    for r in (ok, ok_old, bad_old, bad_older):
        r.get(timeout=10, propagate=False)
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0
    db.execute("UPDATE start_all.jobs SET finished_at = now() - interval '2 days' "
               "WHERE task_id = ANY(%s)", ([ok_old.id, bad_old.id],))
    db.execute("UPDATE start_all.jobs SET finished_at = now() - interval '8 days' "
               "WHERE task_id = %s", (bad_older.id,))
    second = start_worker("-c", "1")  # prunes when it starts, then every native_prune_interval
    state = qapp.app.AsyncResult
    wait_for(lambda: state(ok_old.id).state == "PENDING", 30, "old success pruned")
    wait_for(lambda: state(bad_older.id).state == "PENDING", 30, "8-day-old failure pruned")
    assert state(ok.id).state == "SUCCESS", "a fresh success stays (1 day)"
    assert state(bad_old.id).state == "FAILURE", "a 2-day-old failure stays (7 days)"
    # the log line follows the DELETE's commit: wait for it rather than read it at once
    wait_for(lambda: "retention pruned 1 succeeded and 1 failed" in second.output, 30,
             "the prune in the worker's log")


def test_task_routes_send_to_their_queue(qapp, db, start_worker):
    r = qapp.routed_add.delay(1, 2)
    assert job_row(db, r.id)["queue"] == "routed"
    start_worker("-c", "1", "-Q", "routed")
    assert r.get(timeout=10) == 3


def test_survives_losing_its_database_connections(qapp, db, start_worker):
    worker = start_worker("-c", "1")
    assert qapp.add.delay(1, 1).get(timeout=10) == 2
    killed = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND application_name = '' AND backend_type = 'client backend'").fetchone()[0]
    assert killed >= 2, "the worker's loop and LISTEN connections were cut"
    qapp.app.close()  # our producer connection was cut too; reconnect is automatic anyway
    r = qapp.add.delay(2, 2)
    assert r.get(timeout=30) == 4, worker.output
    assert "reachable again" in worker.output


def test_recycles_after_max_tasks_per_child(qapp, db, start_worker):
    worker = start_worker("-c", "1", env={"NATIVE_TEST_MAX_TASKS": "3"})
    results = [qapp.add.delay(i, i) for i in range(5)]
    assert worker.wait(30) == 0, "exits cleanly so the supervisor starts a fresh one"
    assert "recycling" in worker.output
    done = [r for r in results if r.state == "SUCCESS"]
    assert len(done) >= 3
    assert all(job_row(db, r.id)["status"] in ("SUCCESS", "PENDING") for r in results)


def test_forked_child_gets_its_own_connection(qapp, db):
    import os

    qapp.add.delay(0, 0)  # the parent's connection is open now
    pid = os.fork()
    if pid == 0:
        try:
            qapp.add.delay(1, 0)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    qapp.add.delay(2, 0)  # still usable here: the child did not close our session
    assert db.execute("SELECT count(*) FROM start_all.jobs").fetchone()[0] == 3


def test_bad_input_is_one_line_and_exit_2(db, start_worker, tmp_path):
    worker = start_worker(app="no_such_module:app", ready=False)
    assert worker.wait(20) == 2
    assert worker.output.strip().splitlines() == [
        "native: -A no_such_module:app: cannot import no_such_module "
        "(No module named 'no_such_module')"]
    worker = start_worker("-c", "many", ready=False)
    assert worker.wait(20) == 2 and "invalid int value: 'many'" in worker.output
    worker = start_worker(env={"START_ALL_WORKER_CONCURRENCY": "lots"}, ready=False)
    assert worker.wait(20) == 2
    assert worker.output.strip() == "native: START_ALL_WORKER_CONCURRENCY='lots' is not a number"


def test_concurrent_migrations_apply_once(db, pg_url):
    """Four processes migrate an empty database at once: the advisory lock lets one apply the
    schema; the others wait, then find nothing to apply."""
    import os
    import subprocess
    import sys

    from conftest import APPS

    from tests.conftest import ROOT

    db.execute("DROP SCHEMA start_all CASCADE")
    env = {**os.environ, "NATIVE_TEST_DB_URL": pg_url, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}"}
    argv = [sys.executable, "-m", "supervisor.native", "migrate", "-A", "qtasks:app"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outcomes = [(p.wait(60), p.stdout.read().strip(), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _, _ in outcomes), outcomes
    said = sorted(out for _, out, _ in outcomes)
    versions = sorted(f.stem for f in (ROOT / "supervisor/native/sql").glob("*.sql"))
    assert said == [f"native: schema up to date ({', '.join(versions)})"] + [
        "native: schema up to date (nothing to apply)"] * 3


def test_frozen_worker_wakes_reconnects_and_finishes_its_task_once(qapp, db, start_worker,
                                                                   tmp_path):
    """SIGSTOP freezes the worker as a sleeping instance does (no signal it could handle), for
    longer than its 2 s lease; after SIGCONT it sees the clock jump, opens fresh connections,
    renews its lease before reaping, and the frozen task is recorded once."""
    marks = tmp_path / "frozen"
    worker = start_worker("-c", "1")

    def listeners() -> set[int]:
        return {row[0] for row in db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'LISTEN%'")}

    before = wait_for(listeners, 10, "the worker's LISTEN connection")
    r = qapp.hold.delay("frozen", str(marks), 1.0)
    wait_for(lambda: any(line.startswith("start") for line in lines(marks)), 10, "start")
    worker.signal(signal.SIGSTOP)
    time.sleep(8)  # the freeze itself: longer than the lease and the 5 s wake threshold
    worker.signal(signal.SIGCONT)
    assert r.get(timeout=20) == "frozen"
    assert "frozen (clock jump): reconnecting and renewing 1 lease(s)" in worker.output
    row = job_row(db, r.id)
    assert row["status"] == "SUCCESS" and row["recoveries"] == 0  # not reaped: renewed first
    assert len([line for line in lines(marks) if line.startswith("end")]) == 1
    after = wait_for(lambda: (pids := listeners()) and pids.isdisjoint(before) and pids, 10,
                     "a fresh LISTEN connection")
    assert len(after) == 1
    assert qapp.add.delay(2, 3).get(timeout=10) == 5  # and it keeps working
