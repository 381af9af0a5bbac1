"""No password of any URL in any line start-all's own processes print: supervisor (PID 1 and
its children's output), native worker, migrate, the database probe, check and --dry-run.
Real processes against a closed port and the real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from supervisor import redact
from supervisor.kit import dburl
from tests.conftest import ROOT, VENV_ENV, free_port, need, port_open

APPS = ROOT / "tests" / "native" / "apps"
SECRET = "Sup3r-s3cret"
AT_SECRET = "p@ss@Sup3r-s3cret"  # unescaped '@': libpq would read the host from the first '@'


def leaked(text: str) -> bool:
    return any(piece in text for piece in ("Sup3r", "s3cret", "ss@"))


def run(argv: list[str], env: dict, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("START_ALL_")}
    return subprocess.run(argv, env={**base, **VENV_ENV, **env}, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)


def run_briefly(argv: list[str], env: dict, cwd, seconds: float = 4.0):
    """A long-running process (the native worker waits for its database): its output after
    `seconds`, then SIGTERM (what a stop does)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("START_ALL_")}
    proc = subprocess.Popen(argv, env={**base, **VENV_ENV, **env}, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def urls() -> dict[str, str]:
    closed = free_port()
    return {
        "at": f"postgresql://bob:{AT_SECRET}@127.0.0.1:{closed}/app",
        "bracket": f"postgresql://bob:{SECRET}@[127.0.0.1:{closed}/app",
        "plain": f"postgresql://bob:{SECRET}@127.0.0.1:{closed}/app",
    }


def test_redaction_rules():
    assert redact.url(f"postgresql://bob:{AT_SECRET}@db.example.com:5432/app") == (
        "postgresql://bob:***@db.example.com:5432/app")
    assert redact.url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact.url("postgresql://bob@h/db") == "postgresql://bob@h/db"
    text = 'could not translate host name "ss@Sup3r-s3cret@db.example.com" to address'
    assert redact.redact(text, [AT_SECRET]) == (
        'could not translate host name "***@db.example.com" to address')
    assert redact.redact("host=h password=hunter22 dbname=x") == "host=h password=*** dbname=x"
    assert redact.secrets_from({"A": "postgresql://u:p%40ss@h/db"}) == ["p%40ss", "p@ss"]
    assert dburl.libpq_url(f"postgresql://bob:{AT_SECRET}@h/app") == (
        "postgresql://bob:p%40ss%40Sup3r-s3cret@h/app")
    problem = dburl.validate(urls()["bracket"])
    assert problem.startswith("DATABASE_URL is not a valid URL (unbalanced '[' in the host)")
    assert not leaked(problem) and "bob:***@" in problem


def test_supervisor_refuses_a_malformed_url_in_one_line_and_masks_commands(tmp_path):
    result = run([*map(str, [sys.executable, "-m", "supervisor", "--dry-run"])],
                 {"DATABASE_URL": urls()["bracket"], "PORT": str(free_port())}, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "not a valid URL" in result.stderr
    assert not leaked(result.stdout + result.stderr)
    (tmp_path / "Procfile").write_text(
        f"web: python3 -m http.server $PORT\nworker: echo connecting to {urls()['at']}\n")
    result = run([sys.executable, "-m", "supervisor", "--dry-run", "--json"],
                 {"DATABASE_URL": urls()["at"], "PORT": str(free_port())}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bob:***@127.0.0.1" in result.stdout and not leaked(result.stdout + result.stderr)


def test_pid1_masks_passwords_in_its_lines_and_its_childrens(run_supervisor, tmp_path):
    url = urls()["at"]
    sup = run_supervisor(
        f"web: python3 -m http.server $PORT\n"
        f"worker: echo from the child: {url}; echo password={SECRET}; sleep 60\n",
        env={"DATABASE_URL": url, "PORT": str(free_port()), "START_ALL_HEALTH_PORT": "0"})
    sup.wait_line("password=")
    sup.close()
    assert "from the child: postgresql://bob:***@127.0.0.1" in sup.output
    assert not leaked(sup.output), sup.output


@pytest.mark.parametrize("kind", ["at", "bracket", "plain"])
def test_native_worker_migrate_and_probe_never_print_the_password(kind):
    url = urls()[kind]
    env = {"NATIVE_TEST_DB_URL": url, "DATABASE_URL": url,
           "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}"}
    worker = run_briefly([sys.executable, "-m", "supervisor.native", "worker", "-A",
                          "qtasks:app"], env, cwd=APPS)
    migrate = run([sys.executable, "-m", "supervisor", "migrate", "--", "true"], env)
    probe = run([sys.executable, "-m", "supervisor.probes", "database"], env)
    check = run([sys.executable, "-m", "supervisor", "check"], env)
    for result in (worker, migrate, probe, check):
        assert not leaked(result.stdout + result.stderr), (result.args, result.stdout,
                                                           result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
    if kind == "bracket":  # malformed: one clear line, exit 2
        assert worker.returncode == 2 and worker.stderr.strip().count("\n") == 0
        assert "not a valid URL" in worker.stderr
        assert migrate.returncode == 2 and "not a valid URL" in migrate.stderr
        assert probe.stdout.startswith("fail malformed URL")
        assert "not a valid URL" in check.stdout + check.stderr and check.returncode != 0
    else:  # parses: the worker waits for the database and says so
        assert "database" in worker.stderr.lower(), worker.stderr
        assert probe.stdout.startswith("fail connection refused"), probe.stdout
        assert "bob:***@127.0.0.1" in migrate.stderr, migrate.stderr


def test_unescaped_at_in_the_password_connects_as_urllib_reads_it(tmp_path):
    need(port_open(5432), "PostgreSQL on 127.0.0.1:5432")
    role = f"at_user_{os.getpid()}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    psql = ["psql", "-X", "-q", admin, "-c"]
    subprocess.run([*psql, f"CREATE ROLE {role} LOGIN PASSWORD '{AT_SECRET}'"], check=True)
    try:
        url = f"postgresql://{role}:{AT_SECRET}@127.0.0.1:5432/postgres"
        probe = run([sys.executable, "-m", "supervisor.probes", "database"],
                    {"DATABASE_URL": url})
        assert probe.stdout.startswith("ok "), probe.stdout
    finally:
        subprocess.run([*psql, f"DROP ROLE {role}"], check=True)


def test_a_password_that_is_also_a_word_masks_only_itself():
    """`postgres:postgres@` must not turn the scheme into `***ql://`; a one-letter password
    must not mask every letter p."""
    line = "cannot connect to postgresql://app:postgres@127.0.0.1:1/db (port 1, pooler off)"
    assert redact.redact(line, ["postgres"]) == (
        "cannot connect to postgresql://app:***@127.0.0.1:1/db (port 1, pooler off)")
    assert redact.redact("password p failed in pooler port", ["p"]) == (
        "password *** failed in pooler port")
    assert redact.redact("the secret is hunter2.", ["hunter2"]) == "the secret is ***."
