"""django-tasks-db's `manage.py db_worker` under start-all, for real (PostgreSQL, signals).

Measured: a first SIGTERM lets the running task finish with no time limit; a second one
interrupts it and records it FAILED; a SIGKILL would leave it RUNNING for good."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import APPS

from supervisor import profiles
from tests.conftest import ROOT, VENV_ENV, free_port, http_get, wait_for

DBWPROJ = APPS / "dbwproj"
WORKER = "python manage.py db_worker --no-startup-delay --interval 0.2"


@pytest.mark.parametrize("argv", [
    ("python", "manage.py", "db_worker"),
    ("/venv/bin/python3", "-u", "manage.py", "db_worker", "--queue-name", "*"),
    ("django-admin", "db_worker", "--settings", "proj.settings"),
    ("python", "-m", "django", "db_worker"),
])
def test_db_worker_is_its_own_kind(argv):
    profile = profiles.detect(argv)
    assert profile.kind == "db-worker" and profile.worker
    assert [(e.after, e.signal) for e in profile.escalations] == [(0.6, "SIGTERM")]


@pytest.fixture
def dbw(db, pg_url, tmp_path):
    """A copy of the project (start-all writes its log there), migrated, and a way to enqueue
    and read its task rows."""
    marks = tmp_path / "marks"
    project = shutil.copytree(DBWPROJ, tmp_path / "dbwproj")
    env = {**os.environ, **VENV_ENV, "NATIVE_TEST_DB_URL": pg_url, "DBW_MARKS": str(marks),
           "PYTHONPATH": f"{project}{os.pathsep}{ROOT}",
           "DJANGO_SETTINGS_MODULE": "dbwproj.settings"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=project, env=env,
                   check=True, timeout=120)
    db.execute("TRUNCATE django_tasks_database_dbtaskresult")

    def enqueue(key: str, seconds: float) -> str:
        code = ("import django; django.setup(); from chores.tasks import slow; "
                f"print(slow.enqueue({key!r}, {seconds}).id)")
        done = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, check=True,
                              capture_output=True, text=True, timeout=60)
        return done.stdout.strip()

    def row(task_id: str) -> tuple:
        return db.execute("SELECT status, exception_class_path FROM "
                          "django_tasks_database_dbtaskresult WHERE id = %s",
                          (task_id,)).fetchone()

    def notes() -> list[str]:
        return marks.read_text().splitlines() if marks.exists() else []

    return project, env, enqueue, row, notes


def _start(run_supervisor, project, env, budget: float, health_port: int | None = None):
    extra = {"START_ALL_STOP_TIMEOUT": str(budget)}
    if health_port:
        extra["START_ALL_HEALTH_PORT"] = str(health_port)
    sup = run_supervisor(f"worker: {WORKER}\n", env={**env, **extra}, cwd=project)
    sup.wait_line(r"Starting worker", timeout=30)
    return sup


def test_a_running_task_finishes_and_its_health_is_its_process(dbw, run_supervisor, tmp_path):
    project, env, enqueue, row, notes = dbw
    port = free_port()
    sup = _start(run_supervisor, project, env, budget=6, health_port=port)

    def probed():
        code, body = http_get(port, "/healthz")
        worker = next(p for p in json.loads(body)["processes"] if p["name"] == "worker.1")
        probe = worker.get("probe") or {}  # None until the first probe ran
        return (code, worker) if probe.get("ok") is not None else None

    code, worker = wait_for(probed, 15, "the worker probed")
    assert code == 200 and worker["kind"] == "db-worker", worker
    assert worker["probe"]["ok"] is True and "running" in worker["probe"]["detail"], worker
    task_id = enqueue("short", 1.0)
    wait_for(lambda: "start short" in notes(), 20, "the task to start")
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0, sup.output
    # inside the 6 s budget: the no-escalation assert below proves it on the supervisor's own
    # clock (a bound on this process's clock would fail on a loaded machine, not on a bug)
    assert "done short" in notes()
    assert row(task_id) == ("SUCCESSFUL", "")
    assert "still running" not in sup.output, "no escalation was needed"


def test_a_task_longer_than_the_budget_is_interrupted_and_recorded(dbw, run_supervisor):
    project, env, enqueue, row, notes = dbw
    sup = _start(run_supervisor, project, env, budget=4)
    task_id = enqueue("long", 60)
    wait_for(lambda: "start long" in notes(), 20, "the task to start")
    began = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0, sup.output
    took = time.monotonic() - began
    assert took > 2.0, (took, sup.output)  # it waited; the budget's end is the no-SIGKILL below
    assert "worker.1 still running: sending SIGTERM" in sup.output, sup.output
    assert "SIGKILL" not in sup.output, "the second SIGTERM was enough"
    # recorded, not left RUNNING for ever
    assert row(task_id) == ("FAILED", "builtins.SystemExit")


def test_sigkill_would_leave_the_task_running_for_good(dbw):
    """Why start-all escalates with a second SIGTERM and not SIGKILL."""
    project, env, enqueue, row, notes = dbw
    task_id = enqueue("killed", 60)
    worker = subprocess.Popen([sys.executable, *WORKER.split()[1:]], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "start killed" in notes(), 20, "the task to start")
        worker.kill()
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert row(task_id) == ("RUNNING", "")
