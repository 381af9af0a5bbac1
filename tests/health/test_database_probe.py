"""The database probe: a closed port, a silent server and the real PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, free_port, need, port_open
from tests.health.conftest import GUNICORN, health, request, wait_health

PG_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def run_probe(url: str, timeout: float) -> tuple[str, float]:
    """The probe child exactly as PID 1 starts it, timed."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.probes", "database"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url,
             "START_ALL_DB_TIMEOUT": str(timeout)},
        capture_output=True, text=True, timeout=30,
    )
    return result.stdout.strip().splitlines()[0], time.monotonic() - started


def test_probe_child_against_a_closed_port_and_the_real_postgres():
    # (its own timeout is the silent server's test below: a refusal is immediate)
    answer, _ = run_probe(f"postgresql://u:pw@127.0.0.1:{free_port()}/x", 2)
    assert answer == "fail connection refused"
    need(port_open(5432), "PostgreSQL on 127.0.0.1:5432")
    answer, _ = run_probe(PG_URL, 3)
    assert answer.startswith("ok ") and answer.endswith(" ms")
    answer, _ = run_probe(PG_URL.rsplit("/", 1)[0] + "/no_such_db_here", 3)
    assert answer == "fail database does not exist"


@pytest.fixture
def silent_server():
    """Accepts TCP connections and never says a word: a hung database."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def test_dead_or_silent_database_is_degraded_within_its_timeout(run_supervisor, henv,
                                                                 silent_server):
    henv |= {"DATABASE_URL": f"postgresql://u:p@127.0.0.1:{silent_server}/x",
             "START_ALL_HEALTH_DB_TIMEOUT": "1.5"}
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    # while the database hangs, the endpoint answers at once: pending, not ready, not hung
    wait_health(hport, lambda c, r: True, what="the health server")
    t0 = time.monotonic()
    code, report = health(hport)
    assert time.monotonic() - t0 < 1.5  # an endpoint waiting on the check would take 1.5 s
    code, report = wait_health(
        hport, lambda c, r: r["checks"].get("database", {}).get("ok") is False,
        what="database degraded")
    # under load gunicorn may not have passed its own first probe yet: wait for that too
    code, report = wait_health(
        hport, lambda c, r: r["checks"]["database"]["ok"] is False
        and all(p["healthy"] for p in r["processes"]), what="web healthy, database not")
    # the check's own 1.5 s deadline gave the answer, not libpq's own 2 s+ connect timeout
    assert report["checks"]["database"]["detail"] == "timeout: no answer within 1.5 s"
    assert code == 200 and report["status"] == "degraded"  # web still serves: no restart
    assert request(hport, "/readyz")[0] == 503  # but not ready
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_real_postgres_is_ok_and_ready(run_supervisor, henv):
    need(port_open(5432), "PostgreSQL on 127.0.0.1:5432")
    henv["DATABASE_URL"] = PG_URL
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    code, report = wait_health(hport, lambda c, r: r["ready"], what="ready with the database")
    assert code == 200 and report["status"] == "ok"
    assert report["checks"]["database"]["ok"] is True
    assert report["checks"]["database"]["detail"].startswith("SELECT 1 in ")
    assert request(hport, "/readyz")[0] == 200
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_other_databases_are_checked_by_tcp_and_sqlite_not_at_all():
    from supervisor.probes import database_checkable

    answer, _ = run_probe(f"mysql://u:pw@127.0.0.1:{free_port()}/x", 2)
    assert answer == "fail connection refused"
    need(port_open(6379), "Redis on 127.0.0.1:6379")
    answer, _ = run_probe("redis://127.0.0.1:6379/0", 2)
    assert answer.startswith("ok ") and answer.endswith("(TCP connect only)")
    assert not database_checkable("sqlite:////app/db.sqlite3")
    assert database_checkable("postgresql+psycopg://u@h/x") and not database_checkable("")
