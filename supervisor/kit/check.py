"""`start-all check [DIR]`: diagnose a project before it is deployed.

Reads the Procfile, the environment (plus DIR/.env) and, for Django, the settings module
(imported in a child process, never django.setup()). Prints one line per finding:

    error: ...     will break or run tasks twice
    warning: ...   works, but wastes memory or fails under load / on the platform
    ok: ...        what was understood

Exit codes: 0 no errors (warnings allowed unless --strict), 1 errors found, 2 bad input.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from supervisor import commands, profiles
from supervisor.kit import dburl, platforms, tasks_check
from supervisor.kit.init import SETTINGS_IN_MANAGE
from supervisor.procfile import ProcfileError, load_env_file, load_procfile

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2
HEALTH_MIDDLEWARE = "supervisor.contrib.django.HealthMiddleware"
DJANGO_Q_DEFAULT_RETRY = 60


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "ok"
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


@dataclass(frozen=True)
class Process:
    name: str
    line: str
    kind: str  # profile kind: gunicorn, qcluster, celery-worker, native, ...


def read_processes(project: Path) -> tuple[list[Process], list[Finding]]:
    path = project / "Procfile"
    if not path.is_file():
        return [], [Finding("warning", "no Procfile: start-all will guess the processes")]
    try:
        lines = load_procfile(path)
    except ProcfileError as error:
        return [], [Finding("error", str(error))]
    processes, findings = [], []
    for name, line in lines.items():
        try:
            program = commands.parse(line).program
        except commands.CommandError as error:
            findings.append(Finding("error", f"Procfile process {name!r}: {error}"))
            continue
        processes.append(Process(name, line, profiles.detect(program).kind))
    described = ", ".join(f"{p.name} ({p.kind})" for p in processes)
    findings.append(Finding("ok", f"Procfile: {described}"))
    return processes, findings


def check_processes(processes: list[Process], project: Path) -> list[Finding]:
    findings = []
    kinds = [p.kind for p in processes]
    workers = [
        p for p in processes if profiles.PROFILES.get(p.kind, profiles.PROFILES["generic"]).worker
    ]
    if processes and not any(p.name == "web" for p in processes):
        findings.append(Finding("warning", "no 'web' process: the platform routes $PORT to it"))
    if workers:
        listed = ", ".join(f"{p.kind} ({p.name})" for p in workers)
        findings.append(Finding("ok", f"worker kind: {listed}"))
    elif processes:
        findings.append(Finding("ok", "no background worker in the Procfile"))
    if "qcluster" in kinds and "celery-worker" in kinds:
        findings.append(
            Finding(
                "error",
                "both a django-q2 qcluster and a celery worker run: "
                "jobs and schedules defined for both execute twice",
            )
        )
    if kinds.count("celery-beat") > 1:
        findings.append(
            Finding(
                "error",
                "more than one celery beat: every periodic task would be sent once per beat",
            )
        )
    if "celery-worker" in kinds and "celery-beat" not in kinds:
        findings.append(
            Finding(
                "warning", "celery worker without celery beat: periodic tasks will never be sent"
            )
        )
    release = next((p for p in processes if p.name == "release"), None)
    if (
        release
        and re.search(r"\bmigrate\b", release.line)
        and "start-all migrate" not in (release.line)
    ):
        findings.append(
            Finding(
                "warning",
                "release: runs migrations without a lock; "
                "`start-all migrate` serialises overlapping deploys",
            )
        )
    for process in processes:
        if process.kind == "gunicorn":
            findings += check_gunicorn(process, project)
    return findings


def calls_cpu_count(source: str) -> bool:
    """True when the code (not a comment) calls cpu_count()."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return any(
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "cpu_count"
        for node in ast.walk(tree)
    )


def check_gunicorn(process: Process, project: Path) -> list[Finding]:
    words = process.line.split()
    config = "gunicorn.conf.py"
    for flag in ("-c", "--config"):
        if flag in words[:-1]:
            config = words[words.index(flag) + 1]
    path = project / config
    if "cpu_count" in process.line or (path.is_file() and calls_cpu_count(path.read_text())):
        return [
            Finding(
                "warning",
                f"gunicorn workers derived from cpu_count() ({config}): that is the host's "
                "CPU count in a container; use WEB_CONCURRENCY, which start-all sizes from "
                "the memory limit",
            )
        ]
    return []


SETTINGS_DUMP = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
def plain(value):
    return json.loads(json.dumps(value, default=repr))
databases = {}
for alias, db in (getattr(module, "DATABASES", None) or {}).items():
    databases[alias] = {k: db.get(k) for k in ("ENGINE", "HOST", "PORT", "CONN_MAX_AGE",
                        "CONN_HEALTH_CHECKS", "DISABLE_SERVER_SIDE_CURSORS")}
    databases[alias]["OPTIONS"] = sorted((db.get("OPTIONS") or {}).items(), key=str)
