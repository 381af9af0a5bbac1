"""Celery's signals, control.inspect() and control.purge across real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import APPS, lines

from tests.conftest import ROOT, wait_for


@pytest.fixture
def ptasks(db, pg_url):
    sys.path.insert(0, str(APPS))
    import pooltasks

    pooltasks.app.close()
    pooltasks.app.conf.broker_url = pg_url
    yield pooltasks
    pooltasks.app.close()


def _started(path, n: int) -> None:
    wait_for(lambda: sum(line.startswith("start") for line in lines(path)) >= n, 15,
             f"{n} task(s) started")


def test_inspect_sees_every_worker_across_processes(ptasks, db, start_worker, tmp_path):
    one = {"POOL_TEST_PREFETCH": "1"}  # each worker holds one task at a time
    pre = start_worker("-P", "prefork", "-c", "1", "-n", "pre@box", app="pooltasks:app",
                       env=one)
    thr = start_worker("-P", "threads", "-c", "1", "-n", "thr@box", app="pooltasks:app",
                       env=one)
    path = tmp_path / "h"
    running = [ptasks.hold.delay(str(path), f"t{i}", 20) for i in range(2)]
    _started(path, 2)
    later = ptasks.add.apply_async((1, 2), countdown=300)
    inspect = ptasks.app.control.inspect(timeout=5)

    assert inspect.ping() == {"pre@box": {"ok": "pong"}, "thr@box": {"ok": "pong"}}
    active = inspect.active()
    assert sorted(t["id"] for ts in active.values() for t in ts) == sorted(r.id for r in running)
    assert all(t["name"] == "pooltasks.hold" and t["time_start"] for ts in active.values()
               for t in ts)
    stats = inspect.stats()
    assert stats["pre@box"]["pool"]["implementation"] == "prefork"
    assert stats["thr@box"]["pool"]["implementation"] == "threads"
    assert stats["pre@box"]["pid"] == pre.proc.pid and stats["thr@box"]["pid"] == thr.proc.pid
    child = stats["pre@box"]["pool"]["processes"]
    assert len(child) == 1 and child[0] != pre.proc.pid
    assert [t["worker_pid"] for t in active["pre@box"]] == child  # the child runs it
    assert [t["worker_pid"] for t in active["thr@box"]] == [thr.proc.pid]
    held = inspect.query_task(running[0].id, running[1].id)
    assert sorted(i for r in held.values() for i in r) == sorted(r.id for r in running)
    assert {v[0] for r in held.values() for v in r.values()} == {"active"}
    reserved = inspect.reserved()
    assert set(reserved) == {"pre@box", "thr@box"}
    scheduled = inspect.scheduled()
    assert [e["request"]["id"] for es in scheduled.values() for e in es] == [later.id]
    assert "pooltasks.add" in inspect.registered()["thr@box"]
    assert ptasks.app.control.inspect(destination=["thr@box"], timeout=5).ping() == {
        "thr@box": {"ok": "pong"}}

    thr.signal(signal.SIGQUIT)
    thr.wait(15)
    assert set(ptasks.app.control.inspect(timeout=5).ping()) == {"pre@box"}


def test_inspect_without_workers_is_none(ptasks):
    assert ptasks.app.control.inspect(timeout=0.2).ping() is None


def test_purge_discards_waiting_tasks_only(ptasks, db):
    for i in range(5):
        ptasks.add.delay(i, i)
    ptasks.add.apply_async((0, 0), queue="other")
    db.execute("UPDATE start_all.jobs SET status = 'SUCCESS' WHERE id = (SELECT min(id) FROM "
               "start_all.jobs)")
    assert ptasks.app.control.purge(queues=["other"]) == 1
    assert ptasks.app.control.purge() == 4
    assert db.execute("SELECT status, count(*) FROM start_all.jobs GROUP BY 1").fetchall() == [
        ("SUCCESS", 1)]


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_worker_side_signals_with_celery_arguments(ptasks, start_worker, tmp_path, pool):
    events = tmp_path / "events"
    worker = start_worker("-P", pool, "-c", "1", app="pooltasks:app",
                          env={"POOL_TEST_SIGNALS": str(events)})
    assert ptasks.add.delay(2, 3).get(timeout=15) == 5
    with pytest.raises(KeyError):
        ptasks.boom.delay().get(timeout=15)
    assert ptasks.retry_once.delay().get(timeout=15) == "retried"
    ptasks.app.send_task("pooltasks.nowhere").get(timeout=15, propagate=False)
    path = tmp_path / "t"
    r = ptasks.hold.delay(str(path), "x", 30)
    _started(path, 1)
    r.revoke(terminate=True)
    wait_for(lambda: r.state == "REVOKED", 15, "terminated")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    got = lines(events)
    main = f"pid={worker.proc.pid}"

    def find(prefix: str) -> list[str]:
        return [e for e in got if e.startswith(prefix)]

    assert find("worker_ready") and find("worker_ready")[0].endswith(main)
    assert find("worker_shutdown") and got[-1].startswith("worker_shutdown")
    assert all(e.endswith(main) for e in find("task_received"))
    assert len(find("task_received")) >= 5  # add, boom, retry_once twice, hold
    assert any("args=[2, 3]" in e for e in find("task_prerun pooltasks.add"))
    assert any("retval=5 state='SUCCESS'" in e for e in find("task_postrun pooltasks.add"))
    assert find("task_success pooltasks.add result=5")
    assert any("exception=KeyError('boom')" in e for e in find("task_failure pooltasks.boom"))
    assert find("task_retry pooltasks.retry_once")
    assert find("task_unknown NoneType name='pooltasks.nowhere'")
    assert any("terminated=True" in e for e in find("task_revoked pooltasks.hold"))
    runs_in = find("task_prerun pooltasks.add")[0].rsplit(" ", 1)[1]
    if pool == "prefork":
        assert runs_in != main, "task signals fire in the child that runs the task"
        assert find("worker_process_init")[0].endswith(runs_in)
    else:
        assert runs_in == main


def test_publish_signals_in_the_caller(ptasks):
    from supervisor.native.signals import after_task_publish, before_task_publish

    seen = []

    def before(sender=None, body=None, exchange=None, routing_key=None, headers=None,
               properties=None, declare=None, retry_policy=None, **kwargs):
        seen.append(("before", sender, body, routing_key, headers["id"], headers["task"]))

    def after(sender=None, body=None, exchange=None, routing_key=None, headers=None, **kwargs):
        seen.append(("after", sender, headers["id"]))

    before_task_publish.connect(before)
    after_task_publish.connect(after)
    try:
        r = ptasks.add.apply_async((1, 2), queue="q1")
    finally:
        assert before_task_publish.disconnect(before) and after_task_publish.disconnect(after)
    assert seen == [("before", "pooltasks.add", ([1, 2], {}, {}), "q1", r.id, "pooltasks.add"),
                    ("after", "pooltasks.add", r.id)]
    ptasks.add.delay(1, 1)
    assert len(seen) == 2, "disconnected receivers hear nothing"


def test_signals_follow_use_db_queue():
    code = ("import celery.signals, supervisor.native.signals as s, supervisor.native as n; "
            "print(s.task_success is celery.signals.task_success, n.signals is s)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "USE_DB_QUEUE": "false"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "USE_DB_QUEUE": "true"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_rate_limit_holds_across_two_worker_processes(ptasks, db, start_worker, tmp_path):
    db.execute("TRUNCATE start_all.rate_limits")
    # one queue each, so each worker surely runs half the jobs: the bucket is all they share
    workers = [start_worker("-c", "2", "-Q", q, app="pooltasks:app") for q in ("a", "b")]
    path = tmp_path / "rl"
    limited = [ptasks.limited.apply_async((str(path),), queue="ab"[i % 2])  # rate_limit="5/s"
               for i in range(12)]
    plain = [ptasks.unlimited.apply_async((str(tmp_path / "plain"),), queue="ab"[i % 2])
             for i in range(20)]
    assert all(r.get(timeout=60) for r in limited + plain)
    rows = db.execute("SELECT extract(epoch FROM started_at)::float8, worker FROM start_all.jobs "
                      "WHERE name = 'pooltasks.limited' ORDER BY started_at").fetchall()
    starts = [r[0] for r in rows]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.2 - 1e-3, f"5/s means one start every 200 ms in all: {gaps}"
    assert len({r[1] for r in rows}) == 2, "both workers ran their six"
    assert {int(line.split()[1]) for line in lines(path)} == {w.proc.pid for w in workers}


def test_rate_strings_and_a_bad_one():
    from supervisor.native import Celery
    from supervisor.native.exceptions import ConfigError
    from supervisor.native.ratelimit import limits_of, parse_rate

    assert parse_rate("10/s") == 10 and parse_rate("120/m") == 2 and parse_rate(7) == 7
    assert parse_rate("3600/h") == 1 and parse_rate(None) is None and parse_rate("0/s") is None
    app = Celery("rates", broker="postgresql://unused/db", set_as_current=False)

    @app.task(rate_limit="100/m")
    def some():
        pass

    @app.task
    def plain():
        pass

    assert limits_of(app) == {"limited": [some.name], "every": [0.6], "burst": [1]}
    with pytest.raises(ConfigError, match="rate_limit 'ten'"):
        app.task(rate_limit="ten")(lambda: None)
    del app.tasks[some.name]
    assert limits_of(app) is None, "no rate-limited task: the plain claim, unchanged"


def test_rate_limit_on_sqlite_is_refused_in_one_line(start_worker, tmp_path):
    worker = start_worker(app="pooltasks:app", ready=False,
                          env={"NATIVE_TEST_DB_URL": f"sqlite:///{tmp_path}/q.sqlite3"})
    assert worker.wait(20) == 2
    assert "rate_limit (pooltasks.limited) needs PostgreSQL" in worker.output
    assert "Traceback" not in worker.output


def test_in_process_test_worker_lets_the_test_hear_worker_signals(ptasks):
    from supervisor.native.signals import task_prerun, task_received
    from supervisor.native.testing import start_worker

    heard = []

    def received(sender=None, request=None, **kwargs):
        heard.append(("received", request.name, request.id))

    def prerun(sender=None, task_id=None, task=None, args=None, **kwargs):
        heard.append(("prerun", task.name, task_id, args))

    task_received.connect(received)
    task_prerun.connect(prerun)
    try:
        with start_worker(ptasks.app) as worker:
            r = ptasks.add.delay(20, 22)
            assert r.get(timeout=15) == 42
        assert not worker.running, "stopped gracefully"
    finally:
        task_received.disconnect(received)
        task_prerun.disconnect(prerun)
    assert heard == [("received", "pooltasks.add", r.id), ("prerun", "pooltasks.add", r.id,
                                                            [20, 22])]


def test_ping_answers_as_soon_as_the_worker_is_ready(ptasks, start_worker):
    worker = start_worker("-n", "fresh@box", app="pooltasks:app")  # returns at "ready:"
    assert ptasks.app.control.inspect(timeout=5).ping() == {"fresh@box": {"ok": "pong"}}
    assert worker.proc.poll() is None


def test_remote_control_beyond_revoke_purge_inspect_says_so():
    from supervisor.native import Celery

    app = Celery("rc", broker="postgresql://unused/db", set_as_current=False)
    with pytest.raises(NotImplementedError, match=r"rate_limit\(\): set rate_limit on the task"):
        app.control.rate_limit("proj.add", "10/s")
    with pytest.raises(NotImplementedError, match="broadcast"):
        app.control.broadcast("shutdown")
    with pytest.raises(NotImplementedError, match="revocations live in the jobs table"):
        app.control.inspect().revoked()


def test_inspect_and_purge_on_sqlite(start_worker, tmp_path):
    from supervisor.native import Celery

    url = f"sqlite:///{tmp_path}/q.sqlite3"
    start_worker("-n", "lite@box", env={"NATIVE_TEST_DB_URL": url})  # qtasks: no rate limit
    app = Celery("lite", broker=url, set_as_current=False)
    app.conf.native_heartbeat_interval = 0.4
    try:
        wait_for(lambda: app.control.inspect(timeout=0.5).ping(), 15, "the heartbeat state")
        assert app.control.inspect().ping() == {"lite@box": {"ok": "pong"}}
        assert app.control.inspect().stats()["lite@box"]["broker"]["transport"] == "sqlite"
        app.send_task("qtasks.add", args=[1, 2], countdown=300)
        assert app.control.purge() == 1
    finally:
        app.close()
