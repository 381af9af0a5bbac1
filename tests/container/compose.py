"""Run the example compose files for real: docker-compose (v1) talking to podman's API socket.

podman has no systemd here, so two helpers run beside each project (../shared/RECIPES.md):
`podman system service` on a private socket (DOCKER_HOST) and the runtime script's
`healthchecks` loop, which runs HEALTHCHECKs so `condition: service_healthy` is ever met.
Each project gets a unique name and host port; `down -v` removes its containers and volumes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import ROOT, free_port, http_get, need, wait_for
from tests.container.conftest import RUNTIME_SCRIPT, podman

COMPOSE_DIR = ROOT / "examples" / "docker-compose"
RABBITMQ_DIR = ROOT / "tests" / "container" / "rabbitmq"
RABBITMQ_TAGS = ("docker.io/library/rabbitmq:3", "docker.io/library/rabbitmq:3-alpine")


def docker_compose() -> str | None:
    """Debian's docker-compose, installed on first use when we may (root, apt)."""
    if shutil.which("docker-compose") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "docker-compose"],
                       capture_output=True, timeout=600, check=False)
    return shutil.which("docker-compose")


def rabbitmq_image() -> None:
    """A local stand-in for the official rabbitmq image (registries are unreachable here):
    Debian's rabbitmq-server (tests/container/rabbitmq/Dockerfile), tagged rabbitmq:3."""
    if all(podman("image", "exists", tag, check=False).returncode == 0 for tag in RABBITMQ_TAGS):
        return
    podman("build", "--format", "docker", "-t", RABBITMQ_TAGS[0], str(RABBITMQ_DIR),
           timeout=900)
    for tag in RABBITMQ_TAGS[1:]:
        podman("tag", RABBITMQ_TAGS[0], tag)


class Compose:
    """One compose project, up with `files` and `env` (variables the files substitute)."""

    def __init__(self, files: list[str], env: dict[str, str], workdir: Path) -> None:
        compose = docker_compose()
        need(compose is not None, "docker-compose (apt-get install docker-compose)")
        self.compose = compose
        self.project = f"sa{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.workdir = workdir
        sock = workdir / "podman.sock"
        self.service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{sock}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.healthchecks = subprocess.Popen(
            ["bash", str(RUNTIME_SCRIPT), "healthchecks", "1200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(sock.exists, 30, "podman's API socket")
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{sock}",
            "COMPOSE_PROJECT_NAME": self.project,
            "WEB_PORT": str(self.port),
            **env,
        }
        self.args = [arg for f in files for arg in ("-f", str(COMPOSE_DIR / f))]

    def run(self, *args: str, timeout: float = 600, check: bool = True):
        result = subprocess.run([self.compose, *self.args, *args], env=self.env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n"
                                 f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        return result

    def up(self, *services: str, timeout: float = 600) -> None:
        """Start (waits for every `service_healthy` dependency, as compose does)."""
        self.run("up", "-d", "--no-build", *services, timeout=timeout)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def logs(self, service: str | None = None) -> str:
        result = self.run("logs", "--no-color", *([service] if service else []), check=False)
        return result.stdout + result.stderr

    def get_json(self, path: str) -> dict:
        code, body = http_get(self.port, path, timeout=10)
        assert code == 200, f"GET {path}: {code} {body[:300]!r}"
        return json.loads(body)

    def post_json(self, path: str, payload: dict, timeout: float = 120) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                assert response.status == 201
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # say why, from the containers' own logs
            raise AssertionError(f"POST {path}: {error.code}\n{self.logs()[-4000:]}") from None

    def wait_web(self, timeout: float = 180) -> None:
        def up():
            try:
                return http_get(self.port, "/healthz", timeout=3)[0] == 200
            except OSError:
                return False

        wait_for(up, timeout, f"the web container on :{self.port}\n{self.logs()[-4000:]}")

    def health(self, service: str) -> dict:
        """The supervisor's own report inside a container (`start-all status --json`)."""
        out = podman("exec", self.container(service), "start-all", "status", "--json",
                     check=False)
        return json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}

    def stop(self, timeout: int = 15) -> dict[str, float]:
        """`docker-compose stop`: seconds each container took, from its own FinishedAt."""
        names = self.run("ps", "-q").stdout.split()
        started = time.time()
        self.run("stop", "-t", str(timeout), timeout=timeout + 120)
        took = {}
        for cid in names:
            name, finished = podman("inspect", "-f", "{{.Name}} {{.State.FinishedAt.UnixNano}}",
                                    cid).stdout.split()
            took[name] = int(finished) / 1e9 - started
        return took

    def exit_codes(self) -> dict[str, str]:
        out = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                     "--format", "{{.Names}} {{.ExitCode}}").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def down(self) -> None:
        try:
            self.run("down", "-v", "-t", "5", timeout=300, check=False)
        finally:
            for proc in (self.healthchecks, self.service):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
