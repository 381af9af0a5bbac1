"""Through a real transaction-mode pooler on port 6543 (pgbouncer, like Supabase's): the worker
detects it, polls instead of LISTEN, and producers and worker run without prepared statements."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import APPS

from tests.conftest import need, port_open, wait_for

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
POOLER_PORT = 6543  # the port the worker recognises as a transaction pooler


@pytest.fixture
def pooler_url(pg_url):
    need(os.path.exists(PGBOUNCER), "pgbouncer (apt-get install pgbouncer)")
    need(not port_open(POOLER_PORT), f"a free port {POOLER_PORT}")
    upstream = urlsplit(pg_url)
    work = Path(tempfile.mkdtemp(prefix="native-pooler-"))
    (work / "users.txt").write_text('"postgres" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={upstream.hostname or '127.0.0.1'} port={upstream.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {POOLER_PORT}\n"
        f"auth_type = trust\nauth_file = {work}/users.txt\n"
        "pool_mode = transaction\nunix_socket_dir =\n"
        f"logfile = {work}/pgbouncer.log\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    os.chmod(work, 0o755)
    shutil.chown(work, "postgres")
    for f in work.iterdir():
        shutil.chown(f, "postgres")
    # pgbouncer refuses to run as root
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--", PGBOUNCER,
                             str(work / "pgbouncer.ini")])
    try:
        wait_for(lambda: port_open(POOLER_PORT), 10, "pgbouncer listening")
        yield urlunsplit(upstream._replace(netloc=f"postgres@127.0.0.1:{POOLER_PORT}"))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def test_worker_and_producers_through_a_transaction_pooler(db, pooler_url, start_worker,
                                                           monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    import qtasks

    qtasks.app.close()
    qtasks.app.conf.broker_url = pooler_url
    try:
        worker = start_worker("-c", "2", env={"NATIVE_TEST_DB_URL": pooler_url,
                                              "NATIVE_TEST_POLL": "0.1"})
        assert "poll-only" in worker.output, "port 6543 detected as a transaction pooler"
        # more calls than psycopg's prepare threshold: prepared statements would break here
        results = [qtasks.add.delay(i, i) for i in range(30)]
        assert [r.get(timeout=20) for r in results] == [2 * i for i in range(30)]
        assert qtasks.app.AsyncResult("unknown").state == "PENDING"
    finally:
        qtasks.app.close()
