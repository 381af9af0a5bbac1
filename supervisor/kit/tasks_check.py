"""`start-all check` findings for django-tasks-db's `db_worker` (registered in check.py).

What it does under start-all, and what moving to the native backend of `django.tasks`
(supervisor.native.django_tasks.NativeBackend) gains with the same `@task` code."""

from __future__ import annotations

from pathlib import Path

from supervisor import commands, profiles
from supervisor.procfile import ProcfileError, load_procfile

GAINS = (
    "django-tasks-db has no retries, never runs again a task left RUNNING by a crash or an "
    "OOM kill, runs one task at a time per process and has no periodic tasks; "
    'TASKS BACKEND "supervisor.native.django_tasks.NativeBackend" with '
    "`python manage.py native_worker` runs the same @task code with retries and backoff, "
    "leases (a dead worker's task runs again), several tasks per process and cron schedules "
    "(docs/native-worker.md)"
)


def _db_workers(project: Path) -> list[str]:
    path = project / "Procfile"
    if not path.is_file():
        return []
    try:
        lines = load_procfile(path)
    except ProcfileError:
        return []  # check.py reports it
    names = []
    for name, line in lines.items():
        try:
            program = commands.parse(line).program
        except commands.CommandError:
            continue
        if profiles.detect(program).kind == "db-worker":
            names.append(name)
    return names


def check(project: Path, environ: dict[str, str]) -> list[tuple[str, str]]:
    names = _db_workers(project)
    if not names:
        return []
    try:
        budget = float(environ.get("START_ALL_STOP_TIMEOUT") or 8)
    except ValueError:
        budget = 8.0  # check.py's settings validation names the bad value
    share = profiles.PROFILES["db-worker"].escalations[0].after
    listed = ", ".join(names)
    return [
        ("ok", f"{listed}: db_worker stops on SIGTERM once its running task ends; a task still "
               f"running after {share * budget:.1f} s of the {budget:g} s stop budget gets a "
               "second SIGTERM, which interrupts it and records it FAILED"),
        ("warning", f"{listed}: {GAINS}"),
    ]
