"""The resolved plan: everything the supervisor loop needs, decided before it starts.

Plain frozen dataclasses. `dataclasses.asdict(plan)` is what `--dry-run --json` prints and
what the lean runner receives (marshalled; see runner.py), so every field is a plain value.
Signals are stored by name ("SIGTERM") so the plan reads well in `--dry-run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("web", "worker", "release", "other")
RESTART_POLICIES = ("always", "on-failure", "never")
SIGNAL_TARGETS = ("main", "group")


@dataclass(frozen=True)
class Escalation:
    """A further signal sent when the process is still alive `after` this share of the budget."""

    after: float  # fraction of the stop budget, 0 < after < 1
    signal: str


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # Procfile name, e.g. "web"; the instance is logged as "web.1"
    command: str  # as the user wrote it
    argv: tuple[str, ...]  # what is executed
    role: str  # one of ROLES
    kind: str  # signal profile, see supervisor.profiles
    restart: str  # one of RESTART_POLICIES
    required: bool  # when it ends for good, the whole container stops
    stop_signal: str
    signal_target: str  # "main": the process itself; "group": its whole process group
    quick_signal: str  # sent instead of stop_signal on a quick stop (incoming SIGQUIT)
    reload_signal: str | None  # forwarded on incoming SIGHUP; None: HUP is not forwarded
    escalations: tuple[Escalation, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # added to the child's environment

    @property
    def instance(self) -> str:
        """How its output and state are labelled (the runner computes the same)."""
        return f"{self.name}.1"


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial: float  # delay before the 2nd restart in a row; the 1st is immediate
    backoff_max: float
    stable_after: float  # a run this long resets the backoff
    crash_loop_count: int  # this many exits ...
    crash_loop_window: float  # ... within this many seconds: give up, stop the container


@dataclass(frozen=True)
class LogOptions:
    prefix: bool = True
    format: str = "text"  # "text" | "json"
    color: str = "auto"  # "auto" (only on a TTY) | "always" | "never"


@dataclass(frozen=True)
class Plan:
    source: str  # the Procfile path, or "built-in defaults"
    processes: tuple[ProcessSpec, ...]
    release: ProcessSpec | None
    stop_timeout: float
    port: int
    restart: RestartPolicy
    logs: LogOptions
    notes: tuple[str, ...] = ()  # how defaults were chosen, shown by --dry-run
    health: dict = field(default_factory=dict)  # health server and probes (config.health_options)
    resources: dict = field(default_factory=dict)  # memory/CPU limits and sizing reasons
    role: dict = field(default_factory=dict)  # --only selection (supervisor/roles.py)
