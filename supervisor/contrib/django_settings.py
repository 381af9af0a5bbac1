"""Django settings for a web process and its worker sharing one container, merged into the
app's own settings (never replacing them). Call it at the END of settings.py:

    from supervisor.contrib.django import start_all_settings
    start_all_settings(globals())

What it does, each change recorded in START_ALL_SETTINGS_CHANGES (printed by
`start-all --dry-run` and `start-all check`):

- MIDDLEWARE: supervisor.contrib.django.HealthMiddleware put first, if missing.
- DATABASES: none set (or SQLite while DATABASE_URL is set) -> from DATABASE_URL, else SQLite
  in DATA_DIR with the options the installed Django supports. On PostgreSQL, CONN_MAX_AGE 600
  and CONN_HEALTH_CHECKS if the app did not set them; port 6543 (a transaction pooler) gets
  DISABLE_SERVER_SIDE_CURSORS and prepare_threshold=None, which it cannot work without.
- CACHES: none set -> a FileBasedCache shared by every process (django-q2 keeps its cluster
  status there; LocMemCache is per process).
- Q_CLUSTER (with django_q installed): none set -> start-all's defaults. The app's own one is
  kept key by key (name, broker, timeout, max_attempts, error_reporter ...); only the sizing
  keys change under start-all (workers, queue_limit, max_rss from START_ALL_WORKER_CONCURRENCY
  and START_ALL_WORKER_MAX_RSS_MB), and a missing `retry` becomes timeout + 60 so a long task
  is not delivered twice. `keep=("workers",)` keeps the app's value of a sizing key too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

HEALTH_MIDDLEWARE = "supervisor.contrib.django.HealthMiddleware"
TRANSACTION_POOLER_PORT = 6543  # Supabase (Supavisor) transaction mode
DJANGO_Q_DEFAULT_RETRY = 60
SIZING_KEYS = ("workers", "queue_limit", "max_rss")
Q_CLUSTER_DEFAULTS = {
    "name": "app",
    "orm": "default",  # the database is the broker: no Redis to pay for
    "max_rss": 150_000,  # KiB: a worker process above ~150 MB is replaced after its task
    "recycle": 500,  # restart a worker process after this many tasks (leaks)
    "timeout": 120,  # a task running longer is killed ...
    "retry": 180,  # ... and an unacknowledged one redelivered: keep retry > timeout
    "max_attempts": 3,
    "poll": 1.0,  # seconds between broker polls when idle (each one is a query)
    "catch_up": False,  # after a sleeping instance wakes up, run a missed schedule once
    "save_limit": 250,  # successful results kept
    "ack_failures": True,
    "bulk": 1,
}


def sqlite_options() -> dict:
    """WAL and immediate transactions (web and worker write at once) where Django has the
    options: `transaction_mode` and `init_command` for SQLite arrived in Django 5.1."""
    import django

    if django.VERSION >= (5, 1):
        return {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    return {"timeout": 20}


def database_from_url(url: str, data_dir: Path) -> dict:
    """Django DATABASES entry for a postgres:// URL, or SQLite in data_dir when url is empty."""
    if not url:
        data_dir.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": data_dir / "db.sqlite3",
            "OPTIONS": sqlite_options(),
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL: unsupported scheme {parts.scheme!r} (use postgres://)")
    entry = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or 5432),
        "OPTIONS": dict(parse_qsl(parts.query)),
    }
    return tune_postgres(entry, [], "DATABASES['default']")


def tune_postgres(db: dict, changes: list[str], label: str) -> dict:
    """Persistent, health-checked connections unless the app chose; the pooler's needs."""
    if "CONN_MAX_AGE" not in db:
        # one connection per process, kept between requests/tasks, checked before reuse
        # because a sleeping instance (or the pooler) may have dropped it meanwhile
        db["CONN_MAX_AGE"] = 600
        changes.append(f"{label}['CONN_MAX_AGE'] = 600 (was unset: a connection per request)")
    if "CONN_HEALTH_CHECKS" not in db:
        db["CONN_HEALTH_CHECKS"] = True
        changes.append(f"{label}['CONN_HEALTH_CHECKS'] = True (was unset)")
    if str(db.get("PORT")) == str(TRANSACTION_POOLER_PORT):
        # a transaction pooler hands each transaction to any server connection:
        # no prepared statements, no server-side cursors (they outlive the transaction)
        if not db.get("DISABLE_SERVER_SIDE_CURSORS"):
            db["DISABLE_SERVER_SIDE_CURSORS"] = True
            changes.append(f"{label}['DISABLE_SERVER_SIDE_CURSORS'] = True (port 6543 pooler)")
        options = db.setdefault("OPTIONS", {})
        if options.get("prepare_threshold", 0) is not None:
            options["prepare_threshold"] = None
            changes.append(f"{label}['OPTIONS']['prepare_threshold'] = None (port 6543 pooler)")
    return db


