"""Worker probes: django-q2's cluster tree under a real supervisor, the native heartbeat file,
and PID 1 never loading a database driver or pydantic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from supervisor.probes import heartbeat_probe
from tests.conftest import ROOT, VENV_ENV, port_open
from tests.health.conftest import FIXTURES, GUNICORN, process, wait_health

APP = os.path.join(FIXTURES, "djangoapp")


def test_qcluster_without_its_sentinel_is_unhealthy(run_supervisor, henv, tmp_path):
    henv |= {"TEST_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "proj.settings"}
    sup = run_supervisor(
        f"release: python3 {APP}/manage.py migrate --no-input\n"
        f"web: {GUNICORN}\n"
        f"worker: cd {APP} && python3 manage.py qcluster\n",
        env=henv,
    )
    hport = int(henv["START_ALL_HEALTH_PORT"])
    code, report = wait_health(
        hport, lambda c, r: c == 200 and process(r, "worker.1")["ready"], timeout=40,
        what="the cluster up")
    worker = process(report, "worker.1")
    assert worker["probe"]["detail"].startswith("cluster tree has ")
    assert worker["memory"]["processes"] >= 3
    # The state the probe exists for: a main process that is alive while its sentinel and
    # workers are gone (what a stray `kill -TERM -PGID` leaves behind, some of the time). Made
    # certain here: the whole group is frozen, then every helper below the main is killed.
    main = next(c for c in psutil.Process(sup.host_pid).children()
                if "qcluster" in " ".join(c.cmdline()))
    os.killpg(main.pid, signal.SIGSTOP)  # nothing forks or exits on its own any more
    helpers = main.children(recursive=True)
    assert helpers
    for helper in helpers:
        helper.kill()
    code, report = wait_health(
        hport, lambda c, r: c == 503, timeout=40, what="503 for a cluster without workers")
    worker = process(report, "worker.1")
    assert worker["state"] == "running" and worker["pid"] and not worker["healthy"]
    assert "sentinel or workers missing" in worker["probe"]["detail"]
    assert main.is_running()  # alive, with only the unreaped corpse of its sentinel
    assert all(c.status() == psutil.STATUS_ZOMBIE for c in main.children())
    os.killpg(main.pid, signal.SIGCONT)
    sup.signal(signal.SIGTERM)
    sup.wait(30)


def test_heartbeat_file_probe(tmp_path):
    beat = tmp_path / "heartbeat"
    now = time.time()
    started = now - 100
    assert heartbeat_probe(str(beat), 5, now - 1, now) == (None, "waiting for the first heartbeat")
    assert heartbeat_probe(str(beat), 5, started, now) == (False, "no heartbeat for 15 s")
    beat.touch()
    os.utime(beat, (now - 2, now - 2))
    assert heartbeat_probe(str(beat), 5, started, now)[0] is True
    os.utime(beat, (now - 16, now - 16))
    ok, detail = heartbeat_probe(str(beat), 5, started, now)
    assert ok is False and "stale after 15 s" in detail
    # a file left by the previous run does not count for a worker that just started
    assert heartbeat_probe(str(beat), 5, now - 1, now)[0] is None
    # just after the whole container was frozen (a sleeping instance), a beat from before the
    # freeze is not a failure yet; one that does not come within the stale limit is
    os.utime(beat, (now - 70, now - 70))
    assert heartbeat_probe(str(beat), 5, started, now, woke_wall=now - 1)[0] is None
    assert heartbeat_probe(str(beat), 5, started, now, woke_wall=now - 16)[0] is False


def test_native_worker_gets_its_heartbeat_file_and_interval(tmp_path):
    (tmp_path / "Procfile").write_text(
        "web: gunicorn app:app\nworker: python3 -m supervisor.native worker -A app:queue\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("START_ALL_")}
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "--dry-run", "--json"], cwd=tmp_path,
        env={**base, **VENV_ENV, "START_ALL_HEARTBEAT_INTERVAL": "2"}, capture_output=True,
        text=True, timeout=30)
    plan = json.loads(result.stdout)
    worker = plan["processes"][1]
    assert worker["kind"] == "native"
    assert worker["env"]["START_ALL_HEARTBEAT_INTERVAL"] == "2"
    assert worker["env"]["START_ALL_HEARTBEAT_FILE"].startswith(plan["health"]["run_dir"])
    assert worker["env"]["START_ALL_WORKER_CONCURRENCY"].isdigit()
    assert "START_ALL_HEARTBEAT_FILE" not in plan["processes"][0]["env"]


def test_pid1_loads_no_database_driver_or_pydantic(run_supervisor, henv):
    henv["DATABASE_URL"] = os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: "database" in r["checks"] and r["checks"]["database"]["ok"]
                is not None, what="a database check")
    assert port_open(hport)
    maps = open(f"/proc/{sup.host_pid}/maps").read()
    for library in ("psycopg", "pydantic_core", "libpq", "_psutil"):
        assert library not in maps, library
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_native_worker_heartbeat_under_the_supervisor(db, pg_url, run_supervisor, henv, pool):
    """A frozen claim loop stops the heartbeat: 503; thawed, it beats again: 200 (with either
    pool: prefork children do not beat for their parent)."""
    from tests.native.conftest import APPS

    henv |= {"PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}", "NATIVE_TEST_DB_URL": pg_url,
             "NATIVE_TEST_HEARTBEAT": "0.5", "START_ALL_HEARTBEAT_INTERVAL": "0.5"}
    sup = run_supervisor(
        f"worker: {sys.executable} -m supervisor.native worker -A qtasks:app -c 1 -P {pool}\n",
        env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    code, report = wait_health(hport, lambda c, r: c == 200 and r["ready"], timeout=30,
                               what="the native worker ready")
    worker = process(report, "worker.1")
    assert worker["kind"] == "native" and worker["probe"]["detail"].startswith("last heartbeat")
    psutil.Process(sup.host_pid).children()[0].send_signal(signal.SIGSTOP)  # host-side pid
    try:
        code, report = wait_health(hport, lambda c, r: c == 503, what="a stale heartbeat")
        assert "stale after 1.5 s" in process(report, "worker.1")["probe"]["detail"]
    finally:
        for child in psutil.Process(sup.host_pid).children():
            child.send_signal(signal.SIGCONT)
    wait_health(hport, lambda c, r: c == 200, what="beating again")
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
