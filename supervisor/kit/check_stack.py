"""`start-all check`: the Procfile's processes, the web server, migrations, DATABASE_URL and
leftover Celery imports. Each function is a registered check (see findings.py)."""

from __future__ import annotations

import ast
import os
import re
import shlex

from supervisor import profiles
from supervisor.kit import dburl, platforms, source
from supervisor.kit.findings import Finding, Process, Project

UVICORN_GRACEFUL_FLAG = "--timeout-graceful-shutdown"
UVICORN_GRACEFUL_SINCE = (0, 24)  # the first uvicorn with that flag
ASGI_HEALTH = "supervisor.contrib.asgi"


def procfile_line(project: Project, process: Process) -> str:
    return project.where("Procfile", process.lineno)


def check_processes(project: Project) -> list[Finding]:
    processes = project.processes
    findings = []
    kinds = [p.kind for p in processes]
    workers = [
        p for p in processes if profiles.PROFILES.get(p.kind, profiles.PROFILES["generic"]).worker
    ]
    if processes and not any(p.name == "web" for p in processes):
        findings.append(Finding("warning", "no 'web' process: the platform routes $PORT to it",
                                "Procfile", "name the web server's line `web:`"))
    if workers:
        listed = ", ".join(f"{p.kind} ({p.name})" for p in workers)
        findings.append(Finding("ok", f"worker kind: {listed}"))
    elif processes:
        findings.append(Finding("ok", "no background worker in the Procfile"))
    if "qcluster" in kinds and "celery-worker" in kinds:
        findings.append(Finding(
            "error", "both a django-q2 qcluster and a celery worker run: "
            "jobs and schedules defined for both execute twice", "Procfile",
            "keep one worker line"))
    if kinds.count("celery-beat") > 1:
        findings.append(Finding(
            "error", "more than one celery beat: every periodic task would be sent once per beat",
            "Procfile", "keep exactly one `celery beat` line"))
    if "celery-worker" in kinds and "celery-beat" not in kinds:
        periodic = periodic_tasks(project)
        if periodic:
            findings.append(Finding(
                "warning", "celery worker without celery beat: the periodic tasks "
                f"({periodic}) are never sent", "Procfile",
                "add `beat: celery -A APP beat` (one only)"))
    release = next((p for p in processes if p.name == "release"), None)
    if release and re.search(r"\bmigrate\b", release.line) and (
        "start-all migrate" not in release.line
    ):
        findings.append(Finding(
            "warning", "release: runs migrations without a lock",
            procfile_line(project, release),
            "use `release: start-all migrate`, which serialises overlapping deploys"))
    for process in processes:
        if process.kind == "gunicorn":
            findings += check_gunicorn(project, process)
    return findings


PERIODIC = re.compile(r"beat_schedule|BEAT_SCHEDULE|periodic_task|add_periodic_task")


def periodic_tasks(project: Project) -> str:
    """'file:line' of the first periodic-task declaration for Celery beat, '' if none."""
    for path in source.python_files(project.root):
        line = source.first_line(path, PERIODIC.pattern)
        if line:
            return project.where(path, line)
    if (project.settings or {}).get("START_ALL_SCHEDULES"):
        return "START_ALL_SCHEDULES"
    return ""


