"""Per-program presets: which signal stops it gracefully, and who must receive it.

Measured behaviour these presets encode (see the design notes):
- gunicorn: SIGTERM to the master is graceful; SIGINT/SIGQUIT are quick; SIGHUP reloads.
- django-q2 qcluster: SIGTERM to the main pid ONLY. Signalling its group kills the sentinel and
  workers at once and the main process then hangs forever.
- celery worker: SIGTERM is a warm shutdown with no deadline, SIGQUIT a cold one: escalate.
- celery beat, uvicorn, the native worker: SIGTERM to the main pid.
- django-tasks-db's db_worker: SIGTERM finishes the running task with no time limit, a second
  SIGTERM interrupts it (recorded FAILED, exit 0 in 0.3 s); SIGKILL would leave it RUNNING for
  ever (nothing recovers it): so the second SIGTERM comes at 60 % of the budget.
- anything else: SIGTERM to the whole process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from supervisor.plan import Escalation


@dataclass(frozen=True)
class Profile:
    kind: str
    stop_signal: str = "SIGTERM"
    signal_target: str = "main"
    quick_signal: str = "SIGTERM"
    reload_signal: str | None = None
    escalations: tuple[Escalation, ...] = ()
    worker: bool = False  # a background worker (restarted by default)


PROFILES = {
    "gunicorn": Profile("gunicorn", quick_signal="SIGQUIT", reload_signal="SIGHUP"),
    "uvicorn": Profile("uvicorn"),
    "qcluster": Profile("qcluster", worker=True),
    "celery-worker": Profile(
        "celery-worker",
        quick_signal="SIGQUIT",
        escalations=(Escalation(after=0.6, signal="SIGQUIT"),),
        worker=True,
    ),
    "celery-beat": Profile("celery-beat", worker=True),
    "native": Profile("native", quick_signal="SIGQUIT", worker=True),
    "db-worker": Profile(
        "db-worker", escalations=(Escalation(after=0.6, signal="SIGTERM"),), worker=True,
    ),
    "generic": Profile("generic", signal_target="group"),
}


def _python_target(program: tuple[str, ...]) -> tuple[str, ...]:
    """For `python [-opts] -m mod args` or `python script.py args`, the words after python."""
    words = list(program[1:])
    while words and words[0].startswith("-") and words[0] != "-m":
        words.pop(0)
    if words[:1] == ["-m"]:
        return tuple(words[1:])
    return tuple(words)


def detect(program: tuple[str, ...]) -> Profile:
    """The profile for the program a Procfile line finally runs."""
    if not program:
        return PROFILES["generic"]
    name = os.path.basename(program[0])
    words = program
    if name.startswith("python"):
        words = _python_target(program)
        name = os.path.basename(words[0]) if words else name
    args = set(words[1:])
    if name == "gunicorn":
        return PROFILES["gunicorn"]
    if name == "uvicorn":
        return PROFILES["uvicorn"]
    if name in ("manage.py", "django-admin", "django") and "qcluster" in args:
        return PROFILES["qcluster"]
    if name in ("manage.py", "django-admin", "django") and "db_worker" in args:
        return PROFILES["db-worker"]
    if name == "celery":
        if "worker" in args:
            return PROFILES["celery-worker"]
        if "beat" in args:
            return PROFILES["celery-beat"]
    if name in ("supervisor.native", "start-all-worker") or (
        name == "manage.py" and "native_worker" in args
    ):
        return PROFILES["native"]
    return PROFILES["generic"]
