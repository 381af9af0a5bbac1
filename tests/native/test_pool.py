"""--pool prefork beside the thread pool: time limits, terminate, parallel CPU, stopping.

Real worker processes on a real PostgreSQL database; tasks in apps/pooltasks.py leave their
traces in files, so a killed process cannot hide what it did.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest
from conftest import APPS, job_row, lines

from tests.conftest import ROOT, VENV_ENV, pids_alive, wait_for


@pytest.fixture
def ptasks(db, pg_url):
    sys.path.insert(0, str(APPS))
    import pooltasks

    pooltasks.app.close()
    pooltasks.app.conf.broker_url = pg_url
    yield pooltasks
    pooltasks.app.close()


def start_pool(start_worker, *args: str, env: dict | None = None):
    return start_worker(*args, app="pooltasks:app", env=env)


def _started_pid(path) -> int:
    wait_for(lambda: any(line.startswith("start") for line in lines(path)), 15, "task start")
    return int(next(line for line in lines(path) if line.startswith("start")).split()[-1])


def test_prefork_hard_limit_kills_a_task_blocked_in_c(ptasks, start_worker, tmp_path):
    from supervisor.native import TimeLimitExceeded

    worker = start_pool(start_worker, "-P", "prefork", "-c", "1")
    path = tmp_path / "c"
    r = ptasks.blocked_in_c.delay(str(path))  # libc sleep(30) with time_limit=1
    child = _started_pid(path)
    assert child != worker.proc.pid, "the task runs in a child process"
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=15)
    assert "end" not in lines(path)
    wait_for(lambda: not pids_alive([child]), 5, "the child killed")
    fresh = ptasks.pid.delay().get(timeout=15)  # a replacement child took the slot
    assert fresh not in (child, worker.proc.pid)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_soft_limit_interrupts_time_sleep(ptasks, start_worker, tmp_path, pool):
    start_pool(start_worker, "-P", pool, "-c", "1")
    path = tmp_path / "s"
    elapsed = ptasks.soft_sleep.delay(str(path)).get(timeout=25)  # soft limit 1 s, sleep(30)
    assert isinstance(elapsed, float), elapsed
    assert 0.5 <= elapsed < 20, "SoftTimeLimitExceeded raised inside time.sleep(30)"
    assert lines(path)[0].startswith("soft ")


def test_prefork_revoke_terminate_kills_the_running_task(ptasks, db, start_worker, tmp_path):
    from supervisor.native import TaskRevokedError

    start_pool(start_worker, "-P", "prefork", "-c", "1")
    path = tmp_path / "t"
    r = ptasks.sleep_in_c.delay(str(path), 30)
    child = _started_pid(path)
    r.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=15)
    assert job_row(db, r.id)["status"] == "REVOKED"
    wait_for(lambda: not pids_alive([child]), 5, "the child killed")
    assert "end" not in lines(path)
    assert ptasks.add.delay(2, 3).get(timeout=15) == 5


def test_threads_revoke_terminate_cuts_a_sleep_short(ptasks, db, start_worker, tmp_path):
    from supervisor.native import TaskRevokedError

    start_pool(start_worker, "-P", "threads", "-c", "1")
    path = tmp_path / "t"
    r = ptasks.hold.delay(str(path), "long", 30)  # one time.sleep(30)
    _started_pid(path)
    r.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=15)
    assert not any(line.startswith("end") for line in lines(path))


def test_prefork_runs_cpu_bound_tasks_in_separate_processes_at_once(ptasks, start_worker,
                                                                    tmp_path):
    worker = start_pool(start_worker, "-P", "prefork", "-c", "2")
    path = tmp_path / "cpu"
    results = [ptasks.spin.delay(str(path), 1.5) for _ in range(2)]
    for r in results:
        assert r.get(timeout=30) > 0
    spans = [line.split() for line in lines(path)]
    pids = {int(s[0]) for s in spans}
    assert len(pids) == 2 and worker.proc.pid not in pids
    (a0, a1), (b0, b1) = [(float(s[1]), float(s[2])) for s in spans]
    assert max(a0, b0) < min(a1, b1), "the two CPU-bound tasks overlapped in time"


def test_prefork_child_recycled_after_max_tasks(ptasks, start_worker):
    worker = start_pool(start_worker, "-P", "prefork", "-c", "1",
                        env={"POOL_TEST_MAX_TASKS": "2"})
    pids = [ptasks.pid.delay().get(timeout=15) for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3], pids
    assert worker.proc.poll() is None, "the worker itself keeps running"


def test_prefork_child_recycled_above_max_memory(ptasks, start_worker):
    worker = start_pool(start_worker, "-P", "prefork", "-c", "1",
                        env={"POOL_TEST_MAX_MEMORY": "1000"})  # 1 MB: every child is above
    pids = [ptasks.pid.delay().get(timeout=15) for _ in range(3)]
    assert len(set(pids)) == 3, pids
    assert worker.proc.poll() is None, "the worker itself keeps running"


def test_prefork_sigquit_requeues_and_kills_children(ptasks, db, start_worker, tmp_path):
    worker = start_pool(start_worker, "-P", "prefork", "-c", "1")
    path = tmp_path / "q"
    r = ptasks.hold.delay(str(path), "long", 30)
    child = _started_pid(path)
    worker.signal(signal.SIGQUIT)
    assert worker.wait(15) == 0
    assert not pids_alive([child]), "no orphaned child"
    assert job_row(db, r.id)["status"] == "PENDING", "handed back, not lost"


def test_prefork_children_die_with_a_sigkilled_worker(ptasks, start_worker, tmp_path):
    worker = start_pool(start_worker, "-P", "prefork", "-c", "1")
    path = tmp_path / "k"
    ptasks.hold.delay(str(path), "long", 30)
    child = _started_pid(path)
    worker.proc.kill()
    worker.wait(10)
    wait_for(lambda: not pids_alive([child]), 5, "the child followed its parent")


def test_prefork_under_the_supervisor_sigterm_finishes_and_returns(ptasks, db, pg_url,
                                                                  run_supervisor, tmp_path):
    marks = tmp_path / "sup"
    procfile = (f"worker: {sys.executable} -m supervisor.native worker -A pooltasks:app "
                "-P prefork -c 2\n")
    env = {**VENV_ENV, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}", "NATIVE_TEST_DB_URL": pg_url,
           "START_ALL_STOP_TIMEOUT": "20"}
    sup = run_supervisor(procfile, env=env, pid1=False)  # pids as this test sees them
    sup.wait_line(r"ready:", timeout=30)
    running = [ptasks.hold.delay(str(marks), f"r{i}", 1.5) for i in range(2)]
    wait_for(lambda: sum(line.startswith("start") for line in lines(marks)) == 2, 15,
             "both children busy")
    children = {int(line.split()[-1]) for line in lines(marks)}
    queued = [ptasks.add.delay(i, i) for i in range(5)]
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0, sup.output
    assert "stopped cleanly" in sup.output, sup.output
    assert [r.get(timeout=1) for r in running] == ["r0", "r1"], "running tasks finished"
    statuses = {job_row(db, r.id)["status"] for r in queued}
    assert statuses <= {"SUCCESS", "PENDING"}, statuses  # done, or back in the queue
    assert db.execute("SELECT count(*) FROM start_all.jobs WHERE status = 'RESERVED'"
                      ).fetchone()[0] == 0
    assert not pids_alive(children), "no child outlived the worker"
    assert "SIGKILL" not in sup.output, "nothing needed killing"


def test_prefork_stop_budget_spent_kills_children_and_requeues(ptasks, db, pg_url,
                                                              run_supervisor, tmp_path):
    marks = tmp_path / "sup"
    procfile = (f"worker: {sys.executable} -m supervisor.native worker -A pooltasks:app "
                "-P prefork -c 1 --stop-timeout 1\n")
    env = {**VENV_ENV, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}", "NATIVE_TEST_DB_URL": pg_url,
           "START_ALL_STOP_TIMEOUT": "6"}
    sup = run_supervisor(procfile, env=env, pid1=False)
    sup.wait_line(r"ready:", timeout=30)
    r = ptasks.sleep_in_c.delay(str(marks), 60)  # blocked in C: only a kill ends it
    child = _started_pid(marks)
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0, sup.output
    assert "stop budget spent" in sup.output, sup.output
    assert not pids_alive([child])
    assert job_row(db, r.id)["status"] == "PENDING", "handed back, not lost"


def test_bad_pool_name_is_one_line_and_exit_2(db, start_worker):
    worker = start_worker("-P", "gevent", app="pooltasks:app", ready=False)
    assert worker.wait(20) == 2
    assert "--pool 'gevent'" in worker.output and "Traceback" not in worker.output


def test_prefork_memory_watchdog_counts_children_and_restarts_gracefully(
        ptasks, db, pg_url, run_supervisor, tmp_path):
    """The watchdog sums the PSS of the worker's tree, children included: a child holding
    200 MiB gets the worker a graceful restart, and its task still finishes."""
    marks = tmp_path / "grow"
    procfile = (f"worker: {sys.executable} -m supervisor.native worker -A pooltasks:app "
                "-P prefork -c 1\n")
    env = {**VENV_ENV, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}", "NATIVE_TEST_DB_URL": pg_url,
           "START_ALL_STOP_TIMEOUT": "20", "START_ALL_WATCHDOG_MB": "150",
           "START_ALL_HEALTH_INTERVAL": "0.2"}
    sup = run_supervisor(procfile, env=env)
    sup.wait_line(r"ready:", timeout=30)
    r = ptasks.grow.delay(str(marks), 200, 2.0)
    sup.wait_line(r"memory watchdog: tree PSS \d+ MiB over 150 MiB", timeout=30)
    assert r.get(timeout=30) == 200, "the running task finished during the graceful stop"
    wait_for(lambda: sup.output.count("ready:") >= 2, 30, "the worker restarted")
    assert "stopped cleanly" in sup.output and "SIGKILL" not in sup.output, sup.output
    assert ptasks.add.delay(1, 1).get(timeout=20) == 2
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_request_shows_the_limits_in_force(ptasks, start_worker, pool):
    start_pool(start_worker, "-P", pool, "-c", "1")
    assert ptasks.declared_limits.delay().get(timeout=15) == [60, 45, [60, 45]]
    assert ptasks.declared_limits.apply_async(time_limit=10, soft_time_limit=5).get(
        timeout=15) == [10, 5, [10, 5]]


@pytest.mark.parametrize("how", ["quick", "deadline"])
def test_prefork_under_the_supervisor_escalation_leaves_no_child(ptasks, db, pg_url,
                                                                 run_supervisor, tmp_path, how):
    """quick: start-all gets SIGQUIT and passes it on (the worker kills its children and hands
    the job back); deadline: the worker would wait longer than start-all's budget, so
    start-all SIGKILLs the worker's process group, children included (the job's lease then
    expires and the reaper requeues it: it stays RESERVED until then, never lost)."""
    marks = tmp_path / "esc"
    budget = "--stop-timeout 60" if how == "deadline" else ""
    procfile = (f"worker: {sys.executable} -m supervisor.native worker -A pooltasks:app "
                f"-P prefork -c 1 {budget}\n")
    env = {**VENV_ENV, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}", "NATIVE_TEST_DB_URL": pg_url,
           "START_ALL_STOP_TIMEOUT": "3"}
    sup = run_supervisor(procfile, env=env, pid1=False)
    sup.wait_line(r"ready:", timeout=30)
    r = ptasks.sleep_in_c.delay(str(marks), 60)
    child = _started_pid(marks)
    sup.signal(signal.SIGQUIT if how == "quick" else signal.SIGTERM)
    sup.wait(30)
    wait_for(lambda: not pids_alive([child]), 5, "no child left")
    status = job_row(db, r.id)["status"]
    if how == "quick":
        assert status == "PENDING", sup.output
    else:
        assert "SIGKILL" in sup.output, sup.output
        assert status == "RESERVED"  # its lease runs out; the reaper requeues it
    assert "end" not in lines(marks)


def test_prefork_a_child_killed_while_idle_is_replaced_before_the_next_job(ptasks,
                                                                           start_worker):
    worker = start_pool(start_worker, "-P", "prefork", "-c", "1")
    first = ptasks.pid.delay().get(timeout=15)
    os.kill(first, signal.SIGKILL)  # as the OOM killer would, between two tasks
    wait_for(lambda: not pids_alive([first]), 5, "the child gone")
    second = ptasks.pid.delay().get(timeout=15)  # not a WorkerLostError
    assert second not in (first, worker.proc.pid)
    assert "died while idle" in worker.output


def test_pool_choice_option_env_setting(monkeypatch):
    from supervisor.native import Celery
    from supervisor.native.cli import pool_for
    from supervisor.native.exceptions import ConfigError

    app = Celery("choice", broker="postgresql://unused/db", set_as_current=False)
    monkeypatch.delenv("START_ALL_WORKER_POOL", raising=False)
    assert pool_for(None, app) == "threads"
    app.conf.worker_pool = "prefork"
    assert pool_for(None, app) == "prefork"
    monkeypatch.setenv("START_ALL_WORKER_POOL", "threads")
    assert pool_for(None, app) == "threads"
    assert pool_for("processes", app) == "prefork" and pool_for("solo", app) == "threads"
    with pytest.raises(ConfigError, match="eventlet"):
        pool_for("eventlet", app)
