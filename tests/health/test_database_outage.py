"""A database that goes away and comes back, on a private cluster (never the shared server):
the check follows it within seconds, the web stays up and a worker that exits meanwhile is
waiting for its dependency, not crash-looping."""

from __future__ import annotations

import signal
import time

from supervisor.probes import heartbeat_probe
from tests.health.conftest import GUNICORN, health, process, request, wait_health


def _db_ok(report: dict):
    return report["checks"].get("database", {}).get("ok")


def test_database_check_follows_outages_by_its_ping(run_supervisor, henv, pg_cluster):
    """With the full check an hour apart, only the 1 s ping can see the database go (and,
    when it answers again, run the full check at once): both within the waits below. How soon
    (about a second) is measured by `bash bench/run chaos` (docs/health.md), not timed here."""
    henv |= {"DATABASE_URL": pg_cluster.url(), "START_ALL_HEALTH_DB_INTERVAL": "3600"}
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: r["ready"], what="ready with the database")
    for _ in range(3):
        pg_cluster.stop()
        code, report = wait_health(hport, lambda c, r: _db_ok(r) is False, timeout=20,
                                   what="database reported down")
        assert code == 200 and report["status"] == "degraded"
        assert request(hport, "/readyz")[0] == 503
        pg_cluster.start()
        code, report = wait_health(hport, lambda c, r: r["ready"], timeout=20,
                                   what="database reported back")
        assert code == 200 and report["status"] == "ok"
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_a_worker_exiting_during_an_outage_waits_instead_of_crash_looping(
        run_supervisor, henv, pg_cluster, tmp_path):
    # a worker that cannot live without its database: exits 1 as soon as it is down
    (tmp_path / "needs_db.sh").write_text(
        f"while pg_isready -q -h 127.0.0.1 -p {pg_cluster.port}; do sleep 0.2; done\nexit 1\n")
    henv |= {"DATABASE_URL": pg_cluster.url(), "START_ALL_CRASH_LOOP_COUNT": "3",
             "START_ALL_CRASH_LOOP_WINDOW": "60", "START_ALL_BACKOFF_INITIAL": "0.2",
             "START_ALL_BACKOFF_MAX": "1", "PATH": f"{pg_cluster.bindir}:/usr/bin:/bin"}
    sup = run_supervisor(f"web: {GUNICORN}\nworker: sh {tmp_path}/needs_db.sh\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: r["ready"], what="ready")
    pg_cluster.stop()
    wait_health(hport, lambda c, r: _db_ok(r) is False, timeout=10, what="database down")
    sup.wait_line(r"worker\.1 exited while the database check fails", timeout=10)
    # more exits than the crash-loop count, and still up: backoff, never a give-up
    sup.wait_line(r"worker\.1 exited with code 1", count=5, timeout=20)
    code, report = health(hport)
    assert sup.proc.poll() is None and "stopping all" not in sup.output
    assert code == 200 and report["status"] == "degraded"
    worker = process(report, "worker.1")
    assert worker["state"] in ("backoff", "running", "starting")
    if worker["state"] == "backoff":
        assert worker["waiting"] == "database"
    pg_cluster.start()
    code, report = wait_health(hport, lambda c, r: r["ready"], timeout=20, what="all back")
    assert process(report, "worker.1")["state"] == "running"
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_the_same_exits_with_the_database_up_are_a_crash_loop(run_supervisor, henv,
                                                               pg_cluster):
    henv |= {"DATABASE_URL": pg_cluster.url(), "START_ALL_CRASH_LOOP_COUNT": "3",
             "START_ALL_BACKOFF_INITIAL": "0.1", "START_ALL_BACKOFF_MAX": "0.2"}
    sup = run_supervisor(f"web: {GUNICORN}\nworker: sh -c 'sleep 0.3; exit 1'\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: _db_ok(r) is True, what="database ok")
    assert sup.wait(30) == 1
    assert "giving up, stopping all" in sup.output


def test_heartbeat_saying_database_unreachable_is_alive_not_failing(tmp_path):
    beat = tmp_path / "heartbeat"
    now = time.time()
    beat.write_text("database-unreachable since 12 s\n")
    ok, detail = heartbeat_probe(str(beat), 5, now - 100, now + 1)
    assert ok is True and detail.startswith("database unreachable")
    beat.write_text("db-unreachable 1795435637 connection refused\n")
    assert heartbeat_probe(str(beat), 5, now - 100, now + 1)[1].startswith("database unreachable")
    beat.write_text("ok\n")
    ok, detail = heartbeat_probe(str(beat), 5, now - 100, now + 1)
    assert ok is True and detail.startswith("last heartbeat")


def test_native_worker_waiting_for_its_database_is_degraded_not_failing(
        run_supervisor, henv, pg_cluster):
    from tests.conftest import ROOT

    url = pg_cluster.create_database("outage")
    apps = ROOT / "tests" / "native" / "apps"
    henv |= {"DATABASE_URL": url, "NATIVE_TEST_DB_URL": url, "START_ALL_HEARTBEAT_INTERVAL": "0.3",
             "PYTHONPATH": f"{apps}:{ROOT}"}
    sup = run_supervisor(f"web: {GUNICORN}\n"
                         "worker: python3 -m supervisor.native worker -A qtasks:app -c 2\n",
                         env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: r["ready"], timeout=30, what="ready")
    pid = process(health(hport)[1], "worker.1")["pid"]
    pg_cluster.stop()
    code, report = wait_health(
        hport, lambda c, r: (process(r, "worker.1")["probe"] or {}).get("degraded"),
        timeout=15, what="the worker saying database unreachable")
    worker = process(report, "worker.1")
    assert code == 200 and report["status"] == "degraded"
    assert worker["healthy"] and not worker["ready"] and worker["pid"] == pid
    assert worker["probe"]["detail"].startswith("database unreachable")
    assert request(hport, "/readyz")[0] == 503
    pg_cluster.start()
    code, report = wait_health(hport, lambda c, r: r["ready"], timeout=15, what="back")
    assert process(report, "worker.1")["pid"] == pid  # the same process: it never exited
    assert process(report, "worker.1")["restarts"] == 0
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_database_down_behind_a_pooler_is_seen_within_seconds(run_supervisor, henv,
                                                              pg_cluster):
    """The ping reaches only pgbouncer; the worker's heartbeat makes the full check run."""
    from tests.conftest import ROOT, need
    from tests.pgcluster import Pgbouncer

    need(Pgbouncer.available(), "pgbouncer")
    pg_cluster.create_database("pooled")
    bouncer = Pgbouncer(pg_cluster.port)
    bouncer.start()
    try:
        url = bouncer.url_for("pooled")
        apps = ROOT / "tests" / "native" / "apps"
        henv |= {"DATABASE_URL": url, "NATIVE_TEST_DB_URL": url,
                 "START_ALL_HEARTBEAT_INTERVAL": "0.3", "PYTHONPATH": f"{apps}:{ROOT}",
                 # the full check an hour apart: only the worker's hint can run it in time
                 "START_ALL_HEALTH_DB_INTERVAL": "3600"}
        sup = run_supervisor(f"web: {GUNICORN}\nworker: python3 -m supervisor.native worker "
                             "-A qtasks:app -c 2 --poll-only\n", env=henv)
        hport = int(henv["START_ALL_HEALTH_PORT"])
        wait_health(hport, lambda c, r: r["ready"], timeout=30, what="ready")
        pg_cluster.stop()
        code, report = wait_health(hport, lambda c, r: _db_ok(r) is False, timeout=20,
                                   what="the database check failing behind the pooler")
        assert code == 200 and report["status"] == "degraded"
        pg_cluster.start()
        wait_health(hport, lambda c, r: r["ready"], timeout=30, what="back")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    finally:
        bouncer.close()
