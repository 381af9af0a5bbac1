"""`start-all migrate`: run migrations from a Procfile `release:` line, one container at a time.

During a rolling deploy the old and the new container can both start a release phase. On
PostgreSQL the migration runs while this process holds a session advisory lock, so a second
`start-all migrate` waits for the first one and then finds nothing left to do. The lock lives
on a session-mode connection: a transaction pooler (port 6543) would drop it between
statements, so such a URL is refused. Without a PostgreSQL DATABASE_URL (SQLite) the command
simply runs.

Exit codes: the command's own exit code; 1 when the database cannot be reached or the lock
not taken in time; 2 for bad input (transaction pooler URL, missing manage.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from supervisor.kit import dburl

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# One fixed 64-bit key shared by every container of every app using start-all migrate on this
# database: only migrations of the same database serialise, which is what we want.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"start-all migrate").digest()[:8], "big", signed=True)


def log(message: str) -> None:
    masked = dburl.redact(message, dburl.secrets_from(dict(os.environ)))
    print(f"start-all migrate: {masked}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="start-all migrate",
        description="Run `manage.py migrate` (or COMMAND) under a PostgreSQL advisory lock.",
        epilog="Exit: the command's code; 1 database unreachable or lock timeout; 2 bad input.",
    )
    p.add_argument("--manage", default="manage.py", help="path to manage.py (default: ./manage.py)")
    p.add_argument(
        "--sync-schedules",
        action="store_true",
        help="then sync settings.START_ALL_SCHEDULES to django-q2 (under the same lock)",
    )
    p.add_argument(
        "--adopt",
        action="store_true",
        help="with --sync-schedules: take over the app's own Schedule rows running the same "
        "function (see `start-all schedules sync --adopt`)",
    )
    p.add_argument(
        "--lock-timeout", type=float, default=600, help="seconds to wait for the lock (600)"
    )
    p.add_argument(
        "--database-url", help="connection for the lock (default: $DATABASE_URL)", default=None
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND to run instead")
    return p


def commands_for(args: argparse.Namespace) -> list[list[str]] | str:
    """The commands to run under the lock, or an error message."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        return [command]
    if not Path(args.manage).is_file():
        return f"{args.manage} not found (run from the project directory or pass --manage)"
    commands = [[sys.executable, args.manage, "migrate", "--noinput"]]
    if args.sync_schedules:
        from supervisor.kit.schedules import django_sync_command

        commands.append(django_sync_command(args.manage, adopt=args.adopt))
    return commands


def run_all(commands: list[list[str]]) -> int:
    for command in commands:
        try:
            code = subprocess.call(command)
        except OSError as error:
            log(f"cannot run {command[0]}: {error.strerror}")
            return 127
        if code != 0:
            log(f"{' '.join(command[:3])} ... failed with exit code {code}")
            return code
    return 0


def run_locked(url: dburl.DatabaseUrl, commands: list[list[str]], timeout: float) -> int:
    import psycopg

    try:
        # TCP keepalives: the lock connection sits idle while a long migration runs, and a NAT
        # or pooler dropping it as idle would release the lock under the migration
        connection = psycopg.connect(
            dburl.libpq_url(url.url),
            autocommit=True,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg.Error as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        log(f"cannot connect to {url.redacted}: {first_line}")
        return EXIT_FAILED
    with connection:
        started = time.monotonic()
        taken = connection.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
        if not taken:
            log("another container is migrating; waiting for it to finish")
            connection.execute(f"SET lock_timeout = {int(timeout * 1000)}")
            try:
                connection.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            except psycopg.errors.LockNotAvailable:
                log(f"gave up waiting for the migration lock after {timeout:g} s")
                return EXIT_FAILED
        log(f"lock taken after {time.monotonic() - started:.1f} s")
        code = run_all(commands)
        connection.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return code


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    commands = commands_for(args)
    if isinstance(commands, str):
        log(commands)
        return EXIT_BAD_INPUT
    try:
        url = dburl.parse(args.database_url or os.environ.get("DATABASE_URL", ""))
    except dburl.BadUrl as error:
        log(str(error))
        return EXIT_BAD_INPUT
    if not url.postgres:
        log("no PostgreSQL DATABASE_URL: running without a lock")
        return run_all(commands)
    if url.transaction_pooler:
        log(
            f"DATABASE_URL {url.redacted} is a transaction pooler (port 6543): it cannot hold "
            "the migration lock; use the session pooler (port 5432) or a direct connection"
        )
        return EXIT_BAD_INPUT
    return run_locked(url, commands, args.lock_timeout)
