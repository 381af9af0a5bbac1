"""`start-all check`: findings on real project directories, and the documented exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from tests.kit.conftest import kit_env, start_all

BAD_SETTINGS = """
SECRET_KEY = "x"
DEBUG = False
ALLOWED_HOSTS = []
INSTALLED_APPS = ["django.contrib.contenttypes", "django_q"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "HOST": "db", "PORT": "5432"}}
Q_CLUSTER = {"name": "x", "orm": "default", "timeout": 300, "retry": 60}
CELERY_BROKER_URL = "redis://localhost:6379/0"
"""


def project_with(tmp_path, settings: str, procfile: str, **files: str):
    project = tmp_path / "proj"
    (project / "mysite").mkdir(parents=True)
    (project / "mysite" / "__init__.py").write_text("")
    (project / "mysite" / "settings.py").write_text(textwrap.dedent(settings))
    (project / "manage.py").write_text(
        'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")\n'
    )
    (project / "Procfile").write_text(textwrap.dedent(procfile))
    for name, text in files.items():
        (project / name.replace("__", ".")).write_text(textwrap.dedent(text))
    return project


def findings(result) -> list[str]:
    """Each finding with its `fix:` line (if any) joined on."""
    found: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith("    fix: ") and found:
            found[-1] += "\n" + line
        else:
            found.append(line)
    return found


def lines(result, severity: str) -> list[str]:
    return [f for f in findings(result) if f.startswith(f"{severity}: ")]


def test_the_example_is_clean(example_project):
    result = start_all(example_project, "check", ".")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "0 error(s), 0 warning(s)"
    assert "ok: worker kind: qcluster (worker)" in result.stdout
    assert "ok: START_ALL_SCHEDULES: 1 valid entries" in result.stdout


def test_a_project_with_every_mistake(tmp_path):
    project = project_with(
        tmp_path,
        BAD_SETTINGS,
        """\
        release: python manage.py migrate
        web: gunicorn mysite.wsgi -c gunicorn.conf.py
        worker: python manage.py qcluster
        """,
        gunicorn__conf__py="import multiprocessing\nworkers = multiprocessing.cpu_count() * 2\n",
    )
    result = start_all(project, "check", ".")
    assert result.returncode == 1
    errors, warnings = lines(result, "error"), lines(result, "warning")
    assert any("Celery and django-q2 are both configured" in e for e in errors)
    assert any("timeout (300) >= retry (60)" in e for e in errors)
    assert any("ALLOWED_HOSTS is empty" in e for e in errors)
    assert any("Q_CLUSTER has no 'workers'" in w and "cpu_count()" in w for w in warnings)
    assert any("LocMemCache is per process" in w for w in warnings)
    assert any("CONN_MAX_AGE is 0 with django-q2" in w for w in warnings)
    assert any("gunicorn workers derived from cpu_count()" in w for w in warnings)
    assert any("migrations without a lock" in w for w in warnings)
    assert result.stdout.splitlines()[-1] == f"{len(errors)} error(s), {len(warnings)} warning(s)"


def test_qcluster_and_celery_worker_in_one_procfile(tmp_path):
    project = project_with(
        tmp_path,
        'SECRET_KEY = "x"\nALLOWED_HOSTS = ["*"]\n',
        """\
        web: gunicorn mysite.wsgi
        worker: python manage.py qcluster
        celery: celery -A mysite worker
        beat: celery -A mysite beat
        """,
    )
    result = start_all(project, "check", ".")
    assert result.returncode == 1
    assert any("both a django-q2 qcluster and a celery worker" in e for e in lines(result, "error"))


def test_transaction_pooler_where_locks_or_listen_are_needed(example_project):
    procfile = example_project / "Procfile"
    procfile.write_text(procfile.read_text() + "jobs: python manage.py native_worker\n")
    url = "postgresql://postgres.ref:secret@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
    result = start_all(example_project, "check", env=kit_env(example_project, DATABASE_URL=url))
    assert result.returncode == 1
    errors = lines(result, "error")
    assert any("`start-all migrate` needs a session advisory lock" in e for e in errors)
    assert any("native worker (jobs) needs LISTEN/NOTIFY" in e for e in errors)
    assert "secret" not in result.stdout  # credentials are never printed


def test_transaction_pooler_settings_without_what_it_requires(tmp_path):
    settings = """\
    SECRET_KEY = "x"
    ALLOWED_HOSTS = ["*"]
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "HOST": "h",
                             "PORT": 6543, "CONN_MAX_AGE": 60}}
    """
    project = project_with(tmp_path, settings, "web: gunicorn mysite.wsgi\n")
    result = start_all(project, "check")
    assert result.returncode == 1
    assert any("DISABLE_SERVER_SIDE_CURSORS" in e for e in lines(result, "error"))


def test_health_middleware_not_first_with_restricted_hosts(tmp_path):
    settings = """\
    SECRET_KEY = "x"
    ALLOWED_HOSTS = ["myapp.koyeb.app"]
    MIDDLEWARE = ["django.middleware.common.CommonMiddleware",
                  "supervisor.contrib.django.HealthMiddleware"]
    """
    project = project_with(tmp_path, settings, "web: gunicorn mysite.wsgi\n")
    result = start_all(project, "check", "--strict")
    assert result.returncode == 1  # a warning, which --strict turns into a failure
    assert any(
        "put supervisor.contrib.django.HealthMiddleware first" in w
        for w in lines(result, "warning")
    )
    assert start_all(project, "check").returncode == 0


def test_broken_procfile_and_settings_are_reported_not_raised(tmp_path):
    project = project_with(tmp_path, "import nowhere_to_be_found\n", "web gunicorn app\n")
    result = start_all(project, "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    errors = lines(result, "error")
    assert any("Procfile:1: expected 'name: command'" in e for e in errors)
    assert any("cannot import settings mysite.settings: ModuleNotFoundError" in e for e in errors)


def test_bad_directory_is_exit_2(tmp_path):
    result = start_all(tmp_path, "check", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"start-all check: {tmp_path / 'missing'} is not a directory"


def test_debug_sqlite_options_on_old_django_and_static_files_without_a_root(tmp_path):
    settings = """\
    SECRET_KEY = "x"
    DEBUG = True
    ALLOWED_HOSTS = ["*"]
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3",
                             "OPTIONS": {"transaction_mode": "IMMEDIATE"}}}
    """
    project = project_with(tmp_path, settings, "web: gunicorn mysite.wsgi\n",
                           requirements__txt="Django==4.2.16\n")
    result = start_all(project, "check")
    assert result.returncode == 1
    errors = lines(result, "error")
    assert any(e.startswith("error: mysite/settings.py:2: DEBUG is True") for e in errors)
    sqlite = next(e for e in errors if "need Django 5.1" in e)
    assert sqlite.startswith("error: mysite/settings.py:4: SQLite OPTIONS ['transaction_mode']")
    assert "Django 4.2.16 (requirements.txt:1)" in sqlite

    static = project_with(tmp_path / "s", """\
    SECRET_KEY = "x"
    ALLOWED_HOSTS = ["*"]
    INSTALLED_APPS = ["django.contrib.staticfiles"]
    STATIC_URL = "/static/"
    """, "web: gunicorn mysite.wsgi\n", Dockerfile="FROM python:3.12-slim\nCOPY . .\n")
    result = start_all(static, "check")
    errors, warnings = lines(result, "error"), lines(result, "warning")
    assert any(e.startswith("error: mysite/settings.py:4: STATIC_ROOT is not set") for e in errors)
    assert any(w.startswith("warning: Dockerfile: the Dockerfile never runs collectstatic: every "
                            "static file is a 404") for w in warnings)
    assert any("nothing serves STATIC_URL" in w for w in warnings)


def test_schedule_rows_that_run_twice_on_postgresql_then_adopted(example_project, pg_url):
    env = kit_env(example_project, DATABASE_URL=pg_url)
    assert start_all(example_project, "migrate", "--sync-schedules", env=env).returncode == 0
    made = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c",
         "from django_q.models import Schedule\nSchedule.objects.create(name='mine', "
         "func='bookings.tasks.cleanup_old_records', schedule_type='D')"],
        cwd=example_project, env=env, capture_output=True, text=True, timeout=60,
    )
    assert made.returncode == 0, made.stderr
    result = start_all(example_project, "check", env=env)
    assert result.returncode == 1
    twice = next(e for e in lines(result, "error") if "Schedule rows run" in e)
    assert re.match(r"error: demo/settings\.py:\d+: 2 Schedule rows run "
                    r"bookings\.tasks\.cleanup_old_records \('start-all:daily-cleanup', 'mine'\)",
                    twice)
    assert "fix: `start-all schedules sync --adopt`" in twice
    assert start_all(example_project, "schedules", "sync", "--adopt", env=env).returncode == 0
    after = start_all(example_project, "check", env=env)
    assert after.returncode == 0, after.stdout
    assert "ok: database: queue and 1 Schedule row(s) consistent" in after.stdout


def test_celery_imports_on_the_native_variant_only_where_they_run(example_project):
    (example_project / "Procfile.native").replace(example_project / "Procfile")
    env = kit_env(example_project, TASK_QUEUE="native")
    result = start_all(example_project, "check", env=env)
    # demo/celery.py is the Celery variant's app, imported only under TASK_QUEUE == "celery"
    assert result.returncode == 0, result.stdout
    assert "celery" not in "".join(lines(result, "error") + lines(result, "warning"))
    tasks = example_project / "bookings" / "tasks.py"
    tasks.write_text("from celery.result import AsyncResult  # noqa\n" + tasks.read_text())
    result = start_all(example_project, "check", env=env)
    assert result.returncode == 1
    assert any(e.startswith("error: bookings/tasks.py:1: `from celery.result import AsyncResult`")
               for e in lines(result, "error")), result.stdout
