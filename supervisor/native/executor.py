"""What an executor thread does with one job: run the task with Celery's request context and
turn however it ended (value, retry, exception, revocation) into an Outcome for the loop."""

from __future__ import annotations

import ctypes
import json
import logging
import time
import traceback as tb_module
import uuid
from datetime import UTC, datetime
from typing import Any

from supervisor.native import dispatch, stamping
from supervisor.native.exceptions import Ignore, NotRegistered, Reject, Retry, TaskRevokedError
from supervisor.native.flow import Replaced, run_errbacks_in_worker
from supervisor.native.serial import dumps, dumps_result, exception_to_dict, loads
from supervisor.native.task import Context, Task

log = logging.getLogger("supervisor.native")
# statuses the loop reports for an outcome
SUCCESS, FAILURE, RETRY, REVOKED, FORGET = "SUCCESS", "FAILURE", "RETRY", "REVOKED", "FORGET"
REPLACED = "REPLACED"  # Task.replace(): the row waits for its replacement's result


_TRIVIAL = {"[]": list, "{}": dict, "null": lambda: None}
_PLAIN = json.JSONDecoder().decode  # built once (json.loads with arguments builds one a call)


def _json_text(text: str) -> Any:
    """serial.loads, cheaper for what a claim mostly carries: empty args and kwargs without a
    parser, JSON with no typed envelope (serial's all carry "__type__") without serial's
    Python object hook. Decoding jsonb through the driver cost about 7 us a job."""
    make = _TRIVIAL.get(text)
    if make is not None:
        return make()
    if "__type__" not in text:
        return _PLAIN(text)
    return loads(text)


class Held:
    """A job this worker holds under a lease, from claim until its finish is written."""

    __slots__ = ("id", "task_id", "name", "queue", "priority", "args", "kwargs", "options",
                 "retries", "ignore_result", "revoke", "expires_at", "strict", "token", "thread",
                 "started", "in_user_code", "soft_sent", "hard_sent", "abandoned", "terminated")

    def __init__(self, row: tuple, token: uuid.UUID) -> None:
        (self.id, self.task_id, self.name, self.queue, self.priority, args, kwargs,
         options, self.retries, self.ignore_result, self.revoke, expires_left,
         self.strict, _) = row  # strict: its start is made durable before it runs
        # expiry is judged when the job starts, not when it was claimed (it may wait here);
        # the claim gives the seconds left by the database's clock, kept on this one's
        self.expires_at = None if expires_left is None else time.monotonic() + expires_left
        # the claim sends args, kwargs and options as JSON text (see store.CLAIM)
        self.args = _json_text(args) if args.__class__ is str else args
        self.kwargs = _json_text(kwargs) if kwargs.__class__ is str else kwargs
        self.options = _json_text(options) if options.__class__ is str else options
        self.token = token
        self.thread: int | None = None
        self.started = 0.0
        self.in_user_code = False
        self.soft_sent = self.hard_sent = self.abandoned = self.terminated = False

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.monotonic() >= self.expires_at


class Outcome:
    __slots__ = ("job", "status", "result", "traceback", "countdown", "args", "kwargs",
                 "runtime")

    def __init__(self, job: Held, status: str, result: Any = None, traceback: str | None = None,
                 countdown: float = 0.0, args: str | None = None,
                 kwargs: str | None = None) -> None:
        self.job, self.status, self.result, self.traceback = job, status, result, traceback
        self.countdown, self.args, self.kwargs = countdown, args, kwargs
        self.runtime = 0.0


def request_of(job: Held, hostname: str) -> dispatch.Request:
    """What task_received and task_revoked receivers get as `request` (Celery's Request)."""
    return dispatch.Request(
        id=job.task_id, task_id=job.task_id, name=job.name, task=job.name, args=job.args,
        kwargs=job.kwargs, retries=job.retries, hostname=hostname,
        delivery_info={"routing_key": job.queue, "priority": job.priority},
        options=job.options or {}, replaced_task_nesting=0, stamps={}, stamped_headers=[],
    )


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    """Ask CPython to raise `exc_type` in another thread at its next bytecode boundary.

    A thread blocked inside a C call (sleep, socket read) only sees it once that call returns:
    this is why time limits and terminate are best-effort with a thread pool.
    """
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


_NO_OPTIONS: dict = {}


def request_fields(job: Held, hostname: str, task: Any = None) -> dict:
    """`self.request` of a job run by a worker: Celery's fields, workflow ones included."""
    options = job.options or _NO_OPTIONS
    get = options.get
    task_id, queue, priority = job.task_id, job.queue, job.priority
    properties = get("properties")
    fields = {
        "id": task_id, "args": job.args, "kwargs": job.kwargs, "retries": job.retries,
        "is_eager": False, "called_directly": False, "hostname": hostname, "task": job.name,
        "delivery_info": {"routing_key": queue, "priority": priority,
                          "exchange": "", "redelivered": job.retries > 0},
        "ignore_result": job.ignore_result,
        "root_id": get("root_id") or task_id, "parent_id": get("parent_id"),
        "group_id": get("group_id"), "group_index": get("group_index"),
        "chord": get("chord"), "headers": get("headers") or None, "eta": get("eta"),
        "time_limit": get("time_limit", getattr(task, "time_limit", None)),
        "soft_time_limit": get("soft_time_limit", getattr(task, "soft_time_limit", None)),
        "callbacks": get("link"), "errbacks": get("link_error"), "chain": get("chain"),
        "properties": {"correlation_id": task_id, "priority": priority,
                       "delivery_info": {"routing_key": queue},
                       **properties} if properties else
                      {"correlation_id": task_id, "priority": priority,
                       "delivery_info": {"routing_key": queue}},
        "replaced_task_nesting": get("replaced_task_nesting", 0),
        "reply_to": None, "correlation_id": task_id,
    }
    headers = fields["headers"]
    if headers:  # custom headers read as request attributes too (as in Celery), below ours
        fields = {**{k: v for k, v in headers.items() if isinstance(k, str) and k.isidentifier()},
                  **fields}
    return fields


