"""What `start-all check` reports, and the registry other modules add their checks to.

A check is a function `(project: Project) -> list[Finding]`. To add one from another module:

    # supervisor/kit/platforms.py (say)
    from supervisor.kit.findings import Finding, Project

    def check_platform(project: Project) -> list[Finding]:
        ...
        return [Finding("warning", "...", where=project.where("Procfile", 3), fix="...")]

and one line in supervisor/kit/check.py, next to the others:

    register(platforms.check_platform)

A check never raises for a bad project: it returns an "error" finding that says what to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" (breaks, or runs tasks twice) | "warning" | "ok"
    message: str
    where: str = ""  # "path:line" relative to the project, when a file is to blame
    fix: str = ""  # how to fix it, one sentence

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        text = f"{self.severity}: {where}{self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


@dataclass(frozen=True)
class Process:
    name: str
    line: str
    kind: str  # profile kind: gunicorn, uvicorn, qcluster, celery-worker, native, ...
    lineno: int = 0  # its line in the Procfile


@dataclass
class Project:
    """What a check may look at; read-only by convention."""

    root: Path
    environ: dict[str, str]
    processes: list[Process] = field(default_factory=list)
    settings: dict | None = None  # the Django settings' relevant values, if a Django project
    settings_module: str | None = None

    def where(self, path: str | Path, line: int = 0) -> str:
        """'path:line' relative to the project root (the line left off when unknown)."""
        path = Path(path)
        try:
            path = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            pass
        return f"{path}:{line}" if line else str(path)

    def process(self, kind: str) -> Process | None:
        return next((p for p in self.processes if p.kind == kind), None)


Check = Callable[[Project], list[Finding]]
CHECKS: list[Check] = []


def register(check: Check) -> Check:
    """Add a check (also usable as a decorator); checks run in registration order."""
    if check not in CHECKS:
        CHECKS.append(check)
    return check
