"""A private, throwaway PostgreSQL cluster to stop and start under a running worker.

Faults are injected here, never on the machine's shared server: `initdb` into a temporary
directory, `pg_ctl start` on a free port (TCP on 127.0.0.1 and a unix socket in the data
directory), `stop()` / `start()` as often as a test likes, `destroy()` at the end. Standard
library only, so the chaos bench imports it too. As root, the server runs as `postgres`
(initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> str | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "pg_ctl")):
            return candidate
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else None


def available() -> bool:
    return _bindir() is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One cluster: `with PgCluster() as pg: url = pg.url("db")`; `pg.stop()`, `pg.start()`."""

    def __init__(self, port: int | None = None, settings: dict | None = None) -> None:
        self.bindir = _bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server binaries (pg_ctl, initdb) not found")
        self.port = port or _free_port()
        self.dir = tempfile.mkdtemp(prefix="start-all-pg-")
        self.data = os.path.join(self.dir, "data")
        self.settings = {"max_connections": "100", "fsync": "off",
                         "synchronous_commit": "off", "full_page_writes": "off",
                         **(settings or {})}
        self.running = False
        as_root = os.geteuid() == 0
        if as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync",
                   "-E", "UTF8"])

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        argv = [os.path.join(self.bindir, argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)

    # ----- life cycle ------------------------------------------------------------------------

    def start(self) -> float:
        """Start (again); returns when it accepts connections. The seconds it took."""
        started = time.monotonic()
        options = " ".join([f"-p {self.port}", f"-k {self.dir}",
                            "-c listen_addresses=127.0.0.1",
                            *(f"-c {k}={v}" for k, v in self.settings.items())])
        self._run(["pg_ctl", "-D", self.data, "-w", "-t", "60", "-l",
                   os.path.join(self.dir, "log"), "-o", options, "start"])
        self.running = True
        return time.monotonic() - started

    def stop(self, mode: str = "fast") -> float:
        """pg_ctl stop -m fast (or immediate): every connection is cut, the port refuses."""
        started = time.monotonic()
        self._run(["pg_ctl", "-D", self.data, "-w", "-t", "60", "-m", mode, "stop"])
        self.running = False
        return time.monotonic() - started

    def destroy(self) -> None:
        if self.running:
            self._run(["pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop"], check=False)
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ----- using it --------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql (no driver needed); returns the unaligned output."""
        result = self._run(["psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p",
                            str(self.port), "-U", "postgres", "-d", database, "-c", sql])
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def terminate(self, database: str, where: str = "true") -> int:
        """pg_terminate_backend of the connections to `database` (optionally filtered)."""
        out = self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid() AND ({where})"
        )
        return int(out or 0)


class Pgbouncer:
    """pgbouncer in transaction mode in front of `upstream_port`, on a free port of its own
    (the worker knows it as a pooler from --poll-only or START_ALL_TRANSACTION_POOLER_PORT)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="start-all-pgbouncer-"))
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={upstream_host} port={upstream_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"auth_type = trust\nauth_file = {self.dir}/users.txt\n"
            "pool_mode = transaction\nunix_socket_dir =\n"
            f"logfile = {self.dir}/pgbouncer.log\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            # retry the server soon after it failed (default 15 s), as a managed pooler does
            "server_login_retry = 0.2\n"
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return os.path.exists(shutil.which("pgbouncer") or "/usr/sbin/pgbouncer")

    def start(self) -> None:
        prefix = []
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            os.chmod(self.dir, 0o755)
            for path in (self.dir, *self.dir.iterdir()):
                shutil.chown(path, "postgres")
            prefix = ["runuser", "-u", "postgres", "--"]
        self.proc = subprocess.Popen([*prefix, self.binary, str(self.dir / "pgbouncer.ini")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("pgbouncer did not start") from None
                time.sleep(0.05)

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
