"""The plan: settings and the Procfile (or built-in defaults) resolved into one frozen Plan.

Everything that can be wrong with the input is found here or in the modules it calls, before
any process starts, and reported as a ConfigError whose message is one line naming the
culprit. Where things live:
- settings.py: the START_ALL_* variables (pydantic), ConfigError;
- procfile.py: Procfile and .env parsing;
- sizing.py: how many web and worker processes run (at start, then from measurement);
- this module: which processes run, how each is signalled, the health options.
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

from supervisor import commands, profiles, roles
from supervisor.native import use_db_queue
from supervisor.plan import (
    ROLES,
    LogOptions,
    Plan,
    ProcessSpec,
    RestartPolicy,
)
from supervisor.procfile import MAX_ARG, ProcfileError, load_procfile
from supervisor.settings import (  # noqa: F401  (re-exported: config.load_settings & co.)
    ENV_PREFIX,
    ConfigError,
    ProcessOverride,
    Settings,
    known_variables,
    load_settings,
)
from supervisor.sizing import apply_sizing

WORKER_ROLE_NAMES = {"worker", "beat", "scheduler", "qcluster", "celery", "jobs", "queue"}


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


def check_exec_size(what: str, argv: tuple[str, ...], environ: Mapping[str, str]) -> None:
    """What exec would refuse with E2BIG, refused now with a line naming the culprit."""
    for arg in argv:
        if len(arg.encode()) > MAX_ARG:
            raise ConfigError(f"{what}: the command is {len(arg.encode())} bytes; at most "
                              f"{MAX_ARG} (Linux MAX_ARG_STRLEN): put it in a script")
    total = sum(len(a.encode()) + 1 + 8 for a in argv)
    for key, value in environ.items():
        size = len(key.encode()) + len(value.encode()) + 2
        if size > MAX_ARG:
            raise ConfigError(f"environment variable {key[:60]} is {size} bytes; at most "
                              f"{MAX_ARG} (Linux MAX_ARG_STRLEN)")
        total += size + 8
    limit = os.sysconf("SC_ARG_MAX") - 4096  # the children get a few variables more
    if total > limit:
        raise ConfigError(f"{what}: command and environment are {total} bytes; at most "
                          f"{limit} (ARG_MAX)")


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
    check_exec_size(f"process {name!r}", command.argv, environ)
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
    from supervisor.kit.dburl import validate

    problem = validate(environ.get("DATABASE_URL", ""))  # one masked line, not a traceback later
    if problem:
        raise ConfigError(problem)
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
    health["adaptive"] = resources_info.get("adaptive")  # sizing.WebSizer, in PID 1
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


# ----- health (docs/health.md) ------------------------------------------------------------------


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
        "web_probe": {  # the application check (webprobe.py), only where a web process runs
            "path": settings.web_probe_path,
            "host": settings.web_probe_host,
            "timeout": settings.web_probe_timeout,
        } if settings.web_probe_path and any(s.role == "web" for s in specs) else None,
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
