"""Which storage a database URL means: PostgreSQL (the real thing) or SQLite (development)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def backend_for(url: str) -> Any:
    """A namespace with the producer-side Store and the worker-side WorkerDb classes."""
    if is_sqlite(url):
        from supervisor.native import sqlite_store

        return SimpleNamespace(Store=sqlite_store.SqliteStore, WorkerDb=sqlite_store.SqliteWorkerDb)
    from supervisor.native import store

    return SimpleNamespace(Store=store.PgStore, WorkerDb=store.PgWorkerDb)
