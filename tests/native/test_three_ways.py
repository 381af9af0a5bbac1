"""The same task three ways (docs/native-worker.md): Celery's API and django.tasks on the
native queue, django-q2's async_task, all three workers under one start-all, with the
django-tasks template's TASKS settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

from conftest import APPS

from tests.conftest import ROOT, VENV_ENV, wait_for

PROJECT = APPS / "threeways"
TEMPLATE = ROOT / "supervisor" / "kit" / "templates" / "start_all_tasks.py"
PROCFILE = """\
release: python manage.py migrate -v0
celery: python manage.py native_worker -A threeways.celery:app -c 2
tasks: python manage.py native_worker -c 2
q: python manage.py qcluster
"""


def test_the_same_task_three_ways_under_start_all(db, pg_url, tmp_path, run_supervisor):
    project = shutil.copytree(PROJECT, tmp_path / "threeways")
    shutil.copy(TEMPLATE, project / "threeways" / "start_all_tasks.py")
    env = {**VENV_ENV, "NATIVE_TEST_DB_URL": pg_url,
           "PYTHONPATH": f"{project}{os.pathsep}{ROOT}",
           "DJANGO_SETTINGS_MODULE": "threeways.settings", "START_ALL_STOP_TIMEOUT": "8"}
    sup = run_supervisor(PROCFILE, env=env, cwd=project)
    sup.wait_line(r"celery\.1 .*ready:", timeout=60)
    sup.wait_line(r"tasks\.1 .*ready:", timeout=30)
    sup.wait_line(r"q\.1 .*(Q Cluster .* running|Process-.* ready for work)", timeout=30)
    done = subprocess.run([sys.executable, "enqueue_three.py"], cwd=project,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr + sup.output
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "celery": "booking 1 confirmed",
        "django_tasks": "booking 2 confirmed",
        "django_q2": "booking 3 confirmed",
    }
    assert "queues celery" in sup.output and "queues default" in sup.output, sup.output
    sup.signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output


def test_the_docs_show_the_code_that_runs():
    """Every line of the page's three-ways code blocks is in the tested files."""
    page = (ROOT / "docs" / "native-worker.md").read_text()
    section = page.split("## The same task three ways", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 3, "one block per way"
    tested = "".join((PROJECT / name).read_text()
                     for name in ("booking/tasks.py", "enqueue_three.py"))
    tested += TEMPLATE.read_text()
    for block in blocks:
        for line in block.splitlines():
            code = line.split("#", 1)[0].strip()
            if code and code not in ("...",):
                assert code in tested, f"docs line not in the tested code: {line!r}"


def test_one_native_worker_runs_both_apis_with_the_app_option(db, pg_url, tmp_path):
    """OPTIONS "app": the TASKS backend puts its tasks in the Celery-API app."""
    project = shutil.copytree(PROJECT, tmp_path / "threeways")
    shutil.copy(TEMPLATE, project / "threeways" / "start_all_tasks.py")
    env = {**os.environ, **VENV_ENV, "NATIVE_TEST_DB_URL": pg_url,
           "PYTHONPATH": f"{project}{os.pathsep}{ROOT}",
           "DJANGO_SETTINGS_MODULE": "threeways.settings_shared"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "native_worker", "-A", "threeways.celery:app"],
            cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "ready:" in log.read_text() or worker.poll() is not None, 30, "ready")
        assert "queues celery,default" in log.read_text(), log.read_text()
        code = (
            "import django, json, time; django.setup(); import threeways.celery; "
            "from booking.tasks import confirm_booking, confirm_booking_task; "
            "r = confirm_booking_task.enqueue(5); c = confirm_booking.delay(6).get(timeout=30); "
            "deadline = time.monotonic() + 30\n"
            "while not r.is_finished and time.monotonic() < deadline:\n"
            "    time.sleep(0.05); r.refresh()\n"
            "print(json.dumps([c, r.return_value]))")
        done = subprocess.run([sys.executable, "-c", code], cwd=project, env=env,
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr + log.read_text()
        assert json.loads(done.stdout.splitlines()[-1]) == ["booking 6 confirmed",
                                                            "booking 5 confirmed"]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