def _databases(ns: dict, data_dir: Path, changes: list[str]) -> None:
    url = os.environ.get("DATABASE_URL", "")
    databases = ns.get("DATABASES") or {}
    default = databases.get("default")
    engine = (default or {}).get("ENGINE", "")
    if default is None or (url and "sqlite" in engine):
        entry = database_from_url(url, data_dir)
        source = "DATABASE_URL" if url else f"SQLite in {data_dir}"
        before = f"was {engine.rsplit('.', 1)[-1]}" if default else "was unset"
        changes.append(f"DATABASES['default'] from {source} ({before})")
        changes += [f"DATABASES['default']['{k}'] = {entry[k]!r}" for k in
                    ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS") if k in entry]
        ns["DATABASES"] = {**databases, "default": entry}
        return
    for alias, db in databases.items():
        if "postgresql" in db.get("ENGINE", "") or "postgis" in db.get("ENGINE", ""):
            tune_postgres(db, changes, f"DATABASES[{alias!r}]")


def _q_cluster(ns: dict, keep: set[str], changes: list[str]) -> None:
    own = ns.get("Q_CLUSTER")
    workers_env = os.environ.get("START_ALL_WORKER_CONCURRENCY")
    max_rss_mb = os.environ.get("START_ALL_WORKER_MAX_RSS_MB")
    if not own:
        q = dict(Q_CLUSTER_DEFAULTS, name=os.environ.get("Q_CLUSTER_NAME", "app"))
        workers = int(workers_env or 1)
        q.update(workers=workers, queue_limit=workers * 2)
        if max_rss_mb:
            q["max_rss"] = int(max_rss_mb) * 1024
        ns["Q_CLUSTER"] = q
        changes.append(f"Q_CLUSTER = start-all's defaults (was unset; name {q['name']!r}, "
                       f"workers {workers}, timeout {q['timeout']}, retry {q['retry']})")
        return
    q = dict(own)
    sized: dict[str, int] = {}
    if workers_env:
        sized["workers"] = int(workers_env)
        # a small prefetch keeps a stop short: qcluster drains what it took
        sized["queue_limit"] = int(workers_env) * 2
    elif "workers" not in q:
        sized["workers"] = 1  # django-q2 would start cpu_count(): the host's CPUs
    if max_rss_mb:
        sized["max_rss"] = int(max_rss_mb) * 1024
    for key, value in sized.items():
        if key in keep and key in q:
            continue
        if q.get(key) != value:
            was = f"was {q[key]!r}" if key in q else "was unset"
            changes.append(f"Q_CLUSTER['{key}'] = {value!r} (start-all sizing; {was})")
            q[key] = value
    timeout = q.get("timeout")
    if "retry" not in q and isinstance(timeout, int | float) and timeout >= DJANGO_Q_DEFAULT_RETRY:
        q["retry"] = int(timeout) + 60
        changes.append(f"Q_CLUSTER['retry'] = {q['retry']} (was unset: django-q2's 60 s is "
                       f"below timeout {timeout}, a running task would be delivered twice)")
    ns["Q_CLUSTER"] = q


def start_all_settings(namespace: dict, *, keep: Iterable[str] = ()) -> list[str]:
    """Merge start-all's settings into a settings module's globals(); returns the changes
    (also stored as START_ALL_SETTINGS_CHANGES)."""
    changes: list[str] = []
    base = Path(namespace.get("BASE_DIR") or Path.cwd())
    data_dir = Path(os.environ.get("DATA_DIR") or namespace.get("DATA_DIR") or base / "data")
    namespace.setdefault("DATA_DIR", data_dir)

    middleware = list(namespace.get("MIDDLEWARE") or [])
    if HEALTH_MIDDLEWARE not in middleware:
        namespace["MIDDLEWARE"] = [HEALTH_MIDDLEWARE, *middleware]
        changes.append(f"MIDDLEWARE: {HEALTH_MIDDLEWARE} added first")
    namespace.setdefault("START_ALL_HEALTH_PATH", "/healthz")

    _databases(namespace, data_dir, changes)
    if "CACHES" not in namespace:
        location = os.environ.get("CACHE_DIR", "/tmp/django-cache")
        namespace["CACHES"] = {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": location,
                "OPTIONS": {"MAX_ENTRIES": 2000},
            }
        }
        changes.append(f"CACHES['default'] = FileBasedCache in {location} (was unset)")
    if "django_q" in (namespace.get("INSTALLED_APPS") or ()):
        _q_cluster(namespace, set(keep), changes)
    namespace["START_ALL_SETTINGS_CHANGES"] = changes
    return changes
