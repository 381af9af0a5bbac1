"""`start-all check` for Django projects: the settings module's values (imported in a child
process, never django.setup()), where they are set, and what they will do in production."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from supervisor.kit import dburl, source
from supervisor.kit.check_stack import stop_budget
from supervisor.kit.findings import Finding, Project
from supervisor.kit.init import SETTINGS_IN_MANAGE

HEALTH_MIDDLEWARE = "supervisor.contrib.django.HealthMiddleware"
DJANGO_Q_DEFAULT_RETRY = 60
SQLITE_OPTIONS_SINCE = (5, 1)  # `init_command` and `transaction_mode` for SQLite
SQLITE_NEW_OPTIONS = ("init_command", "transaction_mode")

SETTINGS_DUMP = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
def plain(value):
    return json.loads(json.dumps(value, default=repr))
try:
    import django
    version = django.get_version()
except ImportError:
    version = None
databases = {}
for alias, db in (getattr(module, "DATABASES", None) or {}).items():
    databases[alias] = {k: db.get(k) for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST",
                        "PORT", "CONN_MAX_AGE", "CONN_HEALTH_CHECKS",
                        "DISABLE_SERVER_SIDE_CURSORS")}
    databases[alias]["NAME"] = str(db.get("NAME") or "")
    databases[alias]["OPTIONS"] = sorted((db.get("OPTIONS") or {}).items(), key=str)
storages = {a: s.get("BACKEND") for a, s in (getattr(module, "STORAGES", None) or {}).items()}
print(json.dumps(plain({
    "FILE": getattr(module, "__file__", None),
    "DJANGO_VERSION": version,
    "DEBUG": getattr(module, "DEBUG", False),
    "ALLOWED_HOSTS": list(getattr(module, "ALLOWED_HOSTS", [])),
    "INSTALLED_APPS": list(getattr(module, "INSTALLED_APPS", [])),
    "MIDDLEWARE": list(getattr(module, "MIDDLEWARE", [])),
    "ROOT_URLCONF": getattr(module, "ROOT_URLCONF", None),
    "WSGI_APPLICATION": getattr(module, "WSGI_APPLICATION", None),
    "Q_CLUSTER": getattr(module, "Q_CLUSTER", None),
    "CACHES": {a: c.get("BACKEND") for a, c in (getattr(module, "CACHES", None) or {}).items()},
    "DATABASES": databases,
    "STATIC_ROOT": str(getattr(module, "STATIC_ROOT", None) or ""),
    "STATICFILES_STORAGE": storages.get("staticfiles")
        or getattr(module, "STATICFILES_STORAGE", None),
    "CELERY": sorted(n for n in dir(module) if n.startswith("CELERY_")),
    "START_ALL_SCHEDULES": getattr(module, "START_ALL_SCHEDULES", None),
    "START_ALL_SETTINGS_CHANGES": getattr(module, "START_ALL_SETTINGS_CHANGES", None),
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
        cwd=project, env=env, capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"cannot import settings {module}: {last}"
    return json.loads(result.stdout)


def settings_file(project: Project) -> Path | None:
    file = (project.settings or {}).get("FILE")
    return Path(file) if file else None


def where_set(project: Project, name: str) -> str:
    """'file:line' of the assignment of NAME that wins (the settings file if not found)."""
    path = settings_file(project)
    if path is None:
        return ""
    found = source.assignments(project.root, path, name)
    own = [a for a in found if not a.helper_call]  # the app's own line, else the helper's
    for assignment in (own or found)[-1:]:
        return project.where(assignment.path, assignment.line)
    return project.where(path)


def check_settings_changes(project: Project) -> list[Finding]:
    changes = project.settings.get("START_ALL_SETTINGS_CHANGES")
    if changes is None:
        return []
    if not changes:
        return [Finding("ok", "start_all_settings(): nothing changed")]
    return [Finding("ok", f"start_all_settings() sets {change}") for change in changes]


def check_basics(project: Project) -> list[Finding]:
    settings, findings = project.settings, []
    apps = settings["INSTALLED_APPS"]
    kinds = {p.kind for p in project.processes}
    # what is active: CELERY_* settings or a celery process (a celery.py module alone may be
    # an unused alternative, as in the booking example)
    celery = bool(settings["CELERY"]) or "celery-worker" in kinds
    if "django_q" in apps and celery:
        findings.append(Finding(
            "error", "Celery and django-q2 are both configured: a job or schedule defined "
            "for both runs twice", where_set(project, "INSTALLED_APPS"), "keep one of them"))
    if settings["DEBUG"] is True:
        findings.append(Finding(
            "error", "DEBUG is True: error pages show settings and code to anyone, and static "
            "files and memory behave differently from production", where_set(project, "DEBUG"),
            "DEBUG = os.environ.get(\"DEBUG\") == \"1\", unset in production"))
    middleware, hosts = settings["MIDDLEWARE"], settings["ALLOWED_HOSTS"]
    if not settings["DEBUG"] and not hosts:
        findings.append(Finding(
            "error", "ALLOWED_HOSTS is empty: every request, the platform's health check "
            "included, gets 400", where_set(project, "ALLOWED_HOSTS"),
            "list the app's host names (e.g. from an ALLOWED_HOSTS variable)"))
    elif HEALTH_MIDDLEWARE not in middleware:
        findings.append(Finding(
            "warning", f"{HEALTH_MIDDLEWARE} is not in MIDDLEWARE: no combined health answer "
            "on $PORT", where_set(project, "MIDDLEWARE"),
            "call start_all_settings(globals()) at the end of settings.py, or put it first"))
    elif middleware[0] != HEALTH_MIDDLEWARE and "*" not in hosts:
        findings.append(Finding(
            "warning", f"the health checker sends the container's IP as Host, which "
            f"ALLOWED_HOSTS {hosts} rejects", where_set(project, "MIDDLEWARE"),
            f"put {HEALTH_MIDDLEWARE} first in MIDDLEWARE"))
    else:
        findings.append(Finding("ok", "health on $PORT through HealthMiddleware"))
    return findings


def check_q_cluster(project: Project) -> list[Finding]:
    settings = project.settings
    if "django_q" not in settings["INSTALLED_APPS"]:
        return []
    q = settings["Q_CLUSTER"] or {}
    where = where_set(project, "Q_CLUSTER")
    findings = check_q_cluster_replaced(project)
    if "workers" not in q:
        findings.append(Finding(
            "warning", f"Q_CLUSTER has no 'workers': django-q2 starts cpu_count() = "
            f"{os.cpu_count()} workers (the host's CPUs)", where,
            "call start_all_settings(globals()) at the end of settings.py (sizes it)"))
    retry = q.get("retry", DJANGO_Q_DEFAULT_RETRY)
    timeout = q.get("timeout")
    if timeout is None:
        findings.append(Finding(
            "warning", f"Q_CLUSTER has no 'timeout': a task running longer than retry "
            f"({retry} s) is delivered again and runs twice", where,
            "set 'timeout' below 'retry'"))
    elif isinstance(timeout, int | float) and isinstance(retry, int | float):
        if timeout >= retry:
            findings.append(Finding(
                "error", f"Q_CLUSTER timeout ({timeout}) >= retry ({retry}): a task still "
                "running is delivered again and runs twice", where,
                f"set 'retry' above the timeout (e.g. {int(timeout) + 60})"))
        budget = stop_budget(project.environ)
        if timeout > budget:
            lost = q.get("max_attempts") == 1
            text = (f"Q_CLUSTER timeout {timeout} s is beyond the {budget:g} s stop budget: a "
                    "task still running when the container stops (every deploy) is killed")
            if lost:
                findings.append(Finding(
                    "warning", text + " and, with max_attempts 1, never run again", where,
                    "raise START_ALL_STOP_TIMEOUT (and the platform's grace period) to cover "
                    "the longest task, or make long tasks resumable and allow a retry"))
            else:
                findings.append(Finding("ok", text + f" and delivered again after {retry} s"))
    default_cache = settings["CACHES"].get(
        "default", "django.core.cache.backends.locmem.LocMemCache")
    if default_cache.endswith(("LocMemCache", "DummyCache")):
        findings.append(Finding(
            "warning", f"django-q2 keeps its cluster status in the cache and "
            f"{default_cache.rsplit('.', 1)[-1]} is per process", where_set(project, "CACHES"),
            "use FileBasedCache in a container-local directory (start_all_settings does when "
            "CACHES is unset)"))
    return findings


def check_q_cluster_replaced(project: Project) -> list[Finding]:
    """A later full assignment (a star import, a second dict) that replaces the app's own
    Q_CLUSTER: a changed name orphans every task queued under the old one."""
    path = settings_file(project)
    if path is None:
        return []
    full = [a for a in source.assignments(project.root, path, "Q_CLUSTER") if not a.derived]
    if len(full) < 2:
        return []
    own, last = full[0], full[-1]
    final = project.settings["Q_CLUSTER"] or {}
    before = source.literal_keys(own.value)
    changed = [f"{key} {value!r} -> {final.get(key)!r}" for key, value in before.items()
               if final.get(key) != value]
    if not changed:
        return []
    name_changed = "name" in before and final.get("name") != before["name"]
    orphaned = (f"; tasks queued under {before['name']!r} are never run" if name_changed
                else "")
    return [Finding(
        "error", f"Q_CLUSTER of {project.where(own.path, own.line)} is replaced by "
        f"{project.where(last.path, last.line)}: {', '.join(changed)}{orphaned}",
        project.where(last.path, last.line),
        "keep one Q_CLUSTER and call start_all_settings(globals()) at the end of settings.py "
        "(it keeps your values and sizes the workers)")]


def check_databases(project: Project) -> list[Finding]:
    settings, findings = project.settings, []
    default = settings["DATABASES"].get("default") or {}
    engine = default.get("ENGINE") or ""
    where = where_set(project, "DATABASES")
    if "django_q" in settings["INSTALLED_APPS"] and "sqlite" not in engine and not default.get(
        "CONN_MAX_AGE"
    ):
        findings.append(Finding(
            "warning", "CONN_MAX_AGE is 0 with django-q2: a new database connection per "
            "broker operation (measured 6x slower)", where,
            "set CONN_MAX_AGE = 600 and CONN_HEALTH_CHECKS = True (start_all_settings does "
            "when they are unset)"))
    if "postgresql" in engine and str(default.get("PORT")) == str(dburl.TRANSACTION_POOLER_PORT):
        options = dict(default.get("OPTIONS") or [])
        if not default.get("DISABLE_SERVER_SIDE_CURSORS") or options.get(
            "prepare_threshold", 0
        ) is not None:
            findings.append(Finding(
                "error", "database on the transaction pooler (port 6543) without "
                "DISABLE_SERVER_SIDE_CURSORS = True and OPTIONS prepare_threshold = None",
                where, "set both (start_all_settings does)"))
    if "sqlite" in engine:
        options = dict(default.get("OPTIONS") or [])
        new = [o for o in SQLITE_NEW_OPTIONS if o in options]
        found = source.version(project.root, "django") or (settings["DJANGO_VERSION"], "")
        if new and found[0] and source.version_tuple(found[0]) < SQLITE_OPTIONS_SINCE:
            findings.append(Finding(
                "error", f"SQLite OPTIONS {new} need Django 5.1; this is Django {found[0]}"
                f"{' (' + found[1] + ')' if found[1] else ''}: every query fails with "
                "TypeError", where,
                "remove those OPTIONS, or require django>=5.1"))
    return findings


def check_static_files(project: Project) -> list[Finding]:
    settings = project.settings
    if "django.contrib.staticfiles" not in settings["INSTALLED_APPS"] or settings["DEBUG"]:
        return []
    storage = settings.get("STATICFILES_STORAGE") or ""
    manifest = "Manifest" in storage
    findings = []
    if not settings.get("STATIC_ROOT"):
        findings.append(Finding(
            "error", "STATIC_ROOT is not set: collectstatic has nowhere to put the static "
            "files, so with DEBUG off they are not served", where_set(project, "STATIC_URL"),
            "STATIC_ROOT = BASE_DIR / \"staticfiles\""))
    dockerfile = project.root / "Dockerfile"
    if dockerfile.is_file() and "collectstatic" not in dockerfile.read_text(errors="replace"):
        effect = ("every page using {% static %} returns 500 (the manifest is missing)"
                  if manifest else "every static file is a 404")
        findings.append(Finding(
            "error" if manifest else "warning",
            f"the Dockerfile never runs collectstatic: {effect}", project.where(dockerfile),
            "RUN DEBUG=0 python manage.py collectstatic --noinput after COPY (the template "
            "Dockerfile does)"))
    if not any("whitenoise" in m.lower() for m in settings["MIDDLEWARE"]):
        findings.append(Finding(
            "warning", "nothing serves STATIC_URL with DEBUG off (gunicorn does not)",
            where_set(project, "MIDDLEWARE"),
            "add \"whitenoise.middleware.WhiteNoiseMiddleware\" after SecurityMiddleware"))
    elif not findings:
        findings.append(Finding("ok", "static files: collected at build, served by WhiteNoise"))
    return findings


def check_schedules(project: Project) -> list[Finding]:
    declared = project.settings["START_ALL_SCHEDULES"]
    if declared is None:
        return []
    from supervisor.kit.schedules import ScheduleError, load_entries

    where = where_set(project, "START_ALL_SCHEDULES")
    try:
        entries = load_entries(declared)
    except ScheduleError as error:
        return [Finding("error", f"START_ALL_SCHEDULES: {error}", where)]
    findings = [Finding("ok", f"START_ALL_SCHEDULES: {len(entries)} valid entries")]
    funcs = {entry.func for entry in entries}
    release = next((p for p in project.processes if p.name == "release"), None)
    adopting = release is not None and "--adopt" in release.line
    for call in source.schedule_calls(project.root):
        if call.func not in funcs:
            continue
        where = project.where(call.path, call.line)
        if adopting:
            findings.append(Finding("ok", f"{where}: a Schedule row for {call.func} made by "
                                    "the app is taken over by the release's --adopt"))
            continue
        findings.append(Finding(
            "warning", f"the app creates a django-q2 Schedule for {call.func} here, and "
            "START_ALL_SCHEDULES declares it too: a plain sync adds a second row (it runs "
            "twice)", where,
            "`release: start-all migrate --sync-schedules --adopt` (or run `start-all "
            "schedules sync --adopt` once): the existing row is taken over"))
    return findings


ROWS_SQL = {
    "queued": "SELECT key, count(*) FROM django_q_ormq GROUP BY key",
    "schedules": "SELECT name, func FROM django_q_schedule ORDER BY id",
}


def query_rows(default: dict) -> dict[str, list] | str:
    """django-q2's queue and schedule rows from the app's default database, or why not."""
    engine = default.get("ENGINE") or ""
    try:
        if "sqlite" in engine:
            import sqlite3

            name = str(default.get("NAME") or "")
            if not name or not Path(name).is_file():
                return "no SQLite file yet"
            with sqlite3.connect(f"file:{name}?mode=ro", uri=True, timeout=3) as conn:
                return {k: conn.execute(sql).fetchall() for k, sql in ROWS_SQL.items()}
        if "postgresql" in engine:
            import psycopg

            params = {k.lower(): default.get(k) for k in ("NAME", "USER", "PASSWORD", "HOST",
                                                        "PORT") if default.get(k)}
            params["dbname"] = params.pop("name", "postgres")
            with psycopg.connect(**params, connect_timeout=3) as conn:
                return {k: conn.execute(sql).fetchall() for k, sql in ROWS_SQL.items()}
    except Exception as error:  # unreachable, not migrated: not this check's business
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"
    return f"engine {engine} not inspected"


def check_database_rows(project: Project) -> list[Finding]:
    """What only the database shows: tasks queued under another cluster name, and Schedule
    rows that duplicate START_ALL_SCHEDULES."""
    settings = project.settings
    if "django_q" not in settings["INSTALLED_APPS"]:
        return []
    rows = query_rows(settings["DATABASES"].get("default") or {})
    if isinstance(rows, str):
        return [Finding("ok", f"database not inspected ({rows})")]
    findings = []
    name = (settings["Q_CLUSTER"] or {}).get("name", "default")
    for key, count in rows["queued"]:
        if key != name:
            findings.append(Finding(
                "error", f"{count} task(s) queued under cluster name {key!r}, which no qcluster "
                f"reads (Q_CLUSTER name is {name!r})", where_set(project, "Q_CLUSTER"),
                f"set Q_CLUSTER 'name' back to {key!r}, or drain them with the old name first"))
    from supervisor.kit.schedules import MANAGED_PREFIX, ScheduleError, load_entries

    try:
        entries = load_entries(settings["START_ALL_SCHEDULES"] or [])
    except ScheduleError:
        entries = []  # reported by check_schedules
    declared = {entry.func: entry.name for entry in entries}
    by_func: dict[str, list[str]] = {}
    for row_name, func in rows["schedules"]:
        by_func.setdefault(func, []).append(row_name)
    for func, names in by_func.items():
        managed = [n for n in names if n.startswith(MANAGED_PREFIX)]
        own = [n for n in names if not n.startswith(MANAGED_PREFIX)]
        if own and (managed or len(own) > 1):
            findings.append(Finding(
                "error", f"{len(names)} Schedule rows run {func} ({', '.join(map(repr, names))}): "
                "it runs once per row", where_set(project, "START_ALL_SCHEDULES"),
                "`start-all schedules sync --adopt` keeps one (or delete the extra rows)"))
        elif own and func in declared:
            findings.append(Finding(
                "warning", f"Schedule row {own[0]!r} runs {func}, which START_ALL_SCHEDULES "
                f"also declares ({declared[func]!r}): a plain sync would add a second row",
                where_set(project, "START_ALL_SCHEDULES"),
                "`start-all schedules sync --adopt` takes the row over"))
    if not findings:
        findings.append(Finding("ok", f"database: queue and {len(rows['schedules'])} Schedule "
                                "row(s) consistent"))
    return findings


def settings_changes(root: Path, environ: dict[str, str]) -> list[str] | str | None:
    """What start_all_settings() changes in the app's settings under ENVIRON (the worker's
    environment, sizing included): for `--dry-run`. None when not a Django project (or the
    settings do not call it); a one-line error when they cannot be imported."""
    module = settings_module(root, environ)
    if not module:
        return None
    settings = load_settings(root, module, environ)
    if isinstance(settings, str):
        return settings
    return settings.get("START_ALL_SETTINGS_CHANGES")
