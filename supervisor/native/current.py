"""The current app: the most recently created one, or a default built on first use.

A leaf module, so result.py and canvas.py can find an app without importing app.py at import
time (the one lazy import is below, only when no app was created yet).
"""

from __future__ import annotations

import threading
from typing import Any

_current: Any = None
_lock = threading.RLock()  # re-entrant: building the default app sets it as current


def set_current(app: Any) -> None:
    global _current
    with _lock:
        _current = app


def get_current() -> Any:
    """The current app, or None when none was created yet (never builds one)."""
    return _current


def current_app() -> Any:
    """The most recently created app (or a default one reading DATABASE_URL)."""
    with _lock:
        if _current is None:
            from supervisor.native.app import Celery

            Celery("default")  # its constructor makes itself current
        return _current
