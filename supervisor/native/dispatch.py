"""Celery's signals with Celery's names and arguments (user code imports them from
supervisor.native.signals, which follows USE_DB_QUEUE):

    from supervisor.native.signals import task_success

    @task_success.connect
    def on_success(sender=None, result=None, **kwargs): ...

Handlers run in the process where the event happens, as in Celery: publish signals in the
caller, task_received / task_revoked / worker_* in the worker's main process, task_prerun /
postrun / success / failure / retry in the process running the task (a prefork child with
`--pool prefork`). This module imports nothing from the rest of the package, so any module
may send a signal; with no receiver connected, send() is one attribute check.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("supervisor.native")


class Signal:
    """A named event: connect() receivers, send() calls them with keyword arguments."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = providing_args
        self.receivers: list[tuple[Any, Any, Any]] = []  # (key, receiver or weakref, sender)
        self._lock = threading.Lock()

    def connect(self, receiver: Callable | None = None, sender: Any = None, weak: bool = True,
                dispatch_uid: Any = None) -> Any:
        """`@sig.connect`, `@sig.connect(sender=...)` or `sig.connect(fn)` as in Celery."""
        if receiver is None:
            return lambda fn: self.connect(fn, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
        key = dispatch_uid if dispatch_uid is not None else _key(receiver)
        ref: Any = receiver
        if weak:
            try:
                ref = (weakref.WeakMethod(receiver) if hasattr(receiver, "__self__")
                       else weakref.ref(receiver))
            except TypeError:
                ref = receiver
        with self._lock:
            if not any(k == key and s == sender for k, _, s in self.receivers):
                self.receivers = [*self.receivers, (key, ref, sender)]
        return receiver

    def disconnect(self, receiver: Callable | None = None, sender: Any = None,
                   dispatch_uid: Any = None) -> bool:
        key = dispatch_uid if dispatch_uid is not None else _key(receiver)
        with self._lock:
            kept = [r for r in self.receivers if not (r[0] == key and r[2] == sender)]
            removed = len(kept) != len(self.receivers)
            self.receivers = kept
        return removed

    def send(self, sender: Any, **named: Any) -> list[tuple[Callable, Any]]:
        """Call every receiver; one that raises is logged, never breaks the caller (Celery)."""
        if not self.receivers:
            return []
        responses = []
        for _, ref, wanted in self.receivers:
            receiver = ref() if isinstance(ref, weakref.ref) else ref
            if receiver is None or (wanted is not None and not _matches(wanted, sender)):
                continue
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as error:
                log.exception("signal %s: receiver %r raised", self.name, receiver)
                responses.append((receiver, error))
        return responses

    send_robust = send

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


class Request:
    """The `request` of task_received / task_revoked: a task's id, name, args and options."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def _options(self) -> dict:
        return self.__dict__.get("options") or {}

    @property
    def stamps(self) -> dict:
        """The job's stamps (stamping.py), read from its stored options."""
        return ((self._options().get("headers") or {}).get("stamps")) or {}

    @property
    def stamped_headers(self) -> list:
        return list(self.stamps)

    task_name = property(lambda self: self.__dict__.get("name"))

    @property
    def callbacks(self) -> list | None:
        return self._options().get("link")

    @property
    def errbacks(self) -> list | None:
        return self._options().get("link_error")

    @property
    def __payload(self) -> tuple:  # Celery's Request._Request__payload: (args, kwargs, embed)
        options = self._options()
        embed = {"callbacks": options.get("link"), "errbacks": options.get("link_error"),
                 "chain": options.get("chain"), "chord": options.get("chord")}
        return (self.__dict__.get("args"), self.__dict__.get("kwargs"), embed)

    def __repr__(self) -> str:
        return f"<Request: {self.__dict__.get('name')}[{self.__dict__.get('id')}]>"


def publishing(jobs: list, after: bool = False) -> None:
    """before_task_publish (after=False) or after_task_publish for jobs about to be / just
    written to the queue; builds Celery's message parts only when someone listens."""
    signal = after_task_publish if after else before_task_publish
    if not signal.receivers:
        return
    import json

    for job in jobs:
        args, kwargs = json.loads(job.args or "[]"), json.loads(job.kwargs or "{}")
        options = json.loads(job.options) if isinstance(job.options, str) else job.options
        headers = {"lang": "py", "task": job.name, "id": job.task_id, "retries": job.retries,
                   "eta": job.eta.isoformat() if job.eta else None,
                   "expires": job.expires_at.isoformat() if job.expires_at else None,
                   "root_id": (options or {}).get("root_id"),
                   "parent_id": (options or {}).get("parent_id"),
                   "ignore_result": job.ignore_result}
        stored = (options or {}).get("headers")
        if stored:  # custom headers and stamps, as in Celery's message headers
            headers.update(stored)
        extra = {} if after else {
            "properties": {"correlation_id": job.task_id, "priority": job.priority},
            "declare": [], "retry_policy": None}
        signal.send(sender=job.name, body=(args, kwargs, {}), exchange="",
                    routing_key=job.queue, headers=headers, **extra)


def _key(receiver: Any) -> Any:
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


def _matches(wanted: Any, sender: Any) -> bool:
    """A receiver connected with sender=X hears X, or a task named X."""
    return wanted is sender or wanted == sender or getattr(sender, "name", None) == wanted


before_task_publish = Signal("before_task_publish", (
    "body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"))
after_task_publish = Signal("after_task_publish", ("body", "exchange", "routing_key"))
task_received = Signal("task_received", ("request",))
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
task_success = Signal("task_success", ("result",))
task_failure = Signal("task_failure", (
    "task_id", "exception", "args", "kwargs", "traceback", "einfo"))
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_unknown = Signal("task_unknown", ("message", "exc", "name", "id"))
worker_init = Signal("worker_init")
worker_ready = Signal("worker_ready")
worker_shutting_down = Signal("worker_shutting_down", ("sig", "how", "exitcode"))
worker_shutdown = Signal("worker_shutdown")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown", ("pid", "exitcode"))

__all__ = [
    "Signal", "before_task_publish", "after_task_publish", "task_received", "task_prerun",
    "task_postrun", "task_success", "task_failure", "task_retry", "task_revoked",
    "task_unknown", "worker_init", "worker_ready", "worker_shutting_down", "worker_shutdown",
    "worker_process_init", "worker_process_shutdown",
]