print(json.dumps(plain({
    "DEBUG": getattr(module, "DEBUG", False),
    "ALLOWED_HOSTS": list(getattr(module, "ALLOWED_HOSTS", [])),
    "INSTALLED_APPS": list(getattr(module, "INSTALLED_APPS", [])),
    "MIDDLEWARE": list(getattr(module, "MIDDLEWARE", [])),
    "Q_CLUSTER": getattr(module, "Q_CLUSTER", None),
    "CACHES": {a: c.get("BACKEND") for a, c in (getattr(module, "CACHES", None) or {}).items()},
    "DATABASES": databases,
    "CELERY": sorted(n for n in dir(module) if n.startswith("CELERY_")),
    "START_ALL_SCHEDULES": getattr(module, "START_ALL_SCHEDULES", None),
})))
"""


def settings_module(project: Path, environ: dict[str, str]) -> str | None:
    if environ.get("DJANGO_SETTINGS_MODULE"):
        return environ["DJANGO_SETTINGS_MODULE"]
    manage = project / "manage.py"
    found = SETTINGS_IN_MANAGE.search(manage.read_text()) if manage.is_file() else None
    return found.group(1) if found else None


def load_settings(project: Path, module: str, environ: dict[str, str]) -> dict | str:
    """The settings' relevant values, or a one-line error."""
    env = {
        **environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(project.resolve()), environ.get("PYTHONPATH")])
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_DUMP, module],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"cannot import settings {module}: {last}"
    return json.loads(result.stdout)


def check_django(settings: dict, processes: list[Process]) -> list[Finding]:
    findings = []
    apps = settings["INSTALLED_APPS"]
    django_q = "django_q" in apps
    kinds = {p.kind for p in processes}
    # What is active: CELERY_* settings or a celery process. (A celery.py module alone may be
    # an unused alternative, as in the booking example.)
    celery = bool(settings["CELERY"]) or "celery-worker" in kinds
    if django_q and celery:
        findings.append(
            Finding(
                "error",
                "Celery and django-q2 are both configured: a job or "
                "schedule defined for both runs twice; keep one of them",
            )
        )
    if django_q:
        findings += check_q_cluster(settings)
    middleware = settings["MIDDLEWARE"]
    hosts = settings["ALLOWED_HOSTS"]
    if not settings["DEBUG"] and not hosts:
        findings.append(
            Finding(
                "error",
                "ALLOWED_HOSTS is empty: every request, the "
                "platform's health check included, gets 400",
            )
        )
    elif HEALTH_MIDDLEWARE not in middleware:
        findings.append(
            Finding(
                "warning",
                f"{HEALTH_MIDDLEWARE} is not in MIDDLEWARE: no combined health answer on $PORT",
            )
        )
    elif middleware[0] != HEALTH_MIDDLEWARE and "*" not in hosts:
        findings.append(
            Finding(
                "warning",
                "the health checker sends the container's IP as "
                f"Host, which ALLOWED_HOSTS {hosts} rejects: put "
                f"{HEALTH_MIDDLEWARE} first in MIDDLEWARE",
            )
        )
    else:
        findings.append(Finding("ok", "health on $PORT through HealthMiddleware"))
    findings += check_databases(settings, django_q)
    if settings["START_ALL_SCHEDULES"] is not None:
        from supervisor.kit.schedules import ScheduleError, load_entries

        try:
            entries = load_entries(settings["START_ALL_SCHEDULES"])
            findings.append(Finding("ok", f"START_ALL_SCHEDULES: {len(entries)} valid entries"))
        except ScheduleError as error:
            findings.append(Finding("error", f"START_ALL_SCHEDULES: {error}"))
    return findings


def check_q_cluster(settings: dict) -> list[Finding]:
    q = settings["Q_CLUSTER"] or {}
    findings = []
    if "workers" not in q:
        findings.append(
            Finding(
                "warning",
                f"Q_CLUSTER has no 'workers': django-q2 starts "
                f"cpu_count() = {os.cpu_count()} workers (the host's CPUs); use "
                "supervisor.contrib.django.q_cluster_sizing()",
            )
        )
    retry = q.get("retry", DJANGO_Q_DEFAULT_RETRY)
    timeout = q.get("timeout")
    if timeout is None:
        findings.append(
            Finding(
                "warning",
                f"Q_CLUSTER has no 'timeout': a task running longer "
                f"than retry ({retry} s) is delivered again and runs twice",
            )
        )
    elif isinstance(timeout, int | float) and isinstance(retry, int | float) and timeout >= retry:
        findings.append(
            Finding(
                "error",
                f"Q_CLUSTER timeout ({timeout}) >= retry ({retry}): "
                "a task still running is delivered again and runs twice",
            )
        )
    backends = settings["CACHES"]
    default_cache = backends.get("default", "django.core.cache.backends.locmem.LocMemCache")
    if default_cache.endswith("LocMemCache") or default_cache.endswith("DummyCache"):
        findings.append(
            Finding(
                "warning",
                "django-q2 keeps its cluster status in the cache and "
                f"{default_cache.rsplit('.', 1)[-1]} is per process: use "
                "FileBasedCache in a container-local directory",
            )
        )
    return findings


