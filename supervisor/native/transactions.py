"""Enqueue inside Django's transaction.atomic(): the job commits or rolls back with the caller.

Same database as Django's: the INSERT (and its NOTIFY) runs on Django's own connection, inside
the caller's transaction. Another database: the INSERT is deferred to transaction.on_commit().
Outside Django, or outside an atomic block, nothing is deferred.
"""

from __future__ import annotations

import sys
from typing import Any


def _same_database(connection: Any, url: str) -> bool:
    if connection.vendor != "postgresql" or url.startswith("sqlite:"):
        return False
    from psycopg.conninfo import conninfo_to_dict

    ours = conninfo_to_dict(url)
    theirs = connection.settings_dict

    def norm(value: Any, default: str) -> str:
        return str(value or default)

    return (
        norm(ours.get("dbname"), "") == norm(theirs.get("NAME"), "")
        and norm(ours.get("host"), "localhost") == norm(theirs.get("HOST"), "localhost")
        and norm(ours.get("port"), "5432") == norm(theirs.get("PORT"), "5432")
    )


def deferred(store: Any, statement: str, params: Any) -> bool:
    """Run or defer `statement` with the caller's Django transaction; False if not in one."""
    if "django.db" not in sys.modules:
        return False
    from django.conf import settings

    if not settings.configured:
        return False
    from django.db import connection, transaction

    if not connection.in_atomic_block:
        return False
    if _same_database(connection, store.url):
        store.ensure_schema()
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
    else:
        transaction.on_commit(lambda: store.execute(statement, params))
    return True


def on_commit(action: Any) -> None:
    """Run `action` when the caller's Django transaction commits; at once outside of one."""
    if "django.db" in sys.modules:
        from django.conf import settings

        if settings.configured:
            from django.db import transaction

            transaction.on_commit(action)  # Django runs it at once outside atomic blocks
            return
    action()
