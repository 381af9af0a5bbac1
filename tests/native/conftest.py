"""Fixtures for the native worker: a throwaway PostgreSQL database, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, need, wait_for

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
BASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def _no_ambient_database_url(monkeypatch):
    """DATABASE_URL names the server these tests make their throwaway databases on. Left in the
    environment, a worker or Django process a test starts would read it as its queue database
    (the documented default) and write to that server's database instead of the test's own."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


def _admin():
    import psycopg

    return psycopg.connect(BASE_URL, autocommit=True, connect_timeout=3)


def _url_for(dbname: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{dbname}"))


@pytest.fixture(scope="session")
def pg_url():
    try:
        admin = _admin()
    except Exception:
        admin = None
    need(admin is not None, f"PostgreSQL at {BASE_URL}")
    name = f"native_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    yield _url_for(name)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def db(pg_url, monkeypatch):
    """A clean queue for each test, and the test's own connection to inspect it."""
    import psycopg

    from supervisor.native import store

    conn = psycopg.connect(pg_url, autocommit=True)
    store.migrate(conn)
    conn.execute("TRUNCATE start_all.jobs, start_all.workers, start_all.cron_slots")
    monkeypatch.setenv("NATIVE_TEST_DB_URL", pg_url)
    yield conn
    conn.close()


@pytest.fixture
def qapp(db, pg_url):
    """The tasks module in this process, pointed at the test database."""
    sys.path.insert(0, str(APPS))
    import qtasks

    qtasks.app.close()
    qtasks.app.conf.broker_url = pg_url
    qtasks.app.conf.task_always_eager = False
    yield qtasks
    qtasks.app.close()


@pytest.fixture
def flow(db, pg_url):
    """The flowtasks app in this process, pointed at the test database."""
    sys.path.insert(0, str(APPS))
    import flowtasks

    flowtasks.app.close()
    flowtasks.app.conf.broker_url = pg_url
    db.execute("TRUNCATE start_all.chords, start_all.groups")
    yield flowtasks
    flowtasks.app.close()


class WorkerProcess:
    """`python -m supervisor.native worker` for real, with its own log file."""

    def __init__(self, tmp: Path, app: str, args: list[str], env: dict[str, str],
                 cwd: Path = APPS) -> None:
        self.log_path = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "wb")
        full_env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.native", "worker", "-A", app, *args],
            cwd=cwd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.output}")
            return "ready:" in self.output

        wait_for(ready, timeout, f"worker ready:\n{self.output}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def start_worker(tmp_path, pg_url):
    started: list[WorkerProcess] = []

    def start(*args: str, app: str = "qtasks:app", env: dict | None = None, ready=True,
              cwd: Path = APPS) -> WorkerProcess:
        worker = WorkerProcess(
            tmp_path, app, list(args),
            {"NATIVE_TEST_DB_URL": pg_url, "NATIVE_TEST_MARKS": str(tmp_path / "marks"),
             **(env or {})},
            cwd,
        )
        started.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.signal(signal.SIGQUIT)
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                pass
        worker.close()


@pytest.fixture(scope="module")
def outage_cluster():
    """One private PostgreSQL cluster (tests/pgcluster.py) per module, to stop and start."""
    from tests import pgcluster

    need(pgcluster.available(), "PostgreSQL server binaries (initdb, pg_ctl)")
    with pgcluster.PgCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_url(outage_cluster):
    """A fresh database in `outage_cluster`; the cluster is running again afterwards."""
    if not outage_cluster.running:
        outage_cluster.start()
    name = f"outage_{uuid.uuid4().hex[:8]}"
    url = outage_cluster.create_database(name)
    yield url
    if not outage_cluster.running:
        outage_cluster.start()
    outage_cluster.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def oapp(cluster_url, monkeypatch):
    """The tasks module pointed at the private cluster, schema in place."""
    import psycopg

    monkeypatch.syspath_prepend(str(APPS))
    import qtasks

    from supervisor.native import store

    with psycopg.connect(cluster_url, autocommit=True) as conn:
        store.migrate(conn)
    qtasks.app.close()
    before = qtasks.app.conf.broker_url
    qtasks.app.conf.broker_url = cluster_url
    qtasks.app.conf.task_always_eager = False
    yield qtasks
    qtasks.app.close()
    qtasks.app.conf.broker_url = before  # later tests' apps must not find the private cluster


def rows(url: str, sql: str, params=()) -> list:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def job_row(db, task_id: str) -> dict | None:
    cur = db.execute("SELECT * FROM start_all.jobs WHERE task_id = %s", (task_id,))
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None
