"""Periodic tasks from `beat_schedule`, fired by the workers themselves.

Every worker computes the same slots (cron times, or multiples of an interval since the epoch);
inserting (name, slot) into start_all.cron_slots decides which worker fires it, so a slot fires
once however many workers overlap, e.g. during a rolling deploy.

Catch-up policy (docs/native-worker.md): only the latest due slot of an entry is ever fired,
so slots missed while the process was frozen (a sleeping free instance, `podman pause`) fire
once on wake, not once per missed slot. A slot from before this process started fires only if
it is at most CATCH_UP seconds old (a restart or a deploy), so a fresh container does not
replay yesterday's 03:00 job.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from supervisor.native.exceptions import ConfigError
from supervisor.native.schedules import normalize

CATCH_UP = 60.0  # a slot missed by up to this much (e.g. during a restart) still fires


@dataclass
class Entry:
    name: str
    task: str
    schedule: str | float
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


def parse(beat_schedule: dict[str, Any]) -> list[Entry]:
    entries = []
    for name, spec in (beat_schedule or {}).items():
        try:
            entries.append(Entry(
                name=name, task=spec["task"], schedule=normalize(spec["schedule"]),
                args=list(spec.get("args") or ()), kwargs=dict(spec.get("kwargs") or {}),
                options=dict(spec.get("options") or {}),
            ))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"beat_schedule[{name!r}]: {error}") from None
    return entries


class Cron:
    def __init__(self, entries: list[Entry], tz: str = "UTC") -> None:
        from zoneinfo import ZoneInfo

        self.entries = entries
        self.tz = ZoneInfo(tz or "UTC")
        self.last: dict[str, float] = {}
        self.since = time.time()  # slots after this were missed while we ran (or were frozen)

    def _latest(self, entry: Entry, now: float) -> float:
        """The most recent slot at or before `now` (epoch seconds)."""
        if isinstance(entry.schedule, float):
            return math.floor(now / entry.schedule) * entry.schedule
        from croniter import croniter

        start = datetime.fromtimestamp(now, self.tz)
        if croniter.match(entry.schedule, start.replace(microsecond=0)) and start.second == 0:
            return float(int(now))
        return croniter(entry.schedule, start).get_prev(float)

    def _next(self, entry: Entry, now: float) -> float:
        if isinstance(entry.schedule, float):
            return (math.floor(now / entry.schedule) + 1) * entry.schedule
        from croniter import croniter

        return croniter(entry.schedule, datetime.fromtimestamp(now, self.tz)).get_next(float)

    def due(self, now: float | None = None) -> list[tuple[Entry, float]]:
        """Slots this process has not tried yet and that are recent enough to fire."""
        now = time.time() if now is None else now
        found = []
        for entry in self.entries:
            slot = self._latest(entry, now)
            recent = now - slot <= CATCH_UP or slot > self.since
            if slot > self.last.get(entry.name, -1.0) and recent:
                found.append((entry, slot))
            self.last[entry.name] = max(slot, self.last.get(entry.name, -1.0))
        return found

    def seconds_to_next(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        if not self.entries:
            return math.inf
        return max(0.0, min(self._next(e, now) for e in self.entries) - now)
