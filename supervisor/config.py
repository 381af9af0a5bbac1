"""Settings (environment, `START_ALL_*`) and the Procfile, resolved into one frozen Plan.

Everything that can be wrong with the input is found here, before any process starts, and
reported as a ConfigError whose message is one line naming the culprit.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from supervisor import commands, profiles, resources, roles
from supervisor.native import use_db_queue
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
    only: str | None = None  # roles from one image (supervisor/roles.py)
    release_role: str = "web"  # which container (by its --only set) runs release:
    port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("PORT"))
    # health (docs/health.md)
    health_port: int = Field(8081, ge=0, le=65535)  # 0: no TCP health server
    health_bind: str = "0.0.0.0"
    health_token: SecretStr | None = None  # read by PID 1 from its environment, never planned
    health_path: str = "/healthz"  # where the $PORT middlewares answer
    health_web_path: str | None = None  # HTTP GET probe of $PORT; unset: TCP connect
    health_interval: float = Field(2.0, gt=0, le=300)  # web/worker probes and memory
    health_db_interval: float = Field(30.0, gt=0, le=3600)
    health_db_timeout: float = Field(3.0, gt=0, le=60)
    health_socket: str | None = None  # set by the supervisor for its children
    health_url: str | None = None  # set by the supervisor for its children
    heartbeat_file: str | None = None  # the native worker's heartbeat (set for its children)
    heartbeat_interval: float = Field(5.0, gt=0, le=3600)
    # resources
    sizing: Literal["auto", "off"] = "auto"
    worker_concurrency: int | None = Field(None, ge=1, le=1024)
    worker_max_rss_mb: int | None = Field(None, ge=1)
    watchdog_share: float = Field(0.5, ge=0, le=1)  # of the memory limit; 0: no watchdog
    watchdog_mb: int | None = Field(None, ge=1)


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
    name: str,
    line: str,
    settings: Settings,
    environ: Mapping[str, str],
    role: str | None = None,
) -> ProcessSpec:
    try:
        command = commands.parse(line)
    except commands.CommandError as error:
        raise ConfigError(f"process {name!r}: {error}: {line}") from None
    _check_program(name, command, line, environ.get("PATH"))
    profile = profiles.detect(command.program)
    if profile.kind == "native" and not use_db_queue(environ):
        # USE_DB_QUEUE=false: the native worker execs `celery worker -B`, whose warm shutdown
        # has no deadline, so it needs the celery escalation
        profile = profiles.PROFILES["celery-worker"]
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
    release_line = lines.pop("release", None)
    release = (
        build_spec("release", release_line, settings, environ, role="release")
        if release_line
        else None
    )
    if not lines:
        raise ConfigError(f"{source}: only a release process, nothing to run after it")
    specs = tuple(build_spec(name, line, settings, environ) for name, line in lines.items())
    assert all(spec.role in ROLES for spec in specs)
    try:
        selection = roles.select(
            specs, release is not None, settings.only, settings.release_role, source
        )
    except roles.SelectionError as error:
        raise ConfigError(str(error)) from None
    specs = tuple(s for s in specs if s.name in selection.names)
    if not selection.release_here:
        release = None
    if settings.check_port and any(spec.role == "web" for spec in specs):
        _check_port_free(settings.port)
    specs, resources_info, watch = apply_sizing(specs, settings, environ)
    health = health_options(settings, specs, watch, resources_info["memory_limit"])
    health["only"] = list(selection.only) if selection.only else None
    child_env = health.pop("child_env")
    specs = tuple(
        replace(s, env={**s.env, **child_env, **_heartbeat_env(s, health)}) for s in specs
    )
    if release is not None:
        release = replace(release, env={**release.env, **health["release_env"]})
    health.pop("release_env")
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
        health=health,
        resources=resources_info,
        role={
            "only": list(selection.only) if selection.only else None,
            "release": selection.release_here,
            "messages": list(selection.messages),
        },
    )


# ----- resources and health (docs/health.md) ----------------------------------------------------

WEB_KINDS = ("gunicorn", "uvicorn")
WORKER_KINDS = ("qcluster", "celery-worker", "native")


def _option(words: tuple[str, ...], short: str | None, long: str) -> str | None:
    """The value of `-w 3`, `-w3`, `--workers 3` or `--workers=3` among `words`, if given."""
    for i, word in enumerate(words):
        if word == long or (short and word == short):
            return words[i + 1] if i + 1 < len(words) else ""
        if word.startswith(long + "="):
            return word.split("=", 1)[1]
        if short and word.startswith(short) and len(word) > len(short) and word[2:].isdigit():
            return word[len(short):]
    return None


def _count(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name}: expected a whole number >= 1 (got {value!r})")
    return int(value)


def _explicit_web(spec: ProcessSpec, environ: Mapping[str, str]) -> tuple[int | None, bool]:
    """(count, set_by_user): what the user chose for the web server's processes."""
    words = commands.parse(spec.command).program
    value = _option(words, "-w" if spec.kind == "gunicorn" else None, "--workers")
    if value is not None:
        return _count(value, f"process {spec.name!r} --workers"), True
    if spec.kind == "gunicorn":
        cmd_args = tuple(shlex.split(environ.get("GUNICORN_CMD_ARGS", "")))
        value = _option(cmd_args, "-w", "--workers")
        if value is not None:
            return _count(value, "GUNICORN_CMD_ARGS --workers"), True
    if "WEB_CONCURRENCY" in environ:
        return _count(environ["WEB_CONCURRENCY"], "WEB_CONCURRENCY"), True
    return None, False


