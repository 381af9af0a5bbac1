"""Roles from one image: `--only` / START_ALL_ONLY run a subset of the Procfile, release runs in
exactly one role, and health describes only what this container runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port, http_get, wait_for
from tests.core.test_config import BASE_ENV, assert_config_error, dry_run, start_all

PROCFILE = (
    "release: echo migrating > release.ran\n"
    "web: python3 -m http.server $PORT\n"
    "worker: sleep 300\n"
    "beat: sleep 300\n"
    "mailer: sleep 300\n"
)


def names(plan: dict) -> list[str]:
    return [p["name"] for p in plan["processes"]]


@pytest.mark.parametrize(
    ("only", "expected", "release"),
    [
        (None, ["web", "worker", "beat", "mailer"], True),
        ("web", ["web"], True),
        ("worker", ["worker"], False),  # a process of that name wins over the role
        ("worker,beat", ["worker", "beat"], False),
        (" beat , web ", ["web", "beat"], True),  # Procfile order, blanks ignored
        ("release", [], True),  # the release command alone, e.g. a pre-deploy job
    ],
)
def test_only_selects_processes_and_release_follows_web(tmp_path, only, expected, release):
    plan = dry_run(tmp_path, PROCFILE, None, *(["--only", only] if only else []))
    assert names(plan) == expected
    assert (plan["release"] is not None) is release
    assert plan["health"]["only"] == (None if only is None else plan["role"]["only"])


def test_start_all_only_variable_and_role_word(tmp_path):
    # no process is called "worker" here: the word selects every worker-role process
    procfile = "web: python3 -m http.server $PORT\njobs: celery -A x worker\nbeat: sleep 9\n"
    (tmp_path / "celery").write_text("#!/bin/sh\nexec sleep 300\n")
    (tmp_path / "celery").chmod(0o755)
    env = {"START_ALL_ONLY": "worker", "PATH": f"{tmp_path}:{BASE_ENV['PATH']}"}
    plan = dry_run(tmp_path, procfile, env)
    assert names(plan) == ["jobs", "beat"]
    assert {p["role"] for p in plan["processes"]} == {"worker"}
    # the command line wins over the variable
    assert names(dry_run(tmp_path, procfile, env, "--only", "web")) == ["web"]


def test_release_role_is_configurable(tmp_path):
    env = {"START_ALL_RELEASE_ROLE": "worker"}
    assert dry_run(tmp_path, PROCFILE, env, "--only", "web")["release"] is None
    assert dry_run(tmp_path, PROCFILE, env, "--only", "worker")["release"] is not None
    none = {"START_ALL_RELEASE_ROLE": "none"}
    assert dry_run(tmp_path, PROCFILE, none, "--only", "web")["release"] is None
    assert dry_run(tmp_path, PROCFILE, none, "--only", "release")["release"] is not None
    # without --only everything runs, release included, whatever the setting
    assert dry_run(tmp_path, PROCFILE, none)["release"] is not None


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (["--only", "wrker"], {}, ["--only wrker", "no process 'wrker'", "did you mean 'worker'"]),
        (["--only", "web,mailr"], {}, ["'mailr'", "did you mean 'mailer'"]),
        ([], {"START_ALL_ONLY": "zzz"}, ["--only zzz", "processes: web, worker"]),
        (["--only", "web"], {"START_ALL_RELEASE_ROLE": "wbe"},
         ["START_ALL_RELEASE_ROLE=wbe", "did you mean 'web'"]),
    ],
)
def test_unknown_names_are_one_line_exit_2(tmp_path, args, env, needles):
    assert_config_error(start_all(tmp_path, *args, env=env, procfile=PROCFILE), *needles)


def test_only_web_without_a_web_process(tmp_path):
    result = start_all(tmp_path, "--only", "web", procfile="worker: sleep 9\n")
    assert_config_error(result, "no role 'web'")


def test_dry_run_shows_the_role(tmp_path):
    result = start_all(tmp_path, "--dry-run", "--only", "worker", procfile=PROCFILE)
    assert result.returncode == 0, result.stderr
    assert "role: --only worker" in result.stdout
    assert "release skipped here: it runs in the container that runs 'web'" in result.stdout
    everything = start_all(tmp_path, "--dry-run", procfile=PROCFILE)
    assert "role: all processes" in everything.stdout


def test_worker_container_skips_release_and_reports_only_its_processes(tmp_path, run_supervisor):
    health_port = free_port()
    sup = run_supervisor(
        PROCFILE,
        args=["--only", "worker,mailer"],
        env={"START_ALL_HEALTH_PORT": str(health_port), "PORT": str(free_port())},
    )
    sup.wait_line(r"release skipped here: it runs in the container that runs 'web'")
    sup.wait_line(r"role: --only worker,mailer: running worker, mailer")

    def report():
        code, body = http_get(health_port, "/healthz")
        data = json.loads(body) if code == 200 else None
        return data if data and all(p["state"] == "running" for p in data["processes"]) else None

    data = wait_for(report, 15, "the worker container's health")
    assert [p["name"] for p in data["processes"]] == ["worker.1", "mailer.1"]
    assert data["supervisor"]["only"] == ["worker", "mailer"]
    assert not (tmp_path / "release.ran").exists()
    status = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--url", f"http://127.0.0.1:{health_port}"],
        env={**BASE_ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=10,
    )
    assert status.returncode == 0, status.stderr
    assert "only worker,mailer" in status.stdout
    assert "web.1" not in status.stdout and "beat.1" not in status.stdout


def test_release_only_runs_release_and_exits(tmp_path, run_supervisor):
    sup = run_supervisor(
        PROCFILE, args=["--only", "release"], env={"START_ALL_HEALTH_PORT": "0"}
    )
    assert sup.wait(20) == 0, sup.output
    assert (tmp_path / "release.ran").read_text().strip() == "migrating"
    assert "release only: the container exits when it is done" in sup.output
    assert "web.1" not in sup.output and "worker.1" not in sup.output
