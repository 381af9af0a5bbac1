"""Roles from one image: which Procfile processes this container runs (`--only`).

The same image runs as the web container, as N worker containers, or as anything else the
Procfile names: `start-all --only web`, `--only worker`, `--only NAME[,NAME]` (or
START_ALL_ONLY). Each item is a Procfile process name; `web` and `worker` that name no process
select every process of that role. `release` in the list runs the release command alone (a
one-off job: a platform's pre-deploy command, a Kubernetes Job).

`release:` runs in exactly one role: the container whose selection holds a process named, or
of the role, START_ALL_RELEASE_ROLE (default `web`); elsewhere it is skipped, with a log line.
Without `--only` everything runs, release included, as before.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from supervisor.plan import ProcessSpec

ROLE_WORDS = ("web", "worker")
RELEASE = "release"
NO_RELEASE = "none"  # START_ALL_RELEASE_ROLE=none: release never runs from start-all


class SelectionError(ValueError):
    """An --only item that names nothing; the message is one line with a suggestion."""


@dataclass(frozen=True)
class Selection:
    only: tuple[str, ...] | None  # as given (None: everything)
    names: tuple[str, ...]  # the processes this container runs
    release_here: bool
    messages: tuple[str, ...]  # logged by the supervisor at start, shown by --dry-run


def parse_only(value: str | None) -> tuple[str, ...] | None:
    if value is None or not value.strip():
        return None
    items = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    return items or None


def _suggest(item: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(item, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _matches(spec: ProcessSpec, item: str, names: set[str]) -> bool:
    if spec.name == item:
        return True
    return item not in names and item in ROLE_WORDS and spec.role == item


def select(
    specs: tuple[ProcessSpec, ...],
    has_release: bool,
    only: str | None,
    release_role: str,
    source: str,
) -> Selection:
    """Which of `specs` run here, and whether the release command does."""
    items = parse_only(only)
    if items is None:
        return Selection(None, tuple(s.name for s in specs), has_release, ())
    names = {s.name for s in specs}
    known = [*(s.name for s in specs), *([RELEASE] if has_release else [])]
    if has_release and release_role != NO_RELEASE and not any(
        _matches(s, release_role, names) for s in specs
    ):
        raise SelectionError(
            f"START_ALL_RELEASE_ROLE={release_role}: no process or role {release_role!r} in "
            f"{source} (processes: {', '.join(s.name for s in specs)}; or 'none')"
            f"{_suggest(release_role, [*names, *ROLE_WORDS, NO_RELEASE])}"
        )
    chosen: list[str] = []
    for item in items:
        if item == RELEASE:
            if not has_release:
                raise SelectionError(
                    f"--only {item}: {source} has no release process"
                    f" (processes: {', '.join(known)})"
                )
            continue
        found = [s.name for s in specs if _matches(s, item, names)]
        if not found:
            what = "role" if item in ROLE_WORDS else "process"
            raise SelectionError(
                f"--only {item}: no {what} {item!r} in {source} (processes: "
                f"{', '.join(known)}){_suggest(item, [*known, *ROLE_WORDS])}"
            )
        chosen += [name for name in found if name not in chosen]
    ordered = tuple(s.name for s in specs if s.name in chosen)  # Procfile order
    release_only = RELEASE in items and not ordered
    if not has_release:
        release_here = False
    elif RELEASE in items:
        release_here = True
    elif release_role == NO_RELEASE:
        release_here = False
    else:
        release_here = any(_matches(s, release_role, names) for s in specs if s.name in ordered)
    shown = ",".join(items)
    messages = [f"role: --only {shown}: running {', '.join(ordered) or 'release only'}"]
    if has_release and not release_here:
        where = (
            "never from start-all (START_ALL_RELEASE_ROLE=none)"
            if release_role == NO_RELEASE
            else f"in the container that runs {release_role!r} (START_ALL_RELEASE_ROLE)"
        )
        messages.append(f"release skipped here: it runs {where}")
    if release_only:
        messages.append("release only: the container exits when it is done")
    return Selection(items, ordered, release_here, tuple(messages))
