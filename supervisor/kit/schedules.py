"""Schedules as code: one declarative list, synced to django-q2 and fed to the native worker.

An entry (a dict in the Django setting START_ALL_SCHEDULES, or a [[schedule]] table in a TOML
file whose path that setting may name instead):

    {"name": "daily-cleanup", "func": "bookings.tasks.cleanup_old_records",
     "cron": "0 3 * * *", "kwargs": {"days": 30}}

`name` and `func` are required, and exactly one of `cron` (5 fields, checked with croniter) or
`every` (seconds). `args` (list) and `kwargs` (dict) hold plain literals.

django-q2: `sync_django()` makes the Schedule rows named "start-all:<name>" match the list:
missing ones are created, changed ones updated (their next run kept unless the timing
changed), duplicates and entries no longer listed deleted. Rows with other names (made in
the admin, a data migration) are never touched, but a row of the app's own that runs the
same function as an entry means it runs twice: the sync says so, and `--adopt` takes such a
row over instead (renamed "start-all:<name>", made to match the entry, its id kept).
Running it twice changes nothing, so every deploy may run it.

Native worker: `to_beat_schedule()` gives the same list in Celery's beat_schedule shape
(cron strings, which the native worker reads); `to_celery_beat_schedule()` for Celery beat.

`start-all schedules list [FILE]` prints the entries with their next runs;
`start-all schedules sync [--adopt]` syncs django-q2 through `manage.py shell`. Exit: 0 ok,
1 the sync failed, 2 bad input (the message names the entry).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

MANAGED_PREFIX = "start-all:"
NAME_MAX = 100 - len(MANAGED_PREFIX)  # django-q2's Schedule.name is 100 characters
FIELDS = {"name", "func", "cron", "every", "args", "kwargs"}
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


class ScheduleError(ValueError):
    """An invalid schedule list; the message names the entry."""


@dataclass(frozen=True)
class Entry:
    name: str
    func: str
    cron: str | None = None
    every: float | None = None  # seconds
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def next_run(self, after: datetime) -> datetime:
        if self.cron is None:
            return after + timedelta(seconds=self.every or 0)
        from croniter import croniter

        return croniter(self.cron, after).get_next(datetime)


def _literal(value: object) -> bool:
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError):
        return False


def _entry(raw: object, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise ScheduleError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - FIELDS
    if unknown:
        raise ScheduleError(
            f"{where}: unknown key {sorted(unknown)[0]!r} (known: {sorted(FIELDS)})"
        )
    name, func = raw.get("name"), raw.get("func")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        raise ScheduleError(f"{where}: 'name' must be a non-empty string of <= {NAME_MAX} chars")
    where = f"schedule {name!r}"
    if (
        not isinstance(func, str)
        or "." not in func
        or not all(part.isidentifier() for part in func.split("."))
    ):
        raise ScheduleError(f"{where}: 'func' must be a dotted path like 'app.tasks.job'")
    cron, every = raw.get("cron"), raw.get("every")
    if (cron is None) == (every is None):
        raise ScheduleError(f"{where}: give exactly one of 'cron' or 'every' (seconds)")
    if cron is not None:
        from croniter import croniter

        if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ScheduleError(f"{where}: invalid cron expression {cron!r} (5 fields)")
    if every is not None and (
        isinstance(every, bool) or not isinstance(every, int | float) or every <= 0
    ):
        raise ScheduleError(f"{where}: 'every' must be a positive number of seconds")
    args, kwargs = raw.get("args", ()), raw.get("kwargs", {})
    if not isinstance(args, list | tuple) or not _literal(tuple(args)):
        raise ScheduleError(f"{where}: 'args' must be a list of plain values")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ScheduleError(f"{where}: 'kwargs' must be a mapping with string keys")
    if not _literal(kwargs):
        raise ScheduleError(f"{where}: 'kwargs' must hold plain values")
    return Entry(name, func, cron, None if every is None else float(every), tuple(args), kwargs)


def load_entries(declared: object) -> list[Entry]:
    """Validate a list of entries, or the path of a TOML file holding [[schedule]] tables."""
    if isinstance(declared, str | Path):
        path = Path(declared)
        try:
            declared = tomllib.loads(path.read_text(encoding="utf-8")).get("schedule", [])
        except OSError as error:
            raise ScheduleError(f"cannot read schedules file {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ScheduleError(f"{path}: {error}") from None
    if not isinstance(declared, list | tuple):
        raise ScheduleError("schedules must be a list of entries")
    entries = [_entry(raw, f"schedule #{i + 1}") for i, raw in enumerate(declared)]
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ScheduleError(f"schedule {entry.name!r} is defined twice")
        seen.add(entry.name)
    return entries


def to_beat_schedule(entries: list[Entry]) -> dict[str, dict]:
    """The same entries in Celery's beat_schedule shape, which the native worker reads."""
    return {
        entry.name: {
            "task": entry.func,
            "schedule": entry.cron if entry.cron is not None else entry.every,
            "args": list(entry.args),
            "kwargs": dict(entry.kwargs),
        }
        for entry in entries
    }


