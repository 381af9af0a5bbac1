"""`start-all [options]`: validate everything, then become the supervisor.

Heavy lifting (pydantic settings, Procfile parsing, checks) happens here, once. Then the process
execs `supervisor.runner`, which keeps the same pid and imports only the standard library.
"""

from __future__ import annotations

import argparse
import json
import marshal
import os
import sys
from dataclasses import asdict
from pathlib import Path

from supervisor import __version__
from supervisor.cli import SUBCOMMANDS
from supervisor.config import ConfigError, build_plan, load_settings
from supervisor.plan import Plan
from supervisor.procfile import ProcfileError, load_env_file
from supervisor.redact import redact, secrets_from

EXIT_CONFIG = 2
SIZING_VARIABLES = (
    "WEB_CONCURRENCY",
    "START_ALL_WORKER_CONCURRENCY",
    "START_ALL_WORKER_MAX_RSS_MB",
)
PR_SET_CHILD_SUBREAPER = 36


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="start-all",
        description="Run a web server and its worker in one container, as a proper PID 1.",
        epilog="subcommands (start-all SUBCOMMAND --help):\n" + "\n".join(
            f"  {name:<10} {about}" for name, (_, about) in SUBCOMMANDS.items()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--procfile", "-f", type=Path, help="Procfile to run (default: ./Procfile)")
    p.add_argument("--env-file", "-e", type=Path, help="env file to load (default: ./.env)")
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help="run only these Procfile processes, or roles web/worker "
                   "(default: $START_ALL_ONLY, else all)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--no-prefix", action="store_true", help="do not prefix output lines")
    p.add_argument("--log-format", choices=["text", "json"], help="output format")
    p.add_argument("--version", action="version", version=f"start-all {__version__}")
    return p




def load_environment(env_file: Path | None) -> None:
    """Merge the env file into os.environ; variables already set win (as with Docker)."""
    explicit = env_file or os.environ.get("START_ALL_ENV_FILE")
    path = Path(explicit) if explicit else Path(".env")
    if not explicit and not path.is_file():
        return
    for key, value in load_env_file(path).items():
        os.environ.setdefault(key, value)


def add_interpreter_to_path() -> None:
    """`/app/.venv/bin/start-all` without an activated venv must still find gunicorn & co."""
    bin_dir = os.path.dirname(sys.executable)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in parts:
        os.environ["PATH"] = os.pathsep.join([*filter(None, parts), bin_dir])


def resolve(args: argparse.Namespace) -> Plan:
    load_environment(args.env_file)
    add_interpreter_to_path()
    settings = load_settings(
        os.environ,
        procfile=args.procfile,
        log_prefix=False if args.no_prefix else None,
        log_format=args.log_format,
        only=args.only,
        check_port=False if args.dry_run else None,
    )
    return build_plan(settings, os.environ)


def describe(plan: Plan) -> str:
    """The plan for humans (`--dry-run`)."""
    r = plan.restart
    lines = [
        f"start-all plan from {plan.source}",
        f"  port {plan.port}; stop budget {plan.stop_timeout:g} s for all processes together",
        f"  restarts: first at once, then backoff {r.backoff_initial:g} s doubling to "
        f"{r.backoff_max:g} s (reset after {r.stable_after:g} s up); "
        f"{r.crash_loop_count} exits in {r.crash_loop_window:g} s stop the container",
    ]
    only = plan.role.get("only")
    lines.append(f"  role: {'--only ' + ','.join(only) if only else 'all processes'}")
    lines += [f"    {message}" for message in plan.role.get("messages", ())[1:]]
    if plan.release:
        lines.append(f"  release (runs once, first; failure aborts): {plan.release.command}")
    rows = [("PROCESS", "ROLE", "KIND", "RESTART", "REQUIRED", "STOP", "COMMAND")]
    for spec in plan.processes:
        stop = f"{spec.stop_signal}->{spec.signal_target}"
        for step in spec.escalations:
            stop += f", {step.signal}@{step.after * plan.stop_timeout:g}s"
        stop += f", SIGKILL->group@{plan.stop_timeout:g}s"
        required = "yes" if spec.required else "no"
        rows.append((spec.instance, spec.role, spec.kind, spec.restart, required, stop,
                     spec.command))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows if plan.processes else ():
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[-1]]))
    lines += [f"  note: {note}" for note in plan.notes]
    lines += describe_resources(plan)
    return "\n".join(lines)


