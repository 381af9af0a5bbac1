"""Helpers for the health tests: ask the supervisor's health server, find its children."""

from __future__ import annotations

import json
import os
import socket

import psutil
import pytest

from tests.conftest import free_port, wait_for
from tests.native.conftest import db, pg_url  # noqa: F401  (fixtures: a throwaway database)

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
HERE = os.path.dirname(__file__)
RECORDER = f"python3 {FIXTURES}/recorder.py"
GUNICORN = f"gunicorn --chdir {FIXTURES} --bind 127.0.0.1:$PORT --workers 1 wsgiapp:app"


@pytest.fixture
def henv(tmp_path):
    """Environment for a supervisor with its own ports and fast probes."""
    return {
        "RECORD_DIR": str(tmp_path),
        "PORT": str(free_port()),
        "START_ALL_HEALTH_PORT": str(free_port()),
        "START_ALL_HEALTH_INTERVAL": "0.2",
    }


def request(port: int, path: str, method: str = "GET", headers: dict | None = None,
            timeout: float = 3.0) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one HTTP/1.0 request over a fresh connection."""
    lines = [f"{method} {path} HTTP/1.0", "Host: test"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


def health(port: int, path: str = "/healthz", token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    code, _, body = request(port, path, headers=headers)
    return code, json.loads(body)


def process(report: dict, name: str) -> dict:
    return next(p for p in report["processes"] if p["name"] == name)


def wait_health(port: int, predicate, timeout: float = 20.0, what: str = "health",
                path: str = "/healthz", token: str | None = None):
    """Poll the endpoint until predicate(code, report) holds; returns (code, report)."""
    last = {}

    def check():
        try:
            last["answer"] = health(port, path, token)
        except OSError as error:
            last["answer"] = error
            return None
        return last["answer"] if predicate(*last["answer"]) else None

    try:
        return wait_for(check, timeout, what)
    except AssertionError as error:
        raise AssertionError(f"{error}; last answer: {last.get('answer')}") from None


def child_of(sup, marker: str) -> psutil.Process:
    def find():
        for child in psutil.Process(sup.host_pid).children():
            try:
                if marker in " ".join(child.cmdline()) and child.status() != "zombie":
                    return child
            except psutil.NoSuchProcess:
                pass
        return None

    return wait_for(find, 15, f"child {marker!r}")


@pytest.fixture
def memory_cgroup():
    """Factory: a real cgroup v1 memory cgroup with a limit; yields argv prefixes entering it.

    Skipped (not failed) where the machine cannot make one: not root, or no v1 memory
    controller; tests that need the watchdog have a host fallback.
    """
    made = []

    def make(limit_bytes: int) -> tuple[list[str], str]:
        own = ""
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "memory" in controllers.split(","):
                    own = path
        base = f"/sys/fs/cgroup/memory{own.rstrip('/')}"
        if os.geteuid() != 0 or not os.path.isdir(base):
            pytest.skip("no writable cgroup v1 memory controller here")
        path = f"{base}/start-all-test-{os.getpid()}-{len(made)}"
        os.makedirs(path, exist_ok=True)
        with open(f"{path}/memory.limit_in_bytes", "w") as f:
            f.write(str(limit_bytes))
        made.append(path)
        prefix = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', path]
        return prefix, path

    yield make
    for path in made:
        def empty(path=path):
            with open(f"{path}/cgroup.procs") as f:
                return not f.read().strip()

        try:
            wait_for(empty, 10, "the test cgroup to empty")
            os.rmdir(path)
        except (OSError, AssertionError):
            pass
