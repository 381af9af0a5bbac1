"""What a SIGKILLed worker leaves behind (real processes, real PostgreSQL): results already
written are never run again, jobs it had only fetched go back without counting a recovery,
and a recovery is counted only for an execution whose start was durable (so that a task that
kills its worker is still given up as a poison pill, see test_worker.py)."""

from __future__ import annotations

import signal
from collections import Counter

from conftest import job_row, lines

from tests.conftest import wait_for


def starts(path) -> Counter:
    return Counter(line.split()[1] for line in lines(path) if line.startswith("start"))


def ended(path) -> set[str]:
    return {line.split()[1] for line in lines(path) if line.startswith("end")}


def test_sigkill_reruns_only_what_was_executing(qapp, db, start_worker, tmp_path):
    marks, quick_marks = tmp_path / "long", tmp_path / "quick"
    # c=1, by priority: five quick ones run and are written, then the long one runs while the
    # last six wait (some fetched by the worker, some still in the queue)
    done = [qapp.mark.apply_async((f"d{i}", str(quick_marks)), priority=9) for i in range(5)]
    long = qapp.hold.apply_async(("long", str(marks), 2.0), priority=5)
    quick = [qapp.mark.delay(f"q{i}", str(quick_marks)) for i in range(6)]
    worker = start_worker("-c", "1")
    wait_for(lambda: starts(marks)["long"] == 1, 20, "the long task started")
    wait_for(lambda: all(job_row(db, r.id)["status"] == "SUCCESS" for r in done), 20,
             "the quick ones before it written")
    fetched = [r for r in quick if job_row(db, r.id)["status"] == "RESERVED"]
    worker.signal(signal.SIGKILL)
    worker.wait(5)
    second = start_worker("-c", "2")
    assert long.get(timeout=30) == "long"
    assert [r.get(timeout=20) for r in quick] == [f"q{i}" for i in range(6)]
    ran = Counter(line.split()[0] for line in lines(quick_marks))
    assert all(ran[f"d{i}"] == 1 for i in range(5)), f"written results ran again: {ran}"
    assert all(ran[f"q{i}"] == 1 for i in range(6)), f"a fetched task ran twice: {ran}"
    assert starts(marks)["long"] == 2, "the task cut off by the kill ran again"
    for r in [*done, *quick]:
        row = job_row(db, r.id)
        assert row["recoveries"] == 0, f"{row['task_id']} was not running at the kill"
    assert fetched, "some jobs were fetched but not started at the kill"
    assert all(job_row(db, r.id)["orphaned"] == 1 for r in fetched)
    row = job_row(db, long.id)
    # it ran without a durable start mark: back uncounted, marked orphaned (it then ran with
    # one: the next test shows a second death on it counts)
    assert (row["recoveries"], row["orphaned"], row["attempt_started"]) == (0, 1, False)
    second.signal(signal.SIGTERM)
    assert second.wait(20) == 0


def test_a_job_that_ran_at_a_kill_runs_next_with_a_start_mark(qapp, db, start_worker, tmp_path):
    marks = tmp_path / "m"
    r = qapp.hold.delay("job", str(marks), 30.0)
    first = start_worker("-c", "1")
    wait_for(lambda: starts(marks)["job"] == 1, 20, "started")
    first.signal(signal.SIGKILL)
    first.wait(5)
    second = start_worker("-c", "2")
    wait_for(lambda: starts(marks)["job"] == 2, 20, "started again after the lease")
    row = job_row(db, r.id)
    assert (row["orphaned"], row["attempt_started"]) == (1, True), "durable start mark"
    second.signal(signal.SIGKILL)
    second.wait(5)
    reaper = start_worker("-c", "1", "-Q", "elsewhere")
    wait_for(lambda: job_row(db, r.id)["status"] == "PENDING", 20, "reaped")
    row = job_row(db, r.id)
    assert (row["recoveries"], row["orphaned"], row["attempt_started"]) == (1, 1, False)
    reaper.signal(signal.SIGTERM)
    assert reaper.wait(20) == 0


def test_a_result_is_not_held_back_behind_the_heartbeat(qapp, db, pg_url, start_worker,
                                                        tmp_path):
    """A task that ends while the heartbeat's statements hold the loop must be written before
    the next of them: a result left unwritten makes its task run again after a SIGKILL. The
    heartbeat is held for real, with row locks: the renew waits on the long job's row, the
    worker-row upsert after it on the worker's row."""
    import psycopg

    marks = tmp_path / "m"
    worker = start_worker("-c", "2")
    long = qapp.hold.delay("long", str(marks), 60.0)
    short = qapp.hold.delay("short", str(marks), 3.0)
    wait_for(lambda: {"long", "short"} <= set(starts(marks)), 20, "both started")
    jobs_lock = psycopg.connect(pg_url)
    worker_lock = psycopg.connect(pg_url)
    try:
        # both rows must exist, or nothing would wait and the test would prove nothing
        assert worker_lock.execute("SELECT 1 FROM start_all.workers WHERE pid = %s FOR UPDATE",
                                   (worker.proc.pid,)).fetchone()
        assert jobs_lock.execute("SELECT 1 FROM start_all.jobs WHERE task_id = %s FOR UPDATE",
                                 (long.id,)).fetchone()

        def renew_waits() -> bool:
            return db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%%SET lease_until = now()%%'"
            ).fetchone()[0] == 1

        wait_for(renew_waits, 10, "the heartbeat's renew waiting on the long job's row")
        assert not ended(marks), "precondition: the short task ended before the renew"
        wait_for(lambda: ended(marks) == {"short"}, 10, "the short task's end")
        assert job_row(db, short.id)["status"] == "RESERVED"  # its result waits for the loop
        jobs_lock.rollback()  # the renew goes through; the worker-row upsert now waits
        wait_for(lambda: job_row(db, short.id)["status"] == "SUCCESS", 10,
                 "the short result written while the heartbeat still waits")
        assert job_row(db, long.id)["status"] == "RESERVED"
    finally:
        jobs_lock.close()
        worker_lock.close()
    assert short.get(timeout=10) == "short"
    assert starts(marks) == Counter({"long": 1, "short": 1})