def calls_cpu_count(text: str) -> bool:
    """True when the code (not a comment) calls cpu_count()."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return any(
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "cpu_count"
        for node in ast.walk(tree)
    )


def check_gunicorn(project: Project, process: Process) -> list[Finding]:
    words = process.line.split()
    config = "gunicorn.conf.py"
    for flag in ("-c", "--config"):
        if flag in words[:-1]:
            config = words[words.index(flag) + 1]
    path = project.root / config
    if "cpu_count" in process.line or (path.is_file() and calls_cpu_count(path.read_text())):
        return [Finding(
            "warning", f"gunicorn workers derived from cpu_count() ({config}): that is the "
            "host's CPU count in a container",
            project.where(path, source.first_line(path, r"cpu_count")) if path.is_file()
            else procfile_line(project, process),
            "use WEB_CONCURRENCY, which start-all sizes from the memory limit")]
    return []


def expand(word: str, environ: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: environ.get(m.group(1), m.group(0)), word)


def asgi_target(process: Process, environ: dict[str, str]) -> str | None:
    """`module:attr` a uvicorn line serves."""
    try:
        words = shlex.split(process.line)
    except ValueError:
        return None
    program = next((i for i, w in enumerate(words) if w.endswith("uvicorn")), None)
    if program is None:
        return None
    with_value = {"--host", "--port", "--workers", "--app-dir", "--log-level",
                  UVICORN_GRACEFUL_FLAG, "--timeout-keep-alive", "--root-path", "--uds", "--fd"}
    skip = False
    for word in words[program + 1:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in with_value
        else:
            return expand(word, environ)
    return None


def check_uvicorn(project: Project) -> list[Finding]:
    findings = []
    for process in project.processes:
        if process.kind != "uvicorn":
            continue
        if UVICORN_GRACEFUL_FLAG in process.line:
            found = source.version(project.root, "uvicorn")
            if found and source.version_tuple(found[0]) < UVICORN_GRACEFUL_SINCE:
                findings.append(Finding(
                    "error", f"uvicorn {found[0]} ({found[1]}) has no {UVICORN_GRACEFUL_FLAG}: "
                    "the web process exits 2 at start", procfile_line(project, process),
                    f"require uvicorn>=0.24, or drop {UVICORN_GRACEFUL_FLAG} from the line "
                    "(start-all still stops it within its budget)"))
        target = asgi_target(process, project.environ)
        if not target or ":" not in target or "$" in target:
            continue
        path = source.module_file(project.root, target.split(":")[0])
        if path is None:
            findings.append(Finding(
                "warning", f"cannot find the ASGI module of {target!r} in the project",
                procfile_line(project, process), "check the uvicorn line (or ASGI_APP)"))
        elif ASGI_HEALTH not in path.read_text(encoding="utf-8", errors="replace"):
            findings.append(Finding(
                "warning", f"no health middleware in {target}: no combined health answer "
                "on $PORT (the platform sees the web process only)", project.where(path),
                f"`from {ASGI_HEALTH} import HealthMiddleware` and "
                "`app = HealthMiddleware(app)` after the app is built"))
        else:
            findings.append(Finding("ok", f"health on $PORT through {ASGI_HEALTH} ({target})"))
    return findings


def check_release_tools(project: Project) -> list[Finding]:
    release = next((p for p in project.processes if p.name == "release"), None)
    if release is None or not re.search(r"\balembic\b", release.line):
        return []
    missing = []
    if not (project.root / "alembic.ini").is_file():
        missing.append("no alembic.ini in the project")
    if not source.requires(project.root, "alembic") and source.version(
        project.root, "alembic"
    ) is None:
        missing.append("alembic is not installed or required")
    if not missing:
        return [Finding("ok", "release: Alembic migrations (alembic.ini found)")]
    return [Finding(
        "error", f"release: runs Alembic but {' and '.join(missing)}: the release exits 127 "
        "and nothing starts", procfile_line(project, release),
        "remove the release line (no schema migrations) or put your own migration command "
        "after `start-all migrate --`")]


def native_in_use(project: Project) -> bool:
    apps = (project.settings or {}).get("INSTALLED_APPS") or []
    return any(p.kind == "native" for p in project.processes) or (
        "supervisor.native.django" in apps
    )


# celery module -> where the native worker's names of that module live (docs/native-worker.md,
# "Migrating from Celery")
NATIVE_MODULES = {
    "celery": "supervisor.native",
    "celery.canvas": "supervisor.native",
    "celery.result": "supervisor.native",
    "celery.exceptions": "supervisor.native",
    "celery.schedules": "supervisor.native",
    "celery.utils.log": "supervisor.native",
    "celery.signals": "supervisor.native.signals",
    "celery.contrib.testing.worker": "supervisor.native.testing",
}


def native_import(celery_module: str, name: str) -> str | None:
    """The import that gives the native NAME for `from celery_module import name`."""
    import importlib

    target = NATIVE_MODULES.get(celery_module)
    if target is None or not name:
        return None
    try:
        module = importlib.import_module(target)
        exported = name in getattr(module, "_EXPORTS", {}) or hasattr(module, name)
    except Exception:
        return None
    return f"from {target} import {name}" if exported else None


def native_entry_files(project: Project) -> list | None:
    """The files the processes start from (the native worker's -A module, the ASGI app, the
    Django settings, URLs and apps); None when they cannot be told (then every file counts)."""
    modules: list[str] = []
    for process in project.processes:
        words = process.line.split()
        if process.kind == "native" and "-A" in words[:-1]:
            modules.append(expand(words[words.index("-A") + 1], project.environ).split(":")[0])
        target = asgi_target(process, project.environ) if process.kind == "uvicorn" else None
        if target:
            modules.append(target.split(":")[0])
    settings = project.settings or {}
    if project.settings_module:
        modules.append(project.settings_module)
        modules += [settings.get("ROOT_URLCONF") or "", settings.get("WSGI_APPLICATION") or ""]
    files = [source.module_file(project.root, m) for m in modules if m and "$" not in m]
    entries = [f for f in files if f is not None]
    for app in settings.get("INSTALLED_APPS") or []:  # Django imports their modules itself
        package = project.root.joinpath(*app.split(".")[:1])
        if (package / "__init__.py").is_file():
            entries += list(source.python_files(package))
    return entries or None


def check_celery_imports(project: Project) -> list[Finding]:
    if not native_in_use(project):
        return []
    entries = native_entry_files(project)
    used = source.reachable(project.root, entries) if entries else None
    findings = []
    for found in source.imports_of(project.root, "celery"):
        if used is not None and found.path.resolve() not in used:
            continue  # not imported by anything that runs (e.g. a Celery-only variant)
        where = project.where(found.path, found.line)
        names = found.names or ("",)
        for name in names:
            native = native_import(found.module, name)
            if found.module == "celery" and name in ("", "*"):
                fix = "import from supervisor.native instead (same names)"
            elif native:
                fix = f"`{native}`"
            else:
                fix = ("no native equivalent: keep it only for code that runs with "
                       "USE_DB_QUEUE=false, or remove it")
            shown = f"from {found.module} import {name}" if name else f"import {found.module}"
            findings.append(Finding(
                "error", f"`{shown}` under the native worker: this is Celery itself (its "
                "broker and result backend are not configured), not the native queue",
                where, fix))
    return findings


def check_database_url(project: Project) -> list[Finding]:
    url = project.environ.get("DATABASE_URL", "")
    if not url:
        return [Finding("ok", "DATABASE_URL not set (SQLite or the settings' own database)")]
    try:
        parsed = dburl.parse(url)
    except dburl.BadUrl as error:
        return [Finding("error", str(error))]
    findings = [Finding("ok", f"DATABASE_URL: {parsed.redacted}")]
    if url.strip().count("@") > 1:
        findings.append(Finding(
            "warning", "DATABASE_URL has an unescaped '@' in its user or password", "DATABASE_URL",
            "write it %40 (start-all copes; psql and other libpq tools read the host from the "
            "first '@')"))
    if platforms.is_supabase(parsed.host):
        findings.append(Finding("warning", platforms.SUPABASE_PAUSE))
    if parsed.host.startswith("db.") and parsed.host.endswith(".supabase.co"):
        findings.append(Finding(
            "warning", "db.<ref>.supabase.co is reachable over IPv6 only", "DATABASE_URL",
            "use the pooler host (aws-0-...pooler.supabase.com), which most platforms reach"))
    if not parsed.transaction_pooler:
        return findings
    for process in project.processes:
        if process.name == "release" and "start-all migrate" in process.line:
            findings.append(Finding(
                "error", "DATABASE_URL is a transaction pooler (port 6543): "
                "`start-all migrate` needs a session advisory lock",
                procfile_line(project, process), "use the session pooler (5432) for release"))
        elif process.kind == "native":
            findings.append(Finding(
                "error", f"DATABASE_URL is a transaction pooler (port 6543): the native "
                f"worker ({process.name}) needs LISTEN/NOTIFY and session locks",
                procfile_line(project, process), "give it the session pooler (5432)"))
    return findings


def stop_budget(environ: dict[str, str]) -> float:
    try:
        return float(environ.get("START_ALL_STOP_TIMEOUT") or os.environ.get(
            "START_ALL_STOP_TIMEOUT") or 8.0)
    except ValueError:
        return 8.0
