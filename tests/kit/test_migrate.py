"""`start-all migrate`: real processes against a real PostgreSQL, serialised by the lock."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

from supervisor.kit.migrate import LOCK_KEY
from tests.conftest import START_ALL, wait_for
from tests.kit.conftest import kit_env, start_all

SLOW = """\
import sys, time
with open("intervals.log", "a") as log:
    log.write(f"{sys.argv[1]} start {time.time()}\\n")
    log.flush()
    time.sleep(1.0)
    log.write(f"{sys.argv[1]} end {time.time()}\\n")
"""


@contextmanager
def holding_the_lock(url: str):
    """Play the other container: hold the migration lock until the block ends."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        yield
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def spawn(project, args, env, name):
    err = open(project / f"{name}.err", "w+")
    proc = subprocess.Popen(
        [*START_ALL, "migrate", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    return proc, project / f"{name}.err"


def test_two_overlapping_runs_never_migrate_at_once(tmp_path, pg_url):
    (tmp_path / "slow.py").write_text(SLOW)
    env = kit_env(tmp_path, DATABASE_URL=pg_url)
    with holding_the_lock(pg_url):
        runs = [
            spawn(tmp_path, ["--", sys.executable, "slow.py", name], env, name)
            for name in ("a", "b")
        ]
        for _, err in runs:
            wait_for(
                lambda err=err: "waiting for it to finish" in err.read_text(),
                30,
                f"{err.name} to wait for the lock",
            )
        assert not (tmp_path / "intervals.log").exists()  # nothing ran while the lock was held
    for proc, err in runs:
        assert proc.wait(60) == 0, err.read_text()
    events = [line.split() for line in (tmp_path / "intervals.log").read_text().splitlines()]
    assert len(events) == 4
    first, second = events[0][0], events[2][0]
    assert first != second
    # one whole run, then the other: start/end pairs never interleave
    assert [e[:2] for e in events] == [
        [first, "start"],
        [first, "end"],
        [second, "start"],
        [second, "end"],
    ]
    assert float(events[2][2]) >= float(events[1][2])


def test_django_migrations_from_two_containers_apply_once(example_project, pg_url):
    env = kit_env(example_project, DATABASE_URL=pg_url)
    with holding_the_lock(pg_url):
        runs = [spawn(example_project, ["--sync-schedules"], env, name) for name in ("a", "b")]
        for _, err in runs:
            wait_for(
                lambda err=err: "waiting for it to finish" in err.read_text(),
                60,
                f"{err.name} to wait for the lock",
            )
    outputs = []
    for proc, err in runs:
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, err.read_text()
        outputs.append(out + err.read_text())
    applied = [o for o in outputs if "Applying bookings.0001_initial... OK" in o]
    assert len(applied) == 1
    assert sum("No migrations to apply" in o for o in outputs) == 1
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT name, cron FROM django_q_schedule WHERE name LIKE 'start-all:%'"
        ).fetchall()
    assert rows == [("start-all:daily-cleanup", "0 3 * * *")]  # synced twice, one row


def test_gives_up_after_the_lock_timeout_without_running(tmp_path, pg_url):
    env = kit_env(tmp_path, DATABASE_URL=pg_url)
    with holding_the_lock(pg_url):
        result = start_all(
            tmp_path, "migrate", "--lock-timeout", "0.5", "--", "touch", "ran", env=env
        )
    assert result.returncode == 1
    assert "gave up waiting for the migration lock after 0.5 s" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_refuses_a_transaction_pooler(tmp_path):
    url = "postgresql://postgres.ref:secret@aws-0-eu-west-1.pooler.supabase.com:6543/postgres"
    result = start_all(
        tmp_path, "migrate", "--", "touch", "ran", env=kit_env(tmp_path, DATABASE_URL=url)
    )
    assert result.returncode == 2
    assert "transaction pooler (port 6543)" in result.stderr
    assert "secret" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "ran").exists()


def test_unreachable_database_is_one_line_exit_1(tmp_path):
    env = kit_env(tmp_path, DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")
    result = start_all(tmp_path, "migrate", "--", "touch", "ran", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("start-all migrate: cannot connect to postgresql://postgres@127.0.0.1:1/nothing")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ran").exists()


def test_sqlite_runs_without_a_lock(example_project):
    result = start_all(example_project, "migrate", "--sync-schedules")
    assert result.returncode == 0, result.stderr
    assert "running without a lock" in result.stderr
    assert "Applying bookings.0001_initial... OK" in result.stdout
    assert (example_project / "data" / "db.sqlite3").is_file()


def test_missing_manage_py_and_failing_command(tmp_path):
    missing = start_all(tmp_path, "migrate")
    assert missing.returncode == 2
    assert "manage.py not found" in missing.stderr
    failing = start_all(tmp_path, "migrate", "--", sys.executable, "-c", "raise SystemExit(3)")
    assert failing.returncode == 3