def _explicit_worker(spec: ProcessSpec, settings: Settings) -> tuple[int | None, bool]:
    words = commands.parse(spec.command).program
    short = "-c" if spec.kind == "celery-worker" else None
    value = _option(words, short, "--concurrency")
    if value is not None:
        return _count(value, f"process {spec.name!r} --concurrency"), True
    if settings.worker_concurrency is not None:
        return settings.worker_concurrency, True
    return None, False


def apply_sizing(
    specs: tuple[ProcessSpec, ...], settings: Settings, environ: Mapping[str, str]
) -> tuple[tuple[ProcessSpec, ...], dict, dict[str, int]]:
    """Size web and worker from the memory limit and pass the counts through each tool's own
    knob; never override what the user set. Returns the specs, the resource facts with the
    reasoning (for --dry-run), and the watchdog thresholds per worker instance."""
    limit, limit_source = resources.memory_limit()
    cpus, cpu_source = resources.cpu_limit()
    info = {
        "memory_limit": limit,
        "memory_source": limit_source,
        "cpus": round(cpus, 3),
        "cpu_source": cpu_source,
        "sizing": settings.sizing,
        "reasons": [],
        "estimates_mib": dict(resources.ESTIMATES),
    }
    web = next((s for s in specs if s.role == "web" and s.kind in WEB_KINDS), None)
    worker = next((s for s in specs if s.role == "worker" and s.kind in WORKER_KINDS), None)
    if settings.sizing == "auto" and (web or worker):
        web_n, web_set = _explicit_web(web, environ) if web else (None, False)
        worker_n, worker_set = _explicit_worker(worker, settings) if worker else (None, False)
        result = resources.size(
            limit, cpus, web_n, worker_n, web is not None, worker.kind if worker else None
        )
        info["reasons"] = result["reasons"]
        if not result["fits"]:
            raise ConfigError(
                f"the processes do not fit in memory ({limit_source}): {result['error']}; "
                "lower WEB_CONCURRENCY / START_ALL_WORKER_CONCURRENCY, raise the limit, "
                "or set START_ALL_SIZING=off"
            )
        info["web_concurrency"] = result["web"] if web else None
        info["worker_concurrency"] = result["worker"] if worker else None
        worker_budget = (
            resources.ESTIMATES["worker_per_unit"] + resources.ESTIMATES["worker_base"]
        ) * resources.MB
        max_rss_mb = settings.worker_max_rss_mb or worker_budget // resources.MB
        specs = tuple(
            _with_sizing(s, web, worker, result, web_set, worker_set, max_rss_mb)
            for s in specs
        )
    watch: dict[str, int] = {}
    if settings.watchdog_share > 0 or settings.watchdog_mb:
        threshold = (
            settings.watchdog_mb * resources.MB
            if settings.watchdog_mb
            else int(limit * settings.watchdog_share)
        )
        watch = {s.instance: threshold for s in specs if s.role == "worker"}
    return specs, info, watch


