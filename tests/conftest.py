"""Shared test helpers: run `start-all` for real (optionally as PID 1) and wait on conditions."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# start-all refuses unknown START_ALL_* names and obeys known ones: the developer's shell
# (START_ALL_TEST_LATEST=0 for scripts/test.sh, a token, a port) must not reach the tests.
for _name in [name for name in os.environ if name.upper().startswith("START_ALL_")]:
    del os.environ[_name]

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
START_ALL = [sys.executable, "-m", "supervisor"]
# as if the project's venv were activated: `python3`, `gunicorn` ... are the venv's
VENV_ENV = {
    "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    "PYTHONPATH": str(ROOT),
}


def need(condition: bool, what: str) -> None:
    """Skip when a service is missing on a developer machine; under CI that is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required under CI")
        pytest.skip(f"{what} not available")


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Supervisor:
    """A real `start-all` process; as PID 1 of a fresh PID namespace when `pid1` is set."""

    def __init__(self, cwd: Path, args: list[str] = (), env: dict | None = None, pid1=True,
                 prefix: list[str] = ()):
        self.cwd = cwd
        self.log_path = cwd / "start-all.log"
        self.log_file = open(self.log_path, "wb")
        # never the defaults (PORT 8000, health 8081): a demo or another run may hold them
        own_ports = {"PORT": str(free_port()), "START_ALL_HEALTH_PORT": str(free_port())}
        full_env = {**os.environ, **VENV_ENV, **own_ports, **(env or {})}
        argv = [*START_ALL, *args]
        if pid1:
            argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
        argv = [*prefix, *argv]  # e.g. a wrapper that enters a memory cgroup, then execs
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=full_env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        self.pid1 = pid1

    @property
    def output(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def wait_line(self, pattern: str, timeout: float = 15.0, count: int = 1) -> re.Match:
        regex = re.compile(pattern, re.M)

        def found():
            matches = list(regex.finditer(self.output))
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"start-all exited ({self.proc.returncode}) before /{pattern}/:\n{self.output}"
                )
            return None

        return wait_for(found, timeout, f"/{pattern}/ in output:\n{self.output[-3000:]}")

    @property
    def host_pid(self) -> int:
        """The supervisor's pid as seen from here (unshare's child when run as PID 1)."""
        if not self.pid1:
            return self.proc.pid

        def child():
            path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            pids = path.read_text().split() if path.exists() else []
            return int(pids[0]) if pids else None

        return wait_for(child, 5, "the supervisor process under unshare")

    def signal(self, signum: int = signal.SIGTERM) -> float:
        """Send a signal to the supervisor (never to unshare, which ignores it)."""
        os.kill(self.host_pid, signum)
        return time.monotonic()

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_file.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.pid1:
                # SIGKILL to unshare would leave the namespace's PID 1 (and every child of
                # it) running; killing PID 1 makes the kernel kill the whole namespace.
                path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                for pid in path.read_text().split() if path.exists() else []:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


@pytest.fixture
def run_supervisor(tmp_path):
    """Factory: write a Procfile into a temp dir and start the supervisor there."""
    started: list[Supervisor] = []

    def start(procfile: str | None = None, *, args=(), env=None, pid1=True, cwd=None, prefix=()):
        where = Path(cwd or tmp_path)
        if procfile is not None:
            (where / "Procfile").write_text(procfile)
        sup = Supervisor(where, list(args), env, pid1, list(prefix))
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()


def pids_alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1][0] != "Z":
                    alive.append(pid)
        except FileNotFoundError:
            pass
    return alive


@pytest.fixture
def pg_cluster():
    """A private PostgreSQL cluster (tests/pgcluster.py) the test may stop and start."""
    from tests import pgcluster

    need(pgcluster.available(), "PostgreSQL server binaries (initdb, pg_ctl)")
    cluster = pgcluster.PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