def _revoked_by_stamp(app: Any, job: Held) -> bool:
    """A stamped job matching a revoke_by_stamped_headers (one query, stamped jobs only)."""
    stamps = stamping.stamps_of(job.options)
    return bool(stamps) and stamping.is_revoked(app, stamps)


def execute(app: Any, job: Held, hostname: str, lock: Any) -> Outcome:
    """Run one job in this (executor) thread and describe how it ended; never raises."""
    task = app.tasks.get(job.name)
    if task is None:
        unknown = NotRegistered(job.name)
        dispatch.task_unknown.send(sender=None, message=None, exc=unknown, name=job.name,
                                   id=job.task_id)
        return Outcome(job, FAILURE, exception_to_dict(unknown))
    if job.expired or job.revoke or (job.options and _revoked_by_stamp(app, job)):
        dispatch.task_revoked.send(sender=task, request=request_of(job, hostname),
                                   terminated=False, signum=None, expired=bool(job.expired))
        reason = "expired" if job.expired else "revoked"
        return Outcome(job, REVOKED, exception_to_dict(TaskRevokedError(reason)))
    args, kwargs = job.args, job.kwargs
    fields = request_fields(job, hostname, task)
    if type(task).push_request is Task.push_request:  # not overridden: no copy of the fields
        task.push_context(Context.adopt(fields))
    else:
        task.push_request(**fields)
    status, value, einfo = FAILURE, None, None
    if dispatch.task_prerun.receivers:  # no receivers: not even the call (per job)
        dispatch.task_prerun.send(sender=task, task_id=job.task_id, task=task, args=args,
                                  kwargs=kwargs)
    try:
        try:
            job.in_user_code = True
            value = task(*args, **kwargs)
        finally:
            with lock:
                job.in_user_code = False
        pending = task.request.retry_request
        if pending is not None:
            raise pending
        encoded = "null" if value is None else dumps_result(value)
        status = SUCCESS
        task.on_success(value, job.task_id, args, kwargs)
        if dispatch.task_success.receivers:
            dispatch.task_success.send(sender=task, result=value)
        if job.ignore_result:
            return Outcome(job, FORGET, encoded)  # the row goes; a chain still gets the value
        return Outcome(job, SUCCESS, encoded)
    except Retry as retry:
        status, einfo = RETRY, tb_module.format_exc()
        countdown = retry.countdown if getattr(retry, "countdown", None) is not None else 0
        eta = getattr(retry, "eta", None)
        if isinstance(eta, datetime):
            moment = eta if eta.tzinfo else eta.replace(tzinfo=UTC)
            countdown = (moment - datetime.now(UTC)).total_seconds()
        new_args = getattr(retry, "new_args", None)
        new_kwargs = getattr(retry, "new_kwargs", None)
        reason = retry.exc if retry.exc is not None else retry
        task.on_retry(reason, job.task_id, args, kwargs, einfo)
        dispatch.task_retry.send(sender=task, request=task.request, reason=reason, einfo=einfo)
        return Outcome(
            job, RETRY, exception_to_dict(reason), einfo, max(0.0, float(countdown)),
            dumps(list(new_args)) if new_args is not None else None,
            dumps(dict(new_kwargs)) if new_kwargs is not None else None,
        )
    except Replaced as replaced:
        status = REPLACED
        return Outcome(job, REPLACED, dumps(replaced.sig))
    except Ignore:
        status = "IGNORED"
        return Outcome(job, FORGET)
    except BaseException as exc:  # noqa: BLE001 - a task may raise anything
        value, einfo = exc, tb_module.format_exc()
        if job.terminated:
            status = REVOKED
            dispatch.task_revoked.send(sender=task, request=task.request, terminated=True,
                                       signum=None, expired=False)
            return Outcome(job, REVOKED, exception_to_dict(TaskRevokedError("terminated")))
        if isinstance(exc, Reject) and exc.requeue:
            status = RETRY  # back in the queue; delivery_info["redelivered"] says so next time
            log.info("%s[%s] rejected with requeue", job.name, job.task_id)
            return Outcome(job, RETRY, exception_to_dict(exc), einfo)
        try:
            task.on_failure(exc, job.task_id, args, kwargs, einfo)
        except Exception:
            log.exception("on_failure handler of %s failed", job.name)
        dispatch.task_failure.send(sender=task, task_id=job.task_id, exception=exc, args=args,
                                   kwargs=kwargs, traceback=exc.__traceback__, einfo=einfo)
        if job.options and job.options.get("link_error"):
            run_errbacks_in_worker(app, task.request, exc, einfo)
        return Outcome(job, FAILURE, exception_to_dict(exc), einfo)
    finally:
        try:
            task.after_return(status, value, job.task_id, args, kwargs, einfo)
        except Exception:
            log.exception("after_return handler of %s failed", job.name)
        if dispatch.task_postrun.receivers:
            dispatch.task_postrun.send(sender=task, task_id=job.task_id, task=task, args=args,
                                       kwargs=kwargs, retval=value, state=status)
        task.pop_request()
