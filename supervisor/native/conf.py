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


# Celery settings this queue does not use, with Celery's defaults: code reading them (as
# Celery code often does) gets what it would get under Celery instead of AttributeError.
CELERY_DEFAULTS: dict[str, Any] = {
    "accept_content": ("json",), "result_accept_content": None, "enable_utc": True,
    "imports": (), "include": (), "result_backend": None, "result_extended": False,
    "result_serializer": "json", "result_compression": None, "result_persistent": None,
    "result_cache_max": -1, "result_chord_join_timeout": 3.0,
    "result_chord_retry_interval": 1.0, "result_backend_transport_options": {},
    "broker_transport": None, "broker_transport_options": {}, "broker_connection_timeout": 4,
    "broker_connection_retry": True, "broker_connection_retry_on_startup": None,
    "broker_connection_max_retries": 100, "broker_heartbeat": 120, "broker_pool_limit": 10,
    "broker_use_ssl": False, "broker_pool_acquire_timeout": None, "broker_read_url": None,
    "broker_write_url": None,
    "task_acks_late": False, "task_acks_on_failure_or_timeout": True, "task_annotations": None,
    "task_compression": None, "task_create_missing_queues": True,
    "task_default_delivery_mode": 2, "task_default_exchange": None,
    "task_default_exchange_type": "direct", "task_default_routing_key": None,
    "task_default_rate_limit": None, "task_inherit_parent_priority": False,
    "task_store_eager_result": False, "task_protocol": 2, "task_publish_retry": True,
    "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0, "interval_max": 1,
                                  "interval_step": 0.2},
    "task_queues": None, "task_queue_max_priority": None, "task_reject_on_worker_lost": None,
    "task_remote_tracebacks": False, "task_routes": None, "task_send_sent_event": False,
    "task_store_errors_even_if_ignored": False, "task_allow_error_cb_on_chord_header": False,
    "worker_direct": False, "worker_disable_rate_limits": False,
    "worker_enable_remote_control": True, "worker_hijack_root_logger": True,
    "worker_log_color": None, "worker_lost_wait": 10.0, "worker_pool": "threads",
    "worker_pool_restarts": False, "worker_proc_alive_timeout": 4.0,
    "worker_redirect_stdouts": True, "worker_redirect_stdouts_level": "WARNING",
    "worker_send_task_events": False, "worker_state_db": None, "worker_timer_precision": 1.0,
    "worker_cancel_long_running_tasks_on_connection_loss": False,
    "worker_deduplicate_successful_tasks": False, "worker_soft_shutdown_timeout": 0.0,
    "beat_scheduler": "native", "beat_schedule_filename": "celerybeat-schedule",
    "beat_sync_every": 0, "beat_max_loop_interval": 0, "beat_cron_starting_deadline": None,
}


class Settings(dict):
    """A dict that also reads and writes as attributes, like Celery's `app.conf`."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            if key in CELERY_DEFAULTS:
                return CELERY_DEFAULTS[key]
            raise AttributeError(f"app.conf has no setting {key!r}") from None

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        return CELERY_DEFAULTS.get(key, default)

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value
