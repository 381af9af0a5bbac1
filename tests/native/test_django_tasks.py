"""Django's task API (django.tasks on Django 6, the django-tasks backport on 5.2) on the
native queue: a real Django project, `manage.py native_worker`, real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import APPS

from tests.conftest import ROOT, wait_for

DTPROJ = APPS / "dtproj"


class Project:
    def __init__(self, tmp: Path, pg_url: str) -> None:
        self.tmp = tmp
        self.marks = tmp / "marks.jsonl"
        self.env = {**os.environ, "NATIVE_TEST_DB_URL": pg_url, "DT_MARKS": str(self.marks),
                    "PYTHONPATH": f"{DTPROJ}{os.pathsep}{ROOT}",
                    "DJANGO_SETTINGS_MODULE": "dtproj.settings"}
        self.workers: list[tuple[subprocess.Popen, Path]] = []

    def run(self, *args: str) -> dict:
        done = subprocess.run([sys.executable, *args], cwd=DTPROJ, env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def worker(self, *args: str) -> subprocess.Popen:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([sys.executable, "manage.py", "native_worker", *args],
                                    cwd=DTPROJ, env=self.env, stdout=f, stderr=subprocess.STDOUT)
        self.workers.append((proc, log))
        wait_for(lambda: proc.poll() is not None or "ready:" in log.read_text(), 30,
                 "native_worker ready")
        assert proc.poll() is None, log.read_text()
        return proc

    def notes(self, **match) -> list[dict]:
        if not self.marks.exists():
            return []
        rows = [json.loads(line) for line in self.marks.read_text().splitlines()]
        return [r for r in rows if all(r.get(k) == v for k, v in match.items())]

    def close(self) -> None:
        for proc, _log in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def project(db, pg_url, tmp_path):
    p = Project(tmp_path, pg_url)
    yield p
    p.close()


def test_task_api_on_the_native_queue(project):
    before = project.run("dt_check.py", "before")
    assert before["on_commit_before_commit"] == 0, "on_commit ran before the commit"
    assert before["rolled_back_exists"] is False
    assert before["visible_before_commit"] == 0
    assert before["visible_after_commit"] == 1
    assert (before["result_before_commit"], before["result_after_commit"]) == (False, True)
    # task_enqueued for each enqueue that happened (not for the rolled-back on_commit one)
    assert before["enqueued_signals"] == ["add", "record", "record", "record", "record",
                                          "record"]

    worker = project.worker("-c", "1")
    wait_for(lambda: len(project.notes(signal="finished", task="record")) >= 4, 30,
             "the recorded tasks")
    labels = [r["record"] for r in project.notes() if "record" in r]
    # priorities: highest first; the on_commit one (enqueued last, priority 0) after "mid"
    assert labels == ["high", "mid", "on-commit", "low"], labels

    after = project.run("dt_check.py", "after")
    import django

    # Django 6 has the API itself; on 5.2 the django-tasks backport provides it
    assert after["api"] == ("django.tasks.base" if django.VERSION >= (6,) else "django_tasks.base")
    assert after["django"] == django.get_version()
    assert after["enqueue_status"] == "READY"
    assert after["add"] == 5
    assert after["get_result"] == {"status": "SUCCESSFUL", "args": [2, 3], "kwargs": {},
                                   "attempts": 1, "enqueued": True, "started": True,
                                   "finished": True, "order": True}
    assert after["twice"] == 42, "async task through aenqueue"
    assert after["flaky"] == 3 and after["flaky_attempts"] == [1, 2, 3], "retried twice"
    assert after["boom"] == {"status": "FAILED", "attempts": 1, "error": "builtins.ValueError",
                             "traceback": True}
    overrun = after["overrun"]  # @task(soft_time_limit=0.5) sleeping 30 s
    assert overrun["status"] == "FAILED" and overrun["seconds"] < 10, overrun
    assert overrun["error"] == "supervisor.native.exceptions.SoftTimeLimitExceeded"
    assert after["run_after_respected"] is True and after["deferred"] == 30
    assert after["missing"] == "TaskResultDoesNotExist"

    # signals in the worker: started and finished for each run, failure included
    finished = project.notes(signal="finished")
    assert {"task": "boom", "status": "FAILED"} in [
        {"task": r["task"], "status": r["status"]} for r in finished]
    assert all(r["sender"] == "NativeBackend" for r in finished)
    started = {r["id"] for r in project.notes(signal="started")}
    assert {r["id"] for r in finished} <= started
    assert len(project.notes(signal="started", task="flaky")) == 3
    assert len(project.notes(signal="finished", task="flaky")) == 1, "retries are not finishes"
    # the schedule in OPTIONS fires on the worker
    assert project.notes(signal="finished", task="tick")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0


def test_a_task_held_by_a_killed_worker_runs_again(project, db):
    """OPTIONS lease_seconds=2: the reaper of another worker hands the task back."""
    first = project.worker("-c", "1", "--without-beat")
    script = ("import django, os, json; django.setup(); from letters.tasks import sleepy; "
              "print(json.dumps({'id': sleepy.enqueue('k', 1.0).id}))")
    result_id = project.run("-c", script)["id"]
    wait_for(lambda: project.notes(sleepy="k"), 20, "the first run")
    first.kill()
    first.wait()
    started = time.monotonic()
    project.worker("-c", "1", "--without-beat")
    wait_for(lambda: len(project.notes(sleepy="k")) == 2, 30, "the second run")
    assert time.monotonic() - started < 25  # lease_seconds=2 reaped it; 30 s (default) would not
    row = wait_for(lambda: db.execute(
        "SELECT status, recoveries, orphaned FROM start_all.jobs WHERE task_id = %s AND "
        "status = 'SUCCESS'", (result_id,)).fetchone(), 20, "success")
    # its first run had no durable start mark: requeued uncounted (see test_durability.py)
    assert row == ("SUCCESS", 0, 1)


def test_start_all_knows_the_worker_of_these_tasks():
    from supervisor import profiles

    profile = profiles.detect(("python", "manage.py", "native_worker", "-c", "2"))
    assert profile.kind == "native" and profile.worker and profile.quick_signal == "SIGQUIT"


def test_manage_py_check_asks_for_the_worker_app(project, tmp_path):
    (tmp_path / "nowapp.py").write_text(
        "import importlib.util, django\n"
        "from dtproj.settings import *  # noqa\n"
        "INSTALLED_APPS = ['django.contrib.contenttypes', 'letters']\n"
        "if django.VERSION < (6,) and importlib.util.find_spec('django_tasks'):\n"
        "    INSTALLED_APPS.append('django_tasks')  # the backport registers its checks so\n")
    env = {**project.env, "DJANGO_SETTINGS_MODULE": "nowapp",
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{project.env['PYTHONPATH']}"}
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=DTPROJ, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "start_all.W001" in done.stderr + done.stdout, done.stdout + done.stderr
    assert "'supervisor.native.django' is not in INSTALLED_APPS" in done.stderr + done.stdout
    ok = subprocess.run([sys.executable, "manage.py", "check"], cwd=DTPROJ, env=project.env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "start_all.W001" not in ok.stderr + ok.stdout
