"""Django settings for a web process and a worker sharing one 512 MB container under start-all.

Import it at the END of your settings.py, so these values win:

    from .start_all_settings import *  # noqa: E402,F401,F403

Everything comes from the environment, so one image runs locally (SQLite, no DATABASE_URL)
and on the platform (PostgreSQL, e.g. Supabase through its pooler):

- DATABASE_URL   postgres://... (session pooler, port 5432) or unset for SQLite in DATA_DIR.
                 Port 6543 (Supabase's transaction pooler) switches on what that pooler needs.
- DATA_DIR       where the SQLite file lives (default: ./data).
- START_ALL_WORKER_CONCURRENCY  django-q2 workers; start-all sets it from the memory limit.
"""

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from supervisor.contrib.django import q_cluster_sizing

TRANSACTION_POOLER_PORT = 6543  # Supabase (Supavisor) transaction mode


def database_from_url(url: str, data_dir: Path) -> dict:
    """Django DATABASES entry for a postgres:// URL, or SQLite in data_dir when url is empty."""
    if not url:
        data_dir.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": data_dir / "db.sqlite3",
            # web and worker write at the same time: WAL + immediate transactions, not "locked"
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL: unsupported scheme {parts.scheme!r} (use postgres://)")
    options: dict = dict(parse_qsl(parts.query))
    entry = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or 5432),
        # One connection per process, kept between requests/tasks; checked before reuse
        # because a sleeping instance (or the pooler) may have dropped it meanwhile.
        "CONN_MAX_AGE": 600,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }
    if parts.port == TRANSACTION_POOLER_PORT:
        # A transaction pooler hands each transaction to any server connection:
        # no prepared statements, no server-side cursors (they outlive the transaction).
        entry["DISABLE_SERVER_SIDE_CURSORS"] = True
        options["prepare_threshold"] = None
    return entry


DATA_DIR = Path(os.environ.get("DATA_DIR", Path.cwd() / "data"))
DATABASES = {"default": database_from_url(os.environ.get("DATABASE_URL", ""), DATA_DIR)}

# django-q2 keeps its cluster status in the cache: it must be shared by every process of the
# container (LocMemCache is per process). A file cache in a container-local directory is free.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.environ.get("CACHE_DIR", "/tmp/django-cache"),
        "OPTIONS": {"MAX_ENTRIES": 2000},
    }
}

# The supervisor's health answer on $PORT. Put "supervisor.contrib.django.HealthMiddleware"
# FIRST in MIDDLEWARE: it then needs no database, session or ALLOWED_HOSTS match (platform
# health checkers send the container's IP as Host). `start-all check` verifies this.
START_ALL_HEALTH_PATH = "/healthz"

Q_CLUSTER = {
    "name": os.environ.get("Q_CLUSTER_NAME", "app"),
    "orm": "default",  # the database is the broker: no Redis to pay for
    "max_rss": 150_000,  # KiB: a worker process above ~150 MB is replaced after its task
    # workers, queue_limit and max_rss from start-all's sizing of the container's memory
    # (START_ALL_WORKER_CONCURRENCY), never cpu_count(): inside a container that is the host's.
    # A small queue_limit also keeps a stop short: qcluster drains what it prefetched.
    **q_cluster_sizing(default_workers=1),
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
