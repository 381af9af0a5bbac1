"""Settings (environment, `START_ALL_*`) and the Procfile, resolved into one frozen Plan.

Everything that can be wrong with the input is found here, before any process starts, and
reported as a ConfigError whose message is one line naming the culprit.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from supervisor import commands, profiles
from supervisor.plan import (
    ROLES,
    LogOptions,
    Plan,
    ProcessSpec,
    RestartPolicy,
)
from supervisor.procfile import ProcfileError, load_procfile

ENV_PREFIX = "START_ALL_"
SIGNAL_NAMES = {"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL"}
WORKER_ROLE_NAMES = {"worker", "beat", "scheduler", "qcluster", "celery", "jobs", "queue"}


class ConfigError(ValueError):
    """Bad input; the message is a single line naming the culprit."""


def _signal_name(value: str) -> str:
    name = value.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in SIGNAL_NAMES:
        raise ValueError(f"unknown signal {value!r} (use one of {', '.join(sorted(SIGNAL_NAMES))})")
    return name


class ProcessOverride(BaseModel):
    """Per-process settings: START_ALL_PROCESSES__<NAME>__<FIELD>=value."""

    model_config = ConfigDict(extra="forbid")
    restart: Literal["always", "on-failure", "never"] | None = None
    required: bool | None = None
    stop_signal: str | None = None
    signal_target: Literal["main", "group"] | None = None
    role: Literal["web", "worker", "other"] | None = None

    _check_signal = field_validator("stop_signal")(
        lambda cls, v: None if v is None else _signal_name(v)
    )


class Settings(BaseSettings):
    """Every setting, read from the environment with the START_ALL_ prefix."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    procfile: Path | None = None
    env_file: Path | None = None
    worker: Literal["auto", "qcluster", "native", "celery", "none"] = "auto"
    wsgi_app: str | None = None
    worker_app: str | None = None
    stop_timeout: float = Field(8.0, gt=0, le=3600)
    backoff_initial: float = Field(1.0, ge=0)
    backoff_max: float = Field(30.0, ge=0)
    stable_after: float = Field(10.0, ge=0)
    crash_loop_count: int = Field(5, ge=1)
    crash_loop_window: float = Field(60.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_prefix: bool = True
    color: Literal["auto", "always", "never"] = "auto"
    check_port: bool = True
    processes: dict[str, ProcessOverride] = {}
    port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("PORT"))


def known_variables() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields if name != "port"}