def to_celery_beat_schedule(entries: list[Entry]) -> dict[str, dict]:
    """For Celery itself (CELERY_BEAT_SCHEDULE): cron strings become celery crontab objects."""
    from celery.schedules import crontab

    beat = to_beat_schedule(entries)
    for entry in entries:
        if entry.cron is not None:
            minute, hour, day_of_month, month_of_year, day_of_week = entry.cron.split()
            beat[entry.name]["schedule"] = crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
            )
    return beat


def _django_fields(entry: Entry) -> dict:
    from django_q.models import Schedule

    if entry.cron is not None:
        timing = {"schedule_type": Schedule.CRON, "cron": entry.cron, "minutes": None}
    else:
        if entry.every % 60:
            raise ScheduleError(
                f"schedule {entry.name!r}: django-q2 runs schedules by the minute; "
                f"'every' must be a multiple of 60 (got {entry.every:g})"
            )
        timing = {
            "schedule_type": Schedule.MINUTES,
            "cron": None,
            "minutes": int(entry.every // 60),
        }
    return {
        **timing,
        "func": entry.func,
        "args": repr(tuple(entry.args)) if entry.args else None,
        "kwargs": repr(entry.kwargs) if entry.kwargs else None,
        "repeats": -1,
    }


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)  # "entry: row 'x' also runs func"

    def __str__(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in vars(self).items() if k != "twice"]
        return ", ".join(parts)


def _adoptable(rows: list, entry: Entry, values: dict):
    """Of the app's own rows running entry.func, the one to take over: same arguments
    first, else the oldest."""
    same = [row for row in rows if (row.args, row.kwargs) == (values["args"], values["kwargs"])]
    return (same or rows)[0] if rows else None


