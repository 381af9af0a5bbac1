"""The two existing-project examples adopted as docs/deploy.md says, built from the Dockerfile
`start-all init` wrote (start-all as a wheel next to requirements.txt, as before it is on the
index) and run as the platform does: --memory 512m, PORT, start-all as PID 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, wait_for
from tests.container.conftest import build, podman
from tests.kit import adoption
from tests.kit.conftest import START_ALL, kit_env

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]  # incl. waiting for the lock
MIB = 1024 * 1024


def init(project, kind: str) -> None:
    result = subprocess.run([*START_ALL, "init", kind, "."], cwd=project, env=kit_env(project),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def wheel_into(context) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(context), str(ROOT)],
        check=True, capture_output=True,
    )


def cgroup_value(app, v2: str, v1: str) -> int:
    out = podman("exec", app.name, "sh", "-c",
                 f"cat /sys/fs/cgroup/{v2} 2>/dev/null || cat /sys/fs/cgroup/memory/{v1}").stdout
    return int(out.strip())


def memory_used(app) -> int:
    """The container's own cgroup memory (page cache included), under its 512 MiB limit."""
    assert cgroup_value(app, "memory.max", "memory.limit_in_bytes") == 512 * MIB
    return cgroup_value(app, "memory.current", "memory.usage_in_bytes")


def post(app, path: str, payload: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{app.port}{path}", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_existing_django_project_in_its_image(container_runtime, tmp_path, start_container):
    project = adoption.copy_example("existing-django", tmp_path)
    init(project, "django-qcluster")
    adoption.take_over(project, "Procfile", "Dockerfile")
    adoption.add_writable_dir(project, "var")
    adoption.edit_django_settings(project)
    adoption.require_start_all(project, "django")
    wheel_into(project)
    tag = f"localhost/start-all-test-existing-django:{uuid.uuid4().hex[:8]}"
    build(project, tag)
    try:
        # SQLite in /app/var (the declared writable dir); health GETs the real page too
        app = start_container(tag, {"START_ALL_WEB_PROBE_PATH": "/"})
        report = wait_for(
            lambda: (lambda r: r if r["checks"]["app"]["ok"] else None)(app.wait_ready(180)),
            60, f"the application check on /:\n{app.logs()[-3000:]}",
        )
        assert report["supervisor"]["pid"] == 1
        logs = app.logs()
        assert "adopted the app's own row for weekly-digest" in logs
        code, page = app.get("/")
        assert code == 200, page[:500]
        css = re.search(rb'href="(/static/newsletter/site\.[0-9a-f]+\.css)"', page)
        assert css, page  # collected at build time, with DEBUG off
        code, body = app.get(css.group(1).decode())
        assert code == 200 and b"newsletter-site-css" in body
        post(app, "/subscribe", {"email": "ada@example.com"})
        task = post(app, "/exports", {})["task"]
        status = wait_for(
            lambda: (lambda s: s if s["done"] else None)(app.get_json(f"/exports/{task}")),
            90, f"the export task:\n{app.logs()[-3000:]}",
        )
        assert status["success"] is True and status["result"] == "/app/var/exports/subscribers.csv"
        used = memory_used(app)
        print(f"existing-django container memory.current: {used / MIB:.1f} MiB")
        assert used < 512 * MIB
        assert app.stop() < 9 and app.state("ExitCode") == "0"
    finally:
        podman("rmi", "-f", tag, check=False)


def test_existing_fastapi_project_in_its_image(container_runtime, tmp_path, start_container,
                                               pg_url):
    project = adoption.copy_example("existing-fastapi", tmp_path)
    init(project, "fastapi-native")
    adoption.take_over(project, "Procfile", "Dockerfile")
    adoption.add_writable_dir(project, "reports")
    adoption.require_start_all(project, "fastapi,native")
    adoption.switch_celery_imports(project)
    wheel_into(project)
    tag = f"localhost/start-all-test-existing-fastapi:{uuid.uuid4().hex[:8]}"
    build(project, tag)
    try:
        app = start_container(tag, {"DATABASE_URL": pg_url, "ASGI_APP": "app.main:app",
                                    "WORKER_APP": "app.worker:celery_app"}, host_network=True)
        report = app.wait_ready(180)
        assert report["supervisor"]["pid"] == 1
        assert app.get("/") == (200, b'{"service":"reports"}')
        report_id = post(app, "/reports", {"rows": 3})["id"]
        status = wait_for(
            lambda: (lambda s: s if s["state"] == "SUCCESS" else None)(
                app.get_json(f"/reports/{report_id}")),
            90, f"the report task:\n{app.logs()[-3000:]}",
        )
        assert status["result"]["rows"] == 3
        assert status["result"]["path"].startswith("reports/")  # the declared writable dir
        used = memory_used(app)
        print(f"existing-fastapi container memory.current: {used / MIB:.1f} MiB")
        assert used < 512 * MIB
        assert app.stop() < 9 and app.state("ExitCode") == "0"
    finally:
        podman("rmi", "-f", tag, check=False)
