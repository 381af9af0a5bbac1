"""examples/koyeb/Dockerfile is templates/Dockerfile unchanged; build it as a user would (with
start-all as a wheel next to requirements.txt) and run the example from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, wait_for
from tests.container.conftest import build, podman

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]  # incl. waiting for the lock


def test_example_built_from_the_template_dockerfile(container_runtime, tmp_path, start_container):
    example = ROOT / "examples" / "koyeb"
    assert (example / "Dockerfile").read_bytes() == (ROOT / "templates" / "Dockerfile").read_bytes()
    context = tmp_path / "koyeb"
    shutil.copytree(example, context, ignore=shutil.ignore_patterns("data", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(context), str(ROOT)],
        check=True,
        capture_output=True,
    )
    tag = f"localhost/start-all-test-koyeb:{uuid.uuid4().hex[:8]}"
    build(context, tag)
    try:
        app = start_container(tag)
        report = app.wait_ready()
        assert report["supervisor"]["pid"] == 1
        inspect = podman("image", "inspect", "-f", "{{.Config.User}} {{.Config.Entrypoint}}", tag)
        assert inspect.stdout.split()[0] == "10001"  # not root
        assert "start-all" in inspect.stdout
        booking = app.post_json("/bookings", {"name": "Cy", "email": "cy@example.com"})
        wait_for(
            lambda: app.get_json(f"/bookings/{booking['id']}")["confirmed_at"],
            60,
            "the booking to be confirmed",
        )
        assert app.stop() < 9 and app.state("ExitCode") == "0"
    finally:
        podman("rmi", "-f", tag, check=False)