def sync_django(
    entries: list[Entry], now: datetime | None = None, adopt: bool = False
) -> SyncResult:
    """Make django-q2's managed Schedule rows match `entries` (idempotent). With adopt, a
    row of the app's own running an entry's function is taken over rather than doubled."""
    from django.db import transaction
    from django_q.models import Schedule

    now = now or datetime.now(UTC)
    wanted = {MANAGED_PREFIX + entry.name: entry for entry in entries}
    fields = {name: _django_fields(entry) for name, entry in wanted.items()}  # validate first
    result = SyncResult()
    with transaction.atomic():
        rows = Schedule.objects.select_for_update().filter(name__startswith=MANAGED_PREFIX)
        kept: dict[str, Schedule] = {}
        for row in rows.order_by("id"):
            if row.name in wanted and row.name not in kept:
                kept[row.name] = row
            else:  # no longer declared, or a duplicate
                result.deleted.append(row.name)
                row.delete()
        own: dict[str, list] = {}
        for row in Schedule.objects.select_for_update().exclude(
            name__startswith=MANAGED_PREFIX
        ).order_by("id"):
            own.setdefault(row.func, []).append(row)
        for name, entry in wanted.items():
            values = fields[name]
            row = kept.get(name)
            candidate = _adoptable(own.get(entry.func, []), entry, values) if adopt else None
            if candidate is not None:
                if row is not None:  # an earlier plain sync doubled it: the app's row stays
                    result.deleted.append(row.name)
                    row.delete()
                own[entry.func].remove(candidate)
                result.adopted.append(f"{entry.name} (row {candidate.name!r}, id {candidate.id})")
                candidate.name = name
                candidate.save(update_fields=["name"])
                row = candidate
            for other in own.get(entry.func, []):
                result.twice.append(
                    f"{entry.name}: Schedule row {other.name!r} (id {other.id}) also runs "
                    f"{entry.func}"
                )
            if row is None:
                Schedule.objects.create(name=name, next_run=entry.next_run(now), **values)
                result.created.append(entry.name)
                continue
            changed = {k: v for k, v in values.items() if getattr(row, k) != v}
            if not changed:
                result.unchanged.append(entry.name)
                continue
            if {"schedule_type", "cron", "minutes"} & set(changed):
                changed["next_run"] = entry.next_run(now)
            for key, value in changed.items():
                setattr(row, key, value)
            row.save(update_fields=list(changed))
            result.updated.append(entry.name)
    return result


def sync_from_settings(adopt: bool = False) -> SyncResult:
    """Sync settings.START_ALL_SCHEDULES (run inside `manage.py shell`)."""
    from django.conf import settings

    declared = getattr(settings, "START_ALL_SCHEDULES", [])
    result = sync_django(load_entries(declared), adopt=adopt)
    print(f"start-all schedules: django-q2 synced: {result}", flush=True)
    for name in result.adopted:
        print(f"start-all schedules: adopted the app's own row for {name}", flush=True)
    for twice in result.twice:
        hint = "" if adopt else " (`start-all schedules sync --adopt` takes it over)"
        print(f"start-all schedules: warning: {twice}: it runs twice{hint}",
              file=sys.stderr, flush=True)
    return result


SYNC_CODE = """\
import sys
from supervisor.kit.schedules import ScheduleError, sync_from_settings
try:
    sync_from_settings(adopt=ADOPT)
except ScheduleError as error:
    print(f"start-all schedules: {error}", file=sys.stderr)
    sys.exit(2)
"""


def django_sync_command(manage: str = "manage.py", adopt: bool = False) -> list[str]:
    """Runs the sync with the project's own settings, whatever manage.py selects."""
    code = SYNC_CODE.replace("ADOPT", repr(bool(adopt)))
    return [sys.executable, manage, "shell", "--no-startup", "--verbosity", "0", "-c", code]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="start-all schedules", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser("list", help="validate a schedules TOML file and show the next runs")
    show.add_argument("file", type=Path)
    show.add_argument("--beat", action="store_true", help="print the native beat_schedule")
    sync = sub.add_parser("sync", help="sync settings.START_ALL_SCHEDULES to django-q2")
    sync.add_argument("--manage", default="manage.py", help="path to manage.py")
    sync.add_argument("--adopt", action="store_true",
                      help="take over the app's own Schedule rows running the same function")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.action == "sync":
        if not Path(args.manage).is_file():
            print(f"start-all schedules: {args.manage} not found", file=sys.stderr)
            return EXIT_BAD_INPUT
        code = subprocess.call(django_sync_command(args.manage, adopt=args.adopt))
        return code if code in (0, EXIT_BAD_INPUT) else EXIT_FAILED
    try:
        entries = load_entries(args.file)
    except ScheduleError as error:
        print(f"start-all schedules: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.beat:
        print(repr(to_beat_schedule(entries)))
        return 0
    now = datetime.now(UTC)
    for entry in entries:
        timing = f"cron {entry.cron}" if entry.cron else f"every {entry.every:g} s"
        print(
            f"{entry.name}: {entry.func} ({timing}), next {entry.next_run(now):%Y-%m-%d %H:%M} UTC"
        )
    return 0
