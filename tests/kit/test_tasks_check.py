"""`start-all check` on a project whose worker is django-tasks-db's db_worker."""

from __future__ import annotations

from tests.kit.conftest import kit_env, start_all
from tests.kit.test_check import lines, project_with

SETTINGS = """
SECRET_KEY = "x"
DEBUG = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django_tasks_db"]
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
"""


def test_db_worker_explained_with_what_the_native_backend_gains(tmp_path):
    project = project_with(tmp_path, SETTINGS, """\
        web: gunicorn mysite.wsgi
        tasks: python manage.py db_worker --queue-name '*'
    """)
    result = start_all(project, "check", ".", env=kit_env(project, START_ALL_STOP_TIMEOUT="10"))
    assert "Procfile: web (gunicorn), tasks (db-worker)" in result.stdout, result.stdout
    oks = [line for line in lines(result, "ok") if line.startswith("ok: tasks:")]
    assert oks == ["ok: tasks: db_worker stops on SIGTERM once its running task ends; a task "
                   "still running after 6.0 s of the 10 s stop budget gets a second SIGTERM, "
                   "which interrupts it and records it FAILED"], result.stdout
    warnings = [line for line in lines(result, "warning") if line.startswith("warning: tasks:")]
    assert len(warnings) == 1, result.stdout
    for gain in ("no retries", "OOM kill", "one task at a time", "no periodic tasks",
                 "supervisor.native.django_tasks.NativeBackend", "manage.py native_worker"):
        assert gain in warnings[0]


def test_native_worker_gets_no_db_worker_advice(tmp_path):
    project = project_with(tmp_path, SETTINGS, """\
        web: gunicorn mysite.wsgi
        worker: python manage.py native_worker
    """)
    result = start_all(project, "check", ".")
    assert "worker (native)" in result.stdout, result.stdout
    assert "db_worker" not in result.stdout
