"""`crontab(...)` and the parsing of beat_schedule entries into cron expressions or intervals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


class crontab:  # noqa: N801 - Celery's name
    """A cron schedule: crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*") -> None:
        self.minute, self.hour = str(minute), str(hour)
        self.day_of_week, self.day_of_month = str(day_of_week), str(day_of_month)
        self.month_of_year = str(month_of_year)

    @property
    def expression(self) -> str:
        return " ".join(
            (self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week)
        )

    def __repr__(self) -> str:
        return f"<crontab: {self.expression}>"


def normalize(schedule: Any) -> str | float:
    """A cron expression (str) or an interval in seconds (float)."""
    if isinstance(schedule, crontab):
        return schedule.expression
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        if schedule <= 0:
            raise ValueError(f"interval schedule must be positive, got {schedule}")
        return float(schedule)
    if isinstance(schedule, str):
        from croniter import croniter

        if not croniter.is_valid(schedule):
            raise ValueError(f"invalid cron expression {schedule!r}")
        return schedule
    # a real celery crontab (the app switched back and forth): it keeps the original fields
    fields = ("_orig_minute", "_orig_hour", "_orig_day_of_month", "_orig_month_of_year",
              "_orig_day_of_week")
    if all(hasattr(schedule, f) for f in fields):
        return " ".join(str(getattr(schedule, f)) for f in fields)
    run_every = getattr(schedule, "run_every", None)
    if isinstance(run_every, timedelta):
        return run_every.total_seconds()
    raise ValueError(
        f"unsupported schedule {schedule!r}: use crontab(...), a cron string or seconds"
    )
