"""podman helpers for the container tests: one demo image per session, containers cleaned up."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, http_get, need, wait_for
from tests.kit.conftest import pg_url  # noqa: F401 - a fresh PostgreSQL database per test

RUNTIME_SCRIPT = ROOT.parent / "shared" / "tools" / "container-runtime.sh"
LOCK_PATH = Path(tempfile.gettempdir()) / "start-all-container-tests.lock"


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def _prepare_runtime() -> bool:
    """podman configured as the shared recipe does (scripts/test.sh already did it in CI)."""
    if "CONTAINERS_CONF" not in os.environ and RUNTIME_SCRIPT.is_file():
        out = subprocess.run(
            ["bash", str(RUNTIME_SCRIPT)], capture_output=True, text=True, timeout=600
        ).stdout
        for line in out.splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export ") :].split("=", 1)
                os.environ[key] = value
    return shutil.which("podman") is not None


def build(context: Path, tag: str, dockerfile: Path | None = None) -> None:
    args = ["build", "--format", "docker", "-t", tag]
    if dockerfile is not None:
        args += ["-f", str(dockerfile)]
    podman(*args, str(context), timeout=900)


def dangling_images() -> set[str]:
    return set(podman("images", "-q", "--filter", "dangling=true", check=False).stdout.split())


@pytest.fixture(scope="session")
def container_runtime() -> None:
    need(_prepare_runtime(), "podman (../shared/tools/container-runtime.sh)")
    with open(LOCK_PATH, "w") as lock:
        # one container session at a time on this machine (bench_memory.py takes it too), so
        # one session's clean-up never touches another's build
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = dangling_images()
        yield
        # our builds' untagged stage images (each ~500 MB); no -f: nothing in use is removed
        new = dangling_images() - before
        if new:
            podman("rmi", *sorted(new), check=False)


@pytest.fixture(scope="session")
def demo_image(container_runtime) -> str:
    """The root Dockerfile (the booking demo), built once for all container tests."""
    tag = f"localhost/start-all-test-demo:{uuid.uuid4().hex[:8]}"
    build(ROOT, tag)
    yield tag
    podman("rmi", "-f", tag, check=False)


class Container:
    """A container started with the platform's settings: 512 MB, PORT=8000 published."""

    def __init__(self, image: str, env: dict[str, str] | None = None, host_network=False) -> None:
        self.name = f"start-all-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        args = ["run", "-d", "--name", self.name, "--memory", "512m"]
        if host_network:  # reaches the host's PostgreSQL; ports are the host's own
            args += ["--network", "host", "-e", f"PORT={self.port}"]
            self.health_port = free_port()  # start-all's own health server
            args += ["-e", f"START_ALL_HEALTH_PORT={self.health_port}"]
        else:
            args += ["-p", f"127.0.0.1:{self.port}:8000", "-e", "PORT=8000"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        podman(*args, image)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            return http_get(self.port, path, timeout=5)
        except OSError:
            return 0, b""

    def get_json(self, path: str) -> dict:
        code, body = self.get(path)
        assert code == 200, f"GET {path}: {code} {body[:300]!r}"
        return json.loads(body)

    def post_json(self, path: str, payload: dict) -> dict:
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
            return json.loads(response.read())

    def health(self) -> dict | None:
        code, body = self.get("/healthz")
        if code not in (200, 503):
            return None
        return {"code": code, **json.loads(body)}

    def wait_ready(self, timeout: float = 90) -> dict:
        def ready():
            report = self.health()
            return report if report and report["code"] == 200 and report["ready"] else None

        return wait_for(ready, timeout, f"{self.name} ready on /healthz\n{self.logs()[-3000:]}")

    def process(self, name: str) -> dict:
        report = self.health()
        assert report, "no health answer"
        return next(p for p in report["processes"] if p["name"] == name)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self, field: str) -> str:
        return podman("inspect", "-f", "{{.State." + field + "}}", self.name).stdout.strip()

    def stop(self, grace: int = 10) -> float:
        """`podman stop -t grace`; seconds from the stop request until the container ended
        (its own FinishedAt, free of podman's bookkeeping on a busy machine)."""
        started = time.time()
        podman("stop", "-t", str(grace), self.name, timeout=grace + 60)
        finished = int(self.state("FinishedAt.UnixNano")) / 1e9
        return finished - started

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture
def start_container():
    started: list[Container] = []

    def start(image: str, env: dict[str, str] | None = None, host_network=False) -> Container:
        container = Container(image, env, host_network)
        started.append(container)
        return container

    yield start
    for container in started:
        container.remove()
