"""`start-all status`: table, --json, --quiet and its exit codes, over TCP and the unix socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.conftest import ROOT, VENV_ENV, free_port, wait_for
from tests.health.conftest import GUNICORN, HERE, RECORDER, wait_health


def status(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("START_ALL_")}
    return subprocess.run([sys.executable, "-m", "supervisor", "status", *args],
                          env={**base, **VENV_ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=30)


def test_status_of_a_healthy_supervisor(run_supervisor, henv):
    sup = run_supervisor(f"web: {GUNICORN}\nworker: {RECORDER} worker\n", env=henv)
    hport = henv["START_ALL_HEALTH_PORT"]
    wait_health(int(hport), lambda c, r: c == 200 and r["ready"], what="healthy")
    url = f"http://127.0.0.1:{hport}"
    table = status("--url", url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("status: ok  ready: yes  supervisor: running")
    assert lines[1].split()[:4] == ["PROCESS", "STATE", "HEALTHY", "PID"]
    assert lines[2].split()[:3] == ["web.1", "running", "yes"]
    assert lines[3].split()[:3] == ["worker.1", "running", "yes"]
    report = json.loads(status("--url", url, "--json").stdout)
    assert report["status"] == "ok" and len(report["processes"]) == 2
    quiet = status("--quiet", env={"START_ALL_HEALTH_PORT": hport})  # the HEALTHCHECK form
    assert quiet.returncode == 0 and quiet.stdout == quiet.stderr == ""
    sup.signal(signal.SIGTERM)
    sup.wait()


def test_status_exit_1_when_a_required_process_is_unhealthy(run_supervisor, henv):
    sup = run_supervisor(f"web: python3 {HERE}/slow_web.py 1000\n", env=henv)
    url = f"http://127.0.0.1:{henv['START_ALL_HEALTH_PORT']}"
    result = wait_for(lambda: (r := status("--url", url)).returncode == 1 and r, 15, "exit 1")
    assert result.stdout.startswith("status: failing  ready: no")
    assert "NO" in result.stdout.splitlines()[2] and "connection refused" in result.stdout.lower()
    assert status("--url", url, "--quiet").returncode == 1
    sup.signal(signal.SIGTERM)
    sup.wait()


def test_status_exit_2_without_a_supervisor_or_with_a_bad_url():
    result = status("--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("start-all status: no supervisor reachable")
    assert status("--url", f"http://127.0.0.1:{free_port()}", "--quiet").stderr == ""
    result = status("--url", "ftp://somewhere")
    assert result.returncode == 2 and "ftp://somewhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_children_ask_over_the_unix_socket_with_the_tcp_port_off(run_supervisor, henv,
                                                                 tmp_path):
    henv |= {"START_ALL_HEALTH_PORT": "0", "START_ALL_HEALTH_TOKEN": "sekrit"}
    out = tmp_path / "status.json"
    sup = run_supervisor(
        f"web: {GUNICORN}\n"
        f"check: sleep 2 && {sys.executable} -m supervisor status --json > {out}.tmp;"
        f" echo $? > {out}.code; mv {out}.tmp {out}; exec sleep 1000\n",
        env={**henv, "PYTHONPATH": str(ROOT)},
    )
    wait_for(out.exists, 20, "the status written by a child")
    assert (tmp_path / "status.json.code").read_text().strip() in ("0", "1")
    report = json.loads(out.read_text())  # the token from the env opened the details
    assert {p["name"] for p in report["processes"]} == {"web.1", "check.1"}
    assert "health: http" not in sup.output  # no TCP listener
    sup.signal(signal.SIGTERM)
    sup.wait()
