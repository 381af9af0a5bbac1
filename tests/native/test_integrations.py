"""The native queue used by a Django project and by a FastAPI app, and run by start-all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import APPS, job_row, lines

from tests.conftest import ROOT, VENV_ENV, wait_for

DJPROJ = APPS / "djproj"


MANAGE_PY = ["manage.py", "native_worker", "-c", "2"]
DASH_M = ["-m", "supervisor.native", "worker", "-A", "djproj.celery:app", "-c", "2"]


@pytest.mark.parametrize(("settings", "command"), [
    ("djproj.settings", MANAGE_PY),
    ("djproj.settings_sqlite", MANAGE_PY),
    ("djproj.settings", DASH_M),
])
def test_django_project(db, pg_url, start_worker, tmp_path, settings, command):
    """Django on PostgreSQL (the enqueue joins Django's transaction on its connection) and
    Django on SQLite with the queue on PostgreSQL (the enqueue waits for on_commit); the worker
    as a management command or as `python -m supervisor.native worker -A`."""
    worker_log = tmp_path / "dj-worker.log"
    env = {**os.environ, "NATIVE_TEST_DB_URL": pg_url, "DJANGO_SQLITE_DIR": str(tmp_path),
           "PYTHONPATH": f"{DJPROJ}{os.pathsep}{ROOT}", "DJANGO_SETTINGS_MODULE": settings}
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen([sys.executable, *command],
                                  cwd=DJPROJ, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "ready:" in worker_log.read_text(), 30,
                 "manage.py native_worker ready")
        assert "queues django-q" in worker_log.read_text(), "CELERY_* settings were read"
        done = subprocess.run([sys.executable, "enqueue_check.py"], cwd=DJPROJ, env=env,
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out == {
            "queue_setting": "django-q",
            "plain": 42,
            "rolled_back_state": "PENDING",
            "rolled_back_row": False,
            "visible_before_commit": False,
            "visible_after_commit": True,
            "committed_result": 10,
        }
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_fastapi_app(db, pg_url, start_worker, monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    import fastapp
    from fastapi.testclient import TestClient

    start_worker("-c", "1", "-Q", "fastapi", app="fastapp:celery")
    client = TestClient(fastapp.api)
    task_id = client.post("/slugs", params={"title": "Hello Native World"}).json()["id"]

    def finished():
        body = client.get(f"/slugs/{task_id}").json()
        return body if body["state"] == "SUCCESS" else None

    assert wait_for(finished, 20, "slug task")["result"] == "hello-native-world"
    assert client.get("/slugs/unknown").json() == {"state": "PENDING", "result": None}
    fastapp.celery.close()


def test_under_the_supervisor_sigterm_exits_0_and_loses_nothing(db, pg_url, qapp,
                                                                run_supervisor, tmp_path):
    marks = tmp_path / "sup"
    procfile = f"worker: {sys.executable} -m supervisor.native worker -A qtasks:app -c 1\n"
    env = {**VENV_ENV, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}", "NATIVE_TEST_DB_URL": pg_url,
           "START_ALL_STOP_TIMEOUT": "20"}
    sup = run_supervisor(procfile, env=env)
    sup.wait_line(r"ready:", timeout=30)
    running = qapp.hold.delay("running", str(marks), 1.0)
    wait_for(lambda: any("start running" in line for line in lines(marks)), 15, "task start")
    queued = [qapp.mark.delay(f"q{i}", str(marks)) for i in range(5)]
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0, sup.output
    assert "stopped cleanly" in sup.output, sup.output
    assert running.get(timeout=1) == "running"
    statuses = {job_row(db, r.id)["status"] for r in queued}
    assert statuses <= {"SUCCESS", "PENDING"}, statuses  # done, or back in the queue
    assert db.execute("SELECT count(*) FROM start_all.jobs WHERE status = 'RESERVED'"
                      ).fetchone()[0] == 0