def check_databases(settings: dict, django_q: bool) -> list[Finding]:
    findings = []
    default = settings["DATABASES"].get("default") or {}
    engine = default.get("ENGINE") or ""
    if django_q and "sqlite" not in engine and not default.get("CONN_MAX_AGE"):
        findings.append(
            Finding(
                "warning",
                "CONN_MAX_AGE is 0 with django-q2: a new database "
                "connection per broker operation (measured 6x slower); set "
                "CONN_MAX_AGE and CONN_HEALTH_CHECKS = True",
            )
        )
    if "postgresql" in engine and str(default.get("PORT")) == str(dburl.TRANSACTION_POOLER_PORT):
        options = dict(default.get("OPTIONS") or [])
        if (
            not default.get("DISABLE_SERVER_SIDE_CURSORS")
            or options.get("prepare_threshold", 0) is not None
        ):
            findings.append(
                Finding(
                    "error",
                    "database on the transaction pooler (port 6543) "
                    "needs DISABLE_SERVER_SIDE_CURSORS = True and OPTIONS "
                    "prepare_threshold = None",
                )
            )
    return findings


def check_database_url(url: str, processes: list[Process]) -> list[Finding]:
    if not url:
        return [Finding("ok", "DATABASE_URL not set (SQLite or the settings' own database)")]
    parsed = dburl.parse(url)
    findings = [Finding("ok", f"DATABASE_URL: {parsed.redacted}")]
    if platforms.is_supabase(parsed.host):
        findings.append(Finding("warning", platforms.SUPABASE_PAUSE))
    if parsed.host.startswith("db.") and parsed.host.endswith(".supabase.co"):
        findings.append(
            Finding(
                "warning",
                "db.<ref>.supabase.co is reachable over IPv6 only; "
                "most platforms need the pooler host (aws-0-...pooler.supabase.com)",
            )
        )
    if not parsed.transaction_pooler:
        return findings
    for process in processes:
        if process.name == "release" and "start-all migrate" in process.line:
            findings.append(
                Finding(
                    "error",
                    "DATABASE_URL is a transaction pooler (port 6543): "
                    "`start-all migrate` needs a session advisory lock; use the "
                    "session pooler (5432) for release",
                )
            )
        elif process.kind == "native":
            findings.append(
                Finding(
                    "error",
                    f"DATABASE_URL is a transaction pooler (port 6543): "
                    f"the native worker ({process.name}) needs LISTEN/NOTIFY "
                    "and session locks; give it the session pooler (5432)",
                )
            )
    return findings


def diagnose(project: Path, environ: dict[str, str]) -> list[Finding]:
    processes, findings = read_processes(project)
    findings += check_processes(processes, project)
    module = settings_module(project, environ)
    if module:
        settings = load_settings(project, module, environ)
        if isinstance(settings, str):
            findings.append(Finding("error", settings))
        else:
            findings.append(Finding("ok", f"Django settings: {module}"))
            findings += check_django(settings, processes)
    findings += check_database_url(environ.get("DATABASE_URL", ""), processes)
    findings += [Finding(*finding) for finding in platforms.check(project, environ)]
    findings += [Finding(*finding) for finding in tasks_check.check(project, environ)]
    return findings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="start-all check",
        description=__doc__.split("\n")[0],
        epilog="Exit: 0 no errors, 1 errors (or warnings with --strict), 2 bad input.",
    )
    p.add_argument("dir", nargs="?", default=".", type=Path, help="project directory (.)")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    project: Path = args.dir
    if not project.is_dir():
        print(f"start-all check: {project} is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    environ = dict(os.environ)
    if (project / ".env").is_file():
        try:
            environ = {**load_env_file(project / ".env"), **environ}
        except ProcfileError as error:
            print(f"start-all check: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    findings = diagnose(project, environ)
    for finding in findings:
        print(finding)
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    print(f"{errors} error(s), {warnings} warning(s)")
    return EXIT_PROBLEMS if errors or (args.strict and warnings) else EXIT_OK