def describe_resources(plan: Plan) -> list[str]:
    """Limits, sizing reasoning and health settings (`--dry-run`)."""
    r, h = plan.resources, plan.health
    mib = 1024 * 1024
    lines = [
        f"  memory: {r['memory_limit'] // mib} MiB ({r['memory_source']}); "
        f"CPUs: {r['cpus']:g} ({r['cpu_source']})",
    ]
    if r.get("reasons"):
        lines.append("  sizing (estimates in MiB, see docs/health.md):")
        lines += [f"    {reason}" for reason in r["reasons"]]
    elif r.get("sizing") == "off":
        lines.append("  sizing: off (START_ALL_SIZING=off)")
    for spec in plan.processes:
        passed = {k: v for k, v in spec.env.items() if k in SIZING_VARIABLES}
        if passed:
            shown = ", ".join(f"{k}={v}" for k, v in passed.items())
            lines.append(f"    {spec.instance} gets {shown}")
    where = f"{h['bind']}:{h['port']}" if h["port"] else "off (START_ALL_HEALTH_PORT=0)"
    token = "bearer token required for details" if h["token_set"] else "no token"
    lines.append(
        f"  health: http {where}, unix socket for children; {token}; probes every "
        f"{h['interval']:g} s, database every {h['db_interval']:g} s "
        f"(timeout {h['db_timeout']:g} s)"
    )
    for name, threshold in h["watchdog"].items():
        lines.append(
            f"  memory watchdog: {name} restarted gracefully above {threshold // mib} MiB "
            "(process tree PSS)"
        )
    return lines


def describe_settings(plan: Plan) -> list[str]:
    """What start_all_settings() changes in a Django app's settings, seen with the worker's
    environment (its sizing included); nothing for other apps (`--dry-run`)."""
    from supervisor.kit.check_django import settings_changes

    worker = next((s for s in plan.processes if s.role != "web"), None)
    environ = {**os.environ, **(worker.env if worker else {})}
    changes = settings_changes(Path.cwd(), environ)
    if changes is None:
        return []
    if isinstance(changes, str):
        return [f"  django settings: {changes}"]
    return ["  django settings: start_all_settings() changes:" if changes else
            "  django settings: start_all_settings() changes nothing"] + [
        f"    {change}" for change in changes]


def become_subreaper() -> None:
    """Outside a container, collect orphans of our children like PID 1 would (survives exec)."""
    if os.getpid() == 1:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init, as with any other supervisor


def exec_runner(plan: Plan) -> None:
    """Replace this process with the lean runner; the plan goes through a memory file."""
    fd = os.memfd_create("start-all-plan", 0)
    os.write(fd, marshal.dumps(asdict(plan)))
    os.set_inheritable(fd, True)
    os.environ["PYTHONUNBUFFERED"] = "1"  # children's output must reach us line by line
    sys.stdout.flush()
    sys.stderr.flush()
    runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
    os.execv(sys.executable, [sys.executable, "-S", runner, str(fd)])


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.json and not args.dry_run:
        print("start-all: --json only goes with --dry-run (nothing was started)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        plan = resolve(args)
    except (ConfigError, ProcfileError) as error:
        print(redact(f"start-all: {error}", secrets_from(dict(os.environ))), file=sys.stderr)
        return EXIT_CONFIG
    if args.dry_run:
        shown = json.dumps(asdict(plan), indent=2) if args.json else describe(plan)
        if not args.json:
            shown = "\n".join([shown, *describe_settings(plan)])
        print(redact(shown, secrets_from(dict(os.environ))))
        return 0
    become_subreaper()
    exec_runner(plan)
    return 0  # not reached
