"""The adoption path of docs/deploy.md on the two existing-project examples, outside a
container (the images: tests/container/test_existing_images.py): init keeps their files,
check finds what would break and then nothing false, the app's own Q_CLUSTER survives, a real
page with its static file, a task through a view, the app's own Schedule row adopted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

from tests.conftest import free_port, http_get, port_open, wait_for
from tests.kit import adoption
from tests.kit.conftest import kit_env, start_all
from tests.kit.test_check import lines


def shell(project, env, code: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-startup", "-v", "0", "-c", code],
        cwd=project, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def post(port: int, path: str, payload: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_init_on_the_django_project_keeps_its_files(tmp_path):
    project = adoption.copy_example("existing-django", tmp_path)
    own = {name: (project / name).read_bytes() for name in ("Procfile", "Dockerfile",
                                                           ".dockerignore")}
    result = start_all(project, "init", "django-qcluster")
    assert result.returncode == 0, result.stderr
    for name, before in own.items():
        assert (project / name).read_bytes() == before  # kept as they were
        assert (project / f"{name}.start-all").is_file()
    assert (project / "gunicorn.conf.py").is_file()  # what was missing is written
    # the app creates its own Schedule row (a data migration): the release adopts it
    assert "release: start-all migrate --sync-schedules --adopt" in (
        project / "Procfile.start-all").read_text()
    steps = result.stdout.split("next steps:")[1]
    assert "at the end of newsletter_site/settings.py" in steps
    assert "start_all_settings(globals())" in steps
    assert "review `diff -u Dockerfile Dockerfile.start-all`" in steps


def test_check_before_adoption_names_what_breaks(tmp_path):
    project = adoption.copy_example("existing-django", tmp_path)
    result = start_all(project, "check")
    errors, warnings = lines(result, "error"), lines(result, "warning")
    assert result.returncode == 1
    # the app's own Dockerfile: hashed static names without collectstatic -> 500s
    assert any(e.startswith("error: Dockerfile: the Dockerfile never runs collectstatic: every "
                            "page using {% static %} returns 500") for e in errors), errors
    middleware = next(w for w in warnings if "HealthMiddleware is not in MIDDLEWARE" in w)
    assert re.search(r"newsletter_site/settings\.py:\d+: ", middleware)
    assert "fix: call start_all_settings(globals())" in middleware


def test_adopted_django_project_keeps_its_q_cluster_and_runs(tmp_path):
    project = adoption.copy_example("existing-django", tmp_path)
    assert start_all(project, "init", "django-qcluster").returncode == 0
    adoption.take_over(project, "Procfile", "Dockerfile")
    adoption.add_writable_dir(project, "var")
    adoption.edit_django_settings(project)
    adoption.require_start_all(project, "django")
    env = kit_env(project)

    result = start_all(project, "check", env=env)
    assert result.returncode == 0, result.stdout
    warnings = lines(result, "warning")
    # the one true alarm: 600 s tasks, an 8 s stop budget and max_attempts 1
    assert len(warnings) == 1, result.stdout
    assert "timeout 600 s is beyond the 8 s stop budget" in warnings[0]
    assert "never run again" in warnings[0]
    assert re.search(r"newsletter_site/settings\.py:\d+: ", warnings[0])
    assert "ok: start_all_settings() sets MIDDLEWARE: supervisor.contrib.django." \
           "HealthMiddleware added first" in result.stdout
    assert "Q_CLUSTER['name']" not in result.stdout and "Q_CLUSTER['timeout']" not in (
        result.stdout)

    # the app's values kept; only the sizing start-all passes to the worker changes
    sized = {**env, "START_ALL_WORKER_CONCURRENCY": "2", "START_ALL_WORKER_MAX_RSS_MB": "140"}
    q = json.loads(shell(project, sized, "import json\nfrom django.conf import settings\n"
                         "print(json.dumps(settings.Q_CLUSTER))"))
    assert (q["name"], q["timeout"], q["retry"], q["max_attempts"]) == ("newsletter", 600, 660, 1)
    assert q["error_reporter"] == {"sentry": {"dsn": ""}} and q["save_limit"] == 100
    assert (q["workers"], q["queue_limit"], q["max_rss"]) == (2, 4, 140 * 1024)
    dry = start_all(project, "--dry-run", env=env)  # with the worker's sizing, as it will run
    assert dry.returncode == 0, dry.stderr
    assert "django settings: start_all_settings() changes:" in dry.stdout
    assert re.search(r"Q_CLUSTER\['queue_limit'\] = \d+ \(start-all sizing; was unset\)",
                     dry.stdout), dry.stdout

    # the Dockerfile's build step, here: static files collected with DEBUG off
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=project, env={**env, "DEBUG": "0"}, capture_output=True, text=True, timeout=120,
    )
    assert collect.returncode == 0, collect.stderr

    port = free_port()
    log = project / "start-all.log"
    with open(log, "wb") as out:
        supervisor = subprocess.Popen(
            [*adoption_start_all()], cwd=project, stdout=out, stderr=subprocess.STDOUT,
            env={**env, "PORT": str(port), "START_ALL_HEALTH_PORT": str(free_port())},
        )
    try:
        def ready():
            if supervisor.poll() is not None or not port_open(port):
                return False
            code, body = http_get(port, "/healthz")
            return code == 200 and json.loads(body)["ready"]

        wait_for(ready, 120, f"the adopted app to be ready:\n{log.read_text()[-3000:]}")
        text = log.read_text()
        assert "adopted the app's own row for weekly-digest (row 'weekly digest'" in text
        code, page = http_get(port, "/")
        assert code == 200, page[:500]
        css = re.search(rb'href="(/static/newsletter/site\.[0-9a-f]+\.css)"', page)
        assert css, page
        code, body = http_get(port, css.group(1).decode())
        assert code == 200 and b"newsletter-site-css" in body
        post(port, "/subscribe", {"email": "ada@example.com"})
        task = post(port, "/exports", {})["task"]
        status = wait_for(
            lambda: (lambda s: s if s["done"] else None)(
                json.loads(http_get(port, f"/exports/{task}")[1])),
            60, "the export task to run in the worker",
        )
        assert status["success"] is True, status
        assert "ada@example.com" in open(status["result"]).read()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()

    after = start_all(project, "check", env=env)
    assert after.returncode == 0, after.stdout
    assert "ok: database: queue and 1 Schedule row(s) consistent" in after.stdout


def adoption_start_all() -> list[str]:
    from tests.conftest import START_ALL

    return START_ALL


OLD_TEMPLATE = '''
Q_CLUSTER = {"name": "app", "orm": "default", "timeout": 120, "retry": 180, "max_attempts": 3}
'''


def test_a_replaced_q_cluster_and_its_orphaned_tasks_are_errors(tmp_path):
    project = adoption.copy_example("existing-django", tmp_path)
    env = kit_env(project)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=project, env=env,
                   check=True, timeout=120)
    shell(project, env, "from django_q.tasks import async_task\n"
          "async_task('newsletter.tasks.send_digest')")  # queued under 'newsletter'
    # what the old star-import template did: a second Q_CLUSTER replacing the app's own
    (project / "newsletter_site" / "tuned.py").write_text(OLD_TEMPLATE)
    settings = project / "newsletter_site" / "settings.py"
    settings.write_text(settings.read_text() + "from .tuned import *  # noqa\n")
    result = start_all(project, "check", env=env)
    assert result.returncode == 1
    errors = lines(result, "error")
    replaced = next(e for e in errors if "is replaced by" in e)
    assert re.match(r"error: newsletter_site/tuned\.py:2: Q_CLUSTER of "
                    r"newsletter_site/settings\.py:\d+ is replaced", replaced)
    for change in ("name 'newsletter' -> 'app'", "timeout 600 -> 120", "max_attempts 1 -> 3"):
        assert change in replaced
    assert "tasks queued under 'newsletter' are never run" in replaced
    assert any("1 task(s) queued under cluster name 'newsletter', which no qcluster reads"
               in e for e in errors), errors


FASTAPI_ENV = {"ASGI_APP": "app.main:app", "WORKER_APP": "app.worker:celery_app"}


def adopted_fastapi(tmp_path):
    """docs/deploy.md for the FastAPI + Celery app, up to (not including) the import switch."""
    project = adoption.copy_example("existing-fastapi", tmp_path)
    result = start_all(project, "init", "fastapi-native")
    assert result.returncode == 0, result.stderr
    procfile = (project / "Procfile.start-all").read_text()
    assert not any(line.startswith("release:") for line in procfile.splitlines())  # no Alembic
    adoption.take_over(project, "Procfile", "Dockerfile")
    adoption.add_writable_dir(project, "reports")
    adoption.require_start_all(project, "fastapi,native")
    return project


def test_fastapi_celery_imports_left_under_the_native_worker_are_errors(tmp_path, pg_url):
    project = adopted_fastapi(tmp_path)
    env = kit_env(project, DATABASE_URL=pg_url, **FASTAPI_ENV)
    result = start_all(project, "check", env=env)
    assert result.returncode == 1
    errors = lines(result, "error")
    result_import = next(e for e in errors if "celery.result import AsyncResult" in e)
    assert result_import.startswith("error: app/main.py:3: ")
    assert "fix: `from supervisor.native import AsyncResult`" in result_import
    assert any(e.startswith("error: app/worker.py:5: `from celery import Celery`")
               and "fix: `from supervisor.native import Celery`" in e for e in errors), errors
    health = next(w for w in lines(result, "warning") if "no health middleware" in w)
    assert health.startswith("warning: app/main.py: no health middleware in app.main:app")

    adoption.switch_celery_imports(project)
    clean = start_all(project, "check", "--strict", env=env)
    assert clean.returncode == 0, clean.stdout
    assert "ok: health on $PORT through supervisor.contrib.asgi (app.main:app)" in clean.stdout


def test_fastapi_old_uvicorn_and_assumed_alembic_are_errors(tmp_path):
    project = adopted_fastapi(tmp_path)
    adoption.switch_celery_imports(project)
    (project / "requirements.txt").write_text("fastapi\nuvicorn==0.23.2\n")
    procfile = project / "Procfile"
    release = "release: start-all migrate -- alembic upgrade head\n"
    procfile.write_text(release + procfile.read_text())
    result = start_all(project, "check", env=kit_env(project, **FASTAPI_ENV))
    assert result.returncode == 1
    errors = lines(result, "error")
    uvicorn = next(e for e in errors if "has no --timeout-graceful-shutdown" in e)
    assert re.match(r"error: Procfile:\d+: uvicorn 0\.23\.2 \(requirements\.txt:2\)", uvicorn)
    alembic = next(e for e in errors if "runs Alembic" in e)
    assert alembic.startswith("error: Procfile:1: release: runs Alembic but no alembic.ini")


def test_adopted_fastapi_app_runs_a_task_on_the_native_worker(tmp_path, pg_url):
    project = adopted_fastapi(tmp_path)
    adoption.switch_celery_imports(project)
    port = free_port()
    env = kit_env(project, DATABASE_URL=pg_url, PORT=str(port),
                  START_ALL_HEALTH_PORT=str(free_port()), REPORTS_DIR=str(project / "reports"),
                  **FASTAPI_ENV)
    log = project / "start-all.log"
    with open(log, "wb") as out:
        supervisor = subprocess.Popen(adoption_start_all(), cwd=project, env=env, stdout=out,
                                      stderr=subprocess.STDOUT)
    try:
        def ready():
            if supervisor.poll() is not None or not port_open(port):
                return False
            code, body = http_get(port, "/healthz")
            return code == 200 and json.loads(body)["ready"]

        wait_for(ready, 120, f"the adopted FastAPI app to be ready:\n{log.read_text()[-3000:]}")
        assert http_get(port, "/") == (200, b'{"service":"reports"}')
        report = post(port, "/reports", {"rows": 3})["id"]

        def finished():
            status = json.loads(http_get(port, f"/reports/{report}")[1])
            return status if status["state"] == "SUCCESS" else None

        status = wait_for(finished, 60, f"the report task:\n{log.read_text()[-3000:]}")
        assert status["result"]["rows"] == 3
        assert open(status["result"]["path"]).read() == "row 0\nrow 1\nrow 2\n"
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
