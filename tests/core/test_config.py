"""Configuration: Procfile, env, settings and every bad input -> one line, exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from supervisor import commands, profiles
from tests.conftest import ROOT

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("START_ALL_", "DJANGO_"))}


def start_all(tmp_path, *args, env=None, procfile=None):
    if procfile is not None:
        (tmp_path / "Procfile").write_text(procfile)
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        cwd=tmp_path,
        env={**BASE_ENV, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=10,
    )


def assert_config_error(result, *needles):
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("start-all: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("procfile", "args", "env", "needles"),
    [
        (None, ["-f", "Missing"], {}, ["Procfile not found", "Missing"]),
        ("web: sleep 1\nthis is not a process\n", [], {}, ["Procfile:2", "this is not"]),
        ("web: sleep 1\nweb: sleep 2\n", [], {}, ["'web' is defined twice"]),
        ("# only a comment\n", [], {}, ["no processes"]),
        ("release: true\n", [], {}, ["only a release"]),
        ("web: no-such-program --flag\n", [], {}, ["'web'", "command not found: no-such-program"]),
        ("web: python3 nope.py\n", [], {}, ["file not found: nope.py"]),
        ("web: sleep 'unbalanced\n", [], {}, ["'web'", "unbalanced"]),
        ("web: sleep 1\n", [], {"START_ALL_STOP_TIMOUT": "3"}, ["START_ALL_STOP_TIMOUT"]),
        ("web: sleep 1\n", [], {"START_ALL_STOP_TIMEOUT": "soon"}, ["START_ALL_STOP_TIMEOUT"]),
        ("web: sleep 1\n", [], {"START_ALL_WORKER": "rq"}, ["START_ALL_WORKER", "rq"]),
        ("web: sleep 1\n", [], {"PORT": "http"}, ["PORT"]),
        (
            "web: sleep 1\n",
            [],
            {"START_ALL_PROCESSES__WORKER__RESTART": "never"},
            ["no process 'worker'"],
        ),
        (
            "web: sleep 1\n",
            [],
            {"START_ALL_PROCESSES__WEB__STOP_SIGNAL": "SIGSTOPP"},
            ["START_ALL_PROCESSES__WEB__STOP_SIGNAL", "SIGSTOPP"],
        ),
        (None, [], {}, ["no Procfile", "START_ALL_WSGI_APP"]),
        (None, [], {"START_ALL_WSGI_APP": "a:b", "START_ALL_WORKER": "celery"}, ["WORKER_APP"]),
        ("web: sleep 1\n", ["-e", "missing.env"], {}, ["env file not found", "missing.env"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, procfile, args, env, needles):
    assert_config_error(start_all(tmp_path, *args, env=env, procfile=procfile), *needles)


def test_port_in_use_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = start_all(tmp_path, env={"PORT": str(port)}, procfile="web: sleep 5\n")
    assert_config_error(result, f"port {port}", "already in use")


def test_bad_env_file_line_names_the_file(tmp_path):
    (tmp_path / ".env").write_text("GOOD=1\nBAD='unclosed\n")
    assert_config_error(start_all(tmp_path, procfile="web: sleep 1\n"), ".env")


def dry_run(tmp_path, procfile=None, env=None, *extra):
    result = start_all(tmp_path, "--dry-run", "--json", *extra, env=env, procfile=procfile)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_dry_run_resolves_profiles_and_policies(tmp_path):
    (tmp_path / "manage.py").write_text("")
    plan = dry_run(
        tmp_path,
        "release: python3 manage.py migrate\n"
        "web: gunicorn app:app --bind 0.0.0.0:$PORT\n"
        "worker: cd . && python3 manage.py qcluster\n"
        "celery: celery -A proj worker -l info\n"
        "beat: FOO=1 celery -A proj beat\n"
        "misc: sleep 100 | cat\n",
        {"START_ALL_STOP_TIMEOUT": "5", "PORT": "9001"},
    )
    assert plan["stop_timeout"] == 5 and plan["port"] == 9001
    assert plan["release"]["role"] == "release"
    by = {p["name"]: p for p in plan["processes"]}
    assert "release" not in by
    assert (by["web"]["kind"], by["web"]["role"], by["web"]["restart"]) == (
        "gunicorn",
        "web",
        "never",
    )
    assert by["web"]["argv"][-1] == "exec gunicorn app:app --bind 0.0.0.0:$PORT"
    assert (by["worker"]["kind"], by["worker"]["signal_target"]) == ("qcluster", "main")
    assert by["worker"]["argv"][-1] == "cd . && exec python3 manage.py qcluster"
    assert by["worker"]["restart"] == "always"
    assert by["celery"]["kind"] == "celery-worker"
    assert [e["signal"] for e in by["celery"]["escalations"]] == ["SIGQUIT"]
    assert by["beat"]["kind"] == "celery-beat"
    assert by["beat"]["argv"][-1] == "FOO=1 exec celery -A proj beat"
    # a pipeline cannot be exec'd: its main pid is a shell, so the group gets the signal
    assert (by["misc"]["kind"], by["misc"]["signal_target"]) == ("generic", "group")


def test_overrides_from_environment(tmp_path):
    plan = dry_run(
        tmp_path,
        "web: sleep 100\nworker: sleep 100\n",
        {
            "START_ALL_PROCESSES__WORKER__RESTART": "on-failure",
            "START_ALL_PROCESSES__WORKER__REQUIRED": "false",
            "START_ALL_PROCESSES__WEB__STOP_SIGNAL": "int",
            "START_ALL_PROCESSES__WEB__SIGNAL_TARGET": "main",
        },
    )
    web, worker = plan["processes"]
    assert (web["stop_signal"], web["signal_target"]) == ("SIGINT", "main")
    assert (worker["restart"], worker["required"]) == ("on-failure", False)


def test_env_file_fills_but_does_not_override(tmp_path):
    (tmp_path / ".env").write_text("START_ALL_STOP_TIMEOUT=3\nPORT=7001\n")
    plan = dry_run(tmp_path, "web: sleep 1\n", {"PORT": "7002"})
    assert plan["stop_timeout"] == 3  # from .env
    assert plan["port"] == 7002  # the real environment wins


def test_defaults_without_procfile_for_django(tmp_path):
    (tmp_path / "manage.py").write_text("")
    plan = dry_run(
        tmp_path,
        None,
        {"DJANGO_SETTINGS_MODULE": "shop.settings.prod", "START_ALL_STOP_TIMEOUT": "6"},
    )
    web, worker = plan["processes"]
    assert web["command"] == (
        "gunicorn --bind 0.0.0.0:$PORT --graceful-timeout 5 shop.wsgi:application"
    )
    assert worker["kind"] == "qcluster" and worker["command"].endswith("manage.py qcluster")
    assert any("DJANGO_SETTINGS_MODULE" in note for note in plan["notes"])


def test_defaults_native_and_celery_and_none(tmp_path):
    env = {"START_ALL_WSGI_APP": "api:app", "START_ALL_WORKER_APP": "api.tasks:app"}
    native = dry_run(tmp_path, None, {**env, "START_ALL_WORKER": "native"})
    assert native["processes"][1]["kind"] == "native"
    command = native["processes"][1]["command"]
    assert command.endswith("-m supervisor.native worker -A api.tasks:app")
    celery = dry_run(tmp_path, None, {**env, "START_ALL_WORKER": "celery"})
    assert [p["kind"] for p in celery["processes"]] == ["gunicorn", "celery-worker", "celery-beat"]
    none = dry_run(tmp_path, None, {**env, "START_ALL_WORKER": "none"})
    assert [p["name"] for p in none["processes"]] == ["web"]


def test_human_dry_run_lists_every_process(tmp_path):
    result = start_all(tmp_path, "--dry-run", procfile="web: sleep 1\nworker: sleep 2\n")
    assert result.returncode == 0
    assert "web.1" in result.stdout and "worker.1" in result.stdout
    assert "stop budget 8 s" in result.stdout


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("gunicorn proj.wsgi", "gunicorn"),
        ("python -m gunicorn proj.wsgi", "gunicorn"),
        ("uvicorn api:app --port $PORT", "uvicorn"),
        ("python manage.py qcluster", "qcluster"),
        ("/venv/bin/python -u manage.py qcluster", "qcluster"),
        ("django-admin qcluster --settings x", "qcluster"),
        ("python -m django qcluster", "qcluster"),
        ("celery -A proj worker", "celery-worker"),
        ("celery --app proj beat", "celery-beat"),
        ("python -m supervisor.native worker -A x:app", "native"),
        ("python manage.py native_worker", "native"),
        ("python manage.py runserver", "generic"),
        ("node server.js", "generic"),
    ],
)
def test_profile_detection(line, kind):
    assert profiles.detect(commands.parse(line).program).kind == kind


def test_native_worker_on_real_celery_gets_the_celery_escalation(tmp_path):
    line = "worker: python3 -m supervisor.native worker -A proj.tasks:app\n"
    native = dry_run(tmp_path, line)["processes"][0]
    assert (native["kind"], native["escalations"]) == ("native", [])
    # USE_DB_QUEUE=false: the same line execs `celery worker -B` (warm shutdown, no deadline)
    celery = dry_run(tmp_path, line, {"USE_DB_QUEUE": "false"})["processes"][0]
    assert celery["kind"] == "celery-worker"
    assert [e["signal"] for e in celery["escalations"]] == ["SIGQUIT"]
    # ... but keeps its own command line: sizing passes the count through the environment
    # (the native CLI hands it to celery), never celery's options it would reject
    assert celery["command"] == line.split(": ", 1)[1].strip()
    assert celery["env"]["START_ALL_WORKER_CONCURRENCY"]


# where a user meets START_ALL_ names: every one of them must be accepted by start-all
USER_FACING = ["templates", "examples", "docs", "README.md", "supervisor/kit/templates",
               "scripts", "Dockerfile", "Procfile"]


def start_all_names_in_the_project() -> dict[str, str]:
    """name -> the first file that uses it."""
    import re

    found: dict[str, str] = {}
    for top in USER_FACING:
        root = ROOT / top
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            text = path.read_text(errors="replace")
            for name in re.findall(r"START_ALL_[A-Z0-9_]+", text):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def test_every_start_all_name_in_templates_examples_and_docs_is_accepted():
    from supervisor import settings

    names = start_all_names_in_the_project()
    assert "START_ALL_IMAGE" in names and "START_ALL_STOP_TIMEOUT" in names  # the scan works
    for name, where in names.items():
        if name.endswith("__"):  # START_ALL_PROCESSES__<NAME>__<FIELD>, as written in docs
            assert name == settings.PROCESS_FIELDS_PREFIX, where
            continue
        if name in settings.DJANGO_SETTING_NAMES:
            with pytest.raises(settings.ConfigError, match="is a Django setting"):
                settings.load_settings({name: "x"})
            continue
        known = name in settings.known_variables() or name in settings.OTHER_TOOLS_NAMES
        assert known, f"{name} ({where}) is neither a setting nor in OTHER_TOOLS_NAMES"


def test_the_compose_files_image_variable_is_no_unknown_setting(tmp_path):
    result = start_all(tmp_path, "--dry-run", env={"START_ALL_IMAGE": "shop:1",
                                                    "START_ALL_TEST_LATEST": "0"},
                       procfile="web: sleep 1\n")
    assert result.returncode == 0, result.stderr
