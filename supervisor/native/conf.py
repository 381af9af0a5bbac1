"""Settings: Celery's lower-case names plus a few `native_*` ones, with their defaults."""

from __future__ import annotations

import os
from typing import Any


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


def defaults() -> dict[str, Any]:
    stop_budget = _env_float("START_ALL_STOP_TIMEOUT", 8.0)
    return {
        "broker_url": None,
        "native_database_url": None,  # default: broker_url if it is postgres://, else DATABASE_URL
        "task_always_eager": False,
        "task_eager_propagates": False,
        "task_ignore_result": False,
        "task_track_started": False,
        "task_default_queue": "celery",
        "task_default_priority": None,
        "task_time_limit": None,
        "task_soft_time_limit": None,
        "task_serializer": "json",
        "result_expires": 86400.0,  # successes are pruned after a day
        "native_failure_expires": 7 * 86400.0,  # failures and revocations after a week
        "worker_concurrency": None,
        "worker_pool": None,  # None = START_ALL_WORKER_POOL, else threads (see native/pool.py)
        "worker_prefetch_multiplier": None,  # None = adaptive (see worker.Worker.adapt)
        "worker_max_tasks_per_child": None,
        "worker_max_memory_per_child": None,  # KiB, as in Celery
        "beat_schedule": {},
        "timezone": "UTC",
        "native_lease_seconds": 30.0,
        "native_heartbeat_interval": _env_float("START_ALL_HEARTBEAT_INTERVAL", 5.0),
        "native_max_recoveries": 3,
        "native_poll_only": None,  # None = detect (port 6543 or LISTEN failing)
        "native_poll_interval": None,  # None = 0.5 s polling only, 2 s as a LISTEN fallback
        "native_stop_timeout": max(1.0, stop_budget - 1.0),
        "native_prune_interval": 300.0,
        "native_beat": True,
    }


class Settings(dict):
    """A dict that also reads and writes as attributes, like Celery's `app.conf`."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value