def _with_sizing(spec, web, worker, result, web_set, worker_set, max_rss_mb) -> ProcessSpec:
    if spec is web and not web_set:
        # gunicorn and uvicorn both read WEB_CONCURRENCY as their default worker count
        return replace(spec, env={**spec.env, "WEB_CONCURRENCY": str(result["web"])})
    if spec is not worker:
        return spec
    env = dict(spec.env)
    if not worker_set:
        env["START_ALL_WORKER_CONCURRENCY"] = str(result["worker"])
    if spec.kind == "qcluster":
        # Q_CLUSTER lives in the user's settings: they read these (supervisor.contrib.django)
        env.setdefault("START_ALL_WORKER_MAX_RSS_MB", str(max_rss_mb))
        return replace(spec, env=env)
    if spec.kind == "celery-worker":
        words = commands.parse(spec.command).program
        extra = []
        if _option(words, "-c", "--concurrency") is None:
            # also when START_ALL_WORKER_CONCURRENCY set it: celery itself does not read it
            extra += ["--concurrency", str(result["worker"])]
        if _option(words, None, "--max-memory-per-child") is None:
            extra += ["--max-memory-per-child", str(max_rss_mb * 1024)]  # KiB
        command = commands.parse(f"{spec.command} {' '.join(extra)}") if extra else None
        if command is not None and command.execs:
            return replace(spec, env=env, argv=command.argv, command=f"{spec.command} "
                           f"{' '.join(extra)}")
    return replace(spec, env=env)


def _heartbeat_env(spec: ProcessSpec, health: dict) -> dict[str, str]:
    """The native worker touches this file every interval while its claim loop is healthy."""
    path = health["heartbeats"].get(spec.instance)
    if path is None:
        return {}
    return {
        "START_ALL_HEARTBEAT_FILE": path,
        "START_ALL_HEARTBEAT_INTERVAL": f"{health['heartbeat_interval']:g}",
    }


def health_options(
    settings: Settings, specs: tuple[ProcessSpec, ...], watch: dict[str, int], limit: int
) -> dict:
    """What PID 1's health server and probes need, and the variables its children get."""
    run_dir = os.path.join(tempfile.gettempdir(), f"start-all-{secrets.token_hex(6)}")
    socket_path = settings.health_socket or os.path.join(run_dir, "health.sock")
    child_env = {"START_ALL_HEALTH_SOCKET": socket_path}
    if settings.health_port:
        child_env["START_ALL_HEALTH_URL"] = f"http://127.0.0.1:{settings.health_port}"
    heartbeats = {}
    for spec in specs:
        if spec.kind == "native":
            heartbeats[spec.instance] = settings.heartbeat_file or os.path.join(
                run_dir, f"heartbeat-{spec.name}"
            )
    options = {
        "port": settings.health_port,
        "bind": settings.health_bind,
        "socket": socket_path,
        "run_dir": run_dir,
        "token_set": settings.health_token is not None,
        "interval": settings.health_interval,
        "web_path": settings.health_web_path,
        "db_interval": settings.health_db_interval,
        "db_timeout": settings.health_db_timeout,
        "heartbeat_interval": settings.heartbeat_interval,
        "heartbeats": heartbeats,
        "watchdog": watch,
        "memory_limit": limit,
        "child_env": child_env,
        "release_env": dict(child_env),
    }
    return options
