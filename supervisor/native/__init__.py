"""The native worker: a Celery-compatible task queue on PostgreSQL.

    from supervisor.native import Celery, shared_task, AsyncResult, crontab

With USE_DB_QUEUE=false in the environment the same names come from the real Celery (broker
from its usual settings, e.g. Redis), so outgrowing the database queue needs no code change.
Names are resolved lazily: importing this package costs almost nothing.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

# public name -> (native module, celery module)
_EXPORTS = {
    "Celery": ("supervisor.native.app", "celery"),
    "shared_task": ("supervisor.native.app", "celery"),
    "current_app": ("supervisor.native.app", "celery"),
    "Task": ("supervisor.native.task", "celery"),
    "group": ("supervisor.native.canvas", "celery"),
    "chain": ("supervisor.native.canvas", "celery"),
    "chord": ("supervisor.native.canvas", "celery"),
    "chunks": ("supervisor.native.canvas", "celery"),
    "xmap": ("supervisor.native.canvas", "celery"),
    "xstarmap": ("supervisor.native.canvas", "celery"),
    "signature": ("supervisor.native.canvas", "celery"),
    "maybe_signature": ("supervisor.native.canvas", "celery"),
    "Signature": ("supervisor.native.canvas", "celery"),
    "AsyncResult": ("supervisor.native.result", "celery.result"),
    "EagerResult": ("supervisor.native.result", "celery.result"),
    "GroupResult": ("supervisor.native.result", "celery.result"),
    "ResultSet": ("supervisor.native.result", "celery.result"),
    "allow_join_result": ("supervisor.native.result", "celery.result"),
    "get_task_logger": ("supervisor.native.result", "celery.utils.log"),
    "crontab": ("supervisor.native.schedules", "celery.schedules"),
    "states": ("supervisor.native", "celery"),
    "signals": ("supervisor.native", "celery"),
    "MaxRetriesExceededError": ("supervisor.native.exceptions", "celery.exceptions"),
    "Retry": ("supervisor.native.exceptions", "celery.exceptions"),
    "Ignore": ("supervisor.native.exceptions", "celery.exceptions"),
    "Reject": ("supervisor.native.exceptions", "celery.exceptions"),
    "SoftTimeLimitExceeded": ("supervisor.native.exceptions", "celery.exceptions"),
    "TimeLimitExceeded": ("supervisor.native.exceptions", "celery.exceptions"),
    "TaskRevokedError": ("supervisor.native.exceptions", "celery.exceptions"),
    "TimeoutError": ("supervisor.native.exceptions", "celery.exceptions"),
    "NotRegistered": ("supervisor.native.exceptions", "celery.exceptions"),
    "WorkerLostError": ("supervisor.native.exceptions", "celery.exceptions"),
    "ChordError": ("supervisor.native.exceptions", "celery.exceptions"),
    "ImproperlyConfigured": ("supervisor.native.exceptions", "celery.exceptions"),
}

__all__ = sorted(_EXPORTS)


def use_db_queue(environ: Mapping[str, str] = os.environ) -> bool:
    """False when USE_DB_QUEUE is 0/false/no/off: run on the real Celery instead."""
    return environ.get("USE_DB_QUEUE", "true").strip().lower() not in (
        "0", "false", "no", "off"
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'supervisor.native' has no attribute {name!r}")
    native, celery = _EXPORTS[name]
    if name == "states":
        module = "celery.states" if not use_db_queue() else "supervisor.native.states"
        return importlib.import_module(module)
    if name == "signals":
        return importlib.import_module("supervisor.native.signals")
    if name == "WorkerLostError" and not use_db_queue():
        return importlib.import_module("billiard.exceptions").WorkerLostError
    return getattr(importlib.import_module(native if use_db_queue() else celery), name)
