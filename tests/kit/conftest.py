"""Fixtures for the kit tests: a copy of the booking example, a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, START_ALL, VENV_ENV, free_port, need

EXAMPLE = ROOT / "examples" / "koyeb"
PG_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.fixture
def pg_url() -> str:
    """A fresh database for each test, dropped WITH (FORCE) afterwards."""
    need(postgres_available(), f"PostgreSQL at {PG_URL}")
    import psycopg

    name = f"kit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def example_project(tmp_path) -> Path:
    """A private copy of examples/koyeb (its SQLite file and cache inside tmp_path)."""
    project = tmp_path / "koyeb"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return project


def kit_env(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(VENV_ENV)
    # never the defaults (PORT 8000, health 8081): a demo or another run may hold them
    env.update(PORT=str(free_port()), START_ALL_HEALTH_PORT=str(free_port()))
    env.update(DATA_DIR=str(project / "data"), CACHE_DIR=str(project / "cache"), **extra)
    return env


def start_all(project: Path, *args: str, env: dict | None = None, timeout: float = 120):
    """Run `start-all ARGS` in `project`; the CompletedProcess (text)."""
    return subprocess.run(
        [*START_ALL, *args],
        cwd=project,
        env=env or kit_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