def load_settings(environ: Mapping[str, str], **overrides: object) -> Settings:
    """Settings from `environ` (normally os.environ) plus command-line overrides."""
    known = known_variables()
    for key in environ:
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            if not upper.startswith(ENV_PREFIX + "PROCESSES__"):
                raise ConfigError(f"unknown setting {key} (known: {', '.join(sorted(known))})")
    try:
        return _settings_from(environ, {k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        first = error.errors()[0]
        location = [str(part) for part in first["loc"]]
        name = "PORT" if location == ["PORT"] else ENV_PREFIX + "__".join(location).upper()
        given = first.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        raise ConfigError(f"{name}: {first['msg']}{shown}") from None


def _settings_from(environ: Mapping[str, str], overrides: dict) -> Settings:
    # pydantic-settings reads os.environ; swap in the mapping we were given for the duration.
    saved, wanted = dict(os.environ), dict(environ)
    try:
        os.environ.clear()
        os.environ.update(wanted)
        return Settings(**overrides)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def default_processes(settings: Settings, environ: Mapping[str, str]) -> tuple[dict, list[str]]:
    """The processes to run when there is no Procfile, and the reasons for each choice."""
    notes: list[str] = []
    python = shlex.quote(sys.executable)
    django_settings = environ.get("DJANGO_SETTINGS_MODULE")
    processes: dict[str, str] = {}

    app = settings.wsgi_app
    if app:
        notes.append(f"web: START_ALL_WSGI_APP={app}")
    elif django_settings:
        app = f"{django_settings.split('.')[0]}.wsgi:application"
        notes.append(f"web: {app} derived from DJANGO_SETTINGS_MODULE={django_settings}")
    else:
        raise ConfigError(
            "no Procfile here and neither START_ALL_WSGI_APP nor DJANGO_SETTINGS_MODULE is set: "
            "nothing to run (write a Procfile or set one of them)"
        )
    # gunicorn's own graceful timeout (30 s) is longer than our budget: make it finish in time.
    graceful = max(1, int(settings.stop_timeout) - 1)
    processes["web"] = f"gunicorn --bind 0.0.0.0:$PORT --graceful-timeout {graceful} {app}"

    worker = settings.worker
    if worker == "auto":
        if django_settings and importlib.util.find_spec("django_q") is not None:
            worker = "qcluster"
            notes.append("worker: qcluster (DJANGO_SETTINGS_MODULE set and django-q2 installed)")
        elif settings.worker_app:
            worker = "native"
            notes.append("worker: native (START_ALL_WORKER_APP set)")
        else:
            worker = "none"
            notes.append("worker: none (set START_ALL_WORKER to run one)")
    manage = Path("manage.py").exists()
    if worker == "qcluster":
        processes["worker"] = (
            f"{python} manage.py qcluster" if manage else f"{python} -m django qcluster"
        )
    elif worker == "native":
        if settings.worker_app:
            processes["worker"] = f"{python} -m supervisor.native worker -A {settings.worker_app}"
        elif manage:
            processes["worker"] = f"{python} manage.py native_worker"
        else:
            raise ConfigError("START_ALL_WORKER=native needs START_ALL_WORKER_APP=module:app")
    elif worker == "celery":
        if not settings.worker_app:
            raise ConfigError("START_ALL_WORKER=celery needs START_ALL_WORKER_APP (celery -A ...)")
        processes["worker"] = f"celery -A {settings.worker_app} worker --loglevel INFO"
        processes["beat"] = f"celery -A {settings.worker_app} beat --loglevel INFO"
    return processes, notes


def _role(name: str, profile: profiles.Profile) -> str:
    if name == "web":
        return "web"
    if profile.worker or name in WORKER_ROLE_NAMES:
        return "worker"
    return "other"


def _check_program(name: str, command: commands.Command, line: str, path: str | None) -> None:
    """Fail early on a program that does not exist, rather than crash-looping on exit 127."""
    program = command.program
    if not program or "$" in program[0] or program[0] in commands.SHELL_BUILTINS:
        return
    changes_dir = " cd " in f" {line}"
    executable = program[0]
    if "/" in executable:
        found = changes_dir or os.access(executable, os.X_OK)
    else:
        found = shutil.which(executable, path=path) is not None
    if not found:
        raise ConfigError(f"process {name!r}: command not found: {executable}")
    script = profiles._python_target(program)[:1]
    if (
        os.path.basename(executable).startswith("python")
        and script
        and script[0].endswith(".py")
        and "-m" not in program
        and not changes_dir
        and not Path(script[0]).exists()
    ):
        raise ConfigError(f"process {name!r}: file not found: {script[0]}")


def build_spec(
    name: str, line: str, settings: Settings, path: str | None, role: str | None = None
) -> ProcessSpec:
    try:
        command = commands.parse(line)
    except commands.CommandError as error:
        raise ConfigError(f"process {name!r}: {error}: {line}") from None
    _check_program(name, command, line, path)
    profile = profiles.detect(command.program)
    override = settings.processes.get(name) or settings.processes.get(name.lower())
    override = override or ProcessOverride()
    role = role or override.role or _role(name, profile)
    default_restart = "never" if role in ("web", "release") else "always"
    target = override.signal_target or profile.signal_target
    if not command.execs and target == "main":
        target = "group"  # the main pid is a shell that would not pass the signal on
    return ProcessSpec(
        name=name,
        command=line,
        argv=command.argv,
        role=role,
        kind=profile.kind,
        restart=override.restart or default_restart,
        required=True if override.required is None else override.required,
        stop_signal=override.stop_signal or profile.stop_signal,
        signal_target=target,
        quick_signal=profile.quick_signal,
        reload_signal=profile.reload_signal,
        escalations=profile.escalations,
    )


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            raise ConfigError(f"port {port} (PORT) is already in use") from None


def build_plan(settings: Settings, environ: Mapping[str, str]) -> Plan:
    """Resolve settings + Procfile (or defaults) into the Plan the runner executes."""
    procfile = settings.procfile
    if procfile is None and Path("Procfile").is_file():
        procfile = Path("Procfile")
    notes: list[str] = []
    try:
        if procfile is not None:
            lines = load_procfile(procfile)
            source = str(procfile)
        else:
            lines, notes = default_processes(settings, environ)
            source = "built-in defaults (no Procfile)"
    except ProcfileError as error:
        raise ConfigError(str(error)) from None

    for name in settings.processes:
        if name not in lines and name.lower() not in {n.lower() for n in lines}:
            raise ConfigError(
                f"{ENV_PREFIX}PROCESSES__{name.upper()}__...: no process {name!r} "
                f"in {source} (processes: {', '.join(lines)})"
            )
    path = environ.get("PATH")
    release_line = lines.pop("release", None)
    release = (
        build_spec("release", release_line, settings, path, role="release")
        if release_line
        else None
    )
    if not lines:
        raise ConfigError(f"{source}: only a release process, nothing to run after it")
    specs = tuple(build_spec(name, line, settings, path) for name, line in lines.items())
    assert all(spec.role in ROLES for spec in specs)
    if settings.check_port and any(spec.role == "web" for spec in specs):
        _check_port_free(settings.port)
    return Plan(
        source=source,
        processes=specs,
        release=release,
        stop_timeout=settings.stop_timeout,
        port=settings.port,
        restart=RestartPolicy(
            backoff_initial=settings.backoff_initial,
            backoff_max=settings.backoff_max,
            stable_after=settings.stable_after,
            crash_loop_count=settings.crash_loop_count,
            crash_loop_window=settings.crash_loop_window,
        ),
        logs=LogOptions(
            prefix=settings.log_prefix, format=settings.log_format, color=settings.color
        ),
        notes=tuple(notes),
    )
