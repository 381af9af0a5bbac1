"""Task: the object `@app.task` returns; calling, .delay(), .apply_async(), .retry()."""

from __future__ import annotations

import inspect
import random
import threading
import traceback as tb_module
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from supervisor.native import stamping, states
from supervisor.native.canvas import (
    Signature,
    callbacks_option,
    chunks,
    group,
    maybe_signature,
    xmap,
    xstarmap,
)
from supervisor.native.exceptions import (
    EncodeError,
    Ignore,
    MaxRetriesExceededError,
    Retry,
)
from supervisor.native.flow import replacement
from supervisor.native.job import Job
from supervisor.native.result import AsyncResult, EagerResult
from supervisor.native.serial import dumps, dumps_call

__all__ = ["Task", "Context", "Job", "Signature", "group", "backoff_interval"]


def backoff_interval(factor: int, retries: int, maximum: float, full_jitter: bool) -> int:
    """Exponential backoff: min(maximum, factor * 2**retries), then uniform in [0, that]."""
    countdown = int(min(maximum, factor * (2 ** retries)))
    if full_jitter:
        countdown = random.randrange(countdown + 1)
    return max(0, countdown)


class Context:
    """`self.request` inside a task: what this particular run is about.

    The defaults are class attributes (as in Celery's Context), so a request is one dict
    update: a worker builds one per job, with most fields given."""

    id: str | None = None
    retries = 0
    is_eager = False
    called_directly = True
    eta = None
    expires = None
    hostname: str | None = None
    ignore_result = False
    task: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    chord: str | None = None
    headers: dict | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    callbacks: list | None = None
    errbacks: list | None = None
    chain: list | None = None
    replaced_task_nesting = 0
    retry_request: Retry | None = None  # set by retry(throw=False)
    stamps: dict | None = None  # a stamped job's stamps (stamping.py)
    stamped_headers: list | None = None

    def __init__(self, **fields: Any) -> None:
        # the mutable defaults are each request's own
        self.args: list = []
        self.kwargs: dict = {}
        self.delivery_info: dict = {}
        self.properties: dict = {}
        self.__dict__.update(fields)
        self.timelimit = (self.time_limit, self.soft_time_limit)
        self.group = self.group_id  # Celery's name for it

    @classmethod
    def adopt(cls, fields: dict) -> Context:
        """A request over `fields` itself, not a copy (the worker builds that dict per job)."""
        ctx = cls.__new__(cls)
        for key, make in (("args", list), ("kwargs", dict), ("delivery_info", dict),
                          ("properties", dict)):
            if key not in fields:
                fields[key] = make()
        ctx.__dict__ = fields
        ctx.timelimit = (ctx.time_limit, ctx.soft_time_limit)
        ctx.group = ctx.group_id
        return ctx

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def _routed_queue(routes: Any, name: str) -> str | None:
    """Celery's task_routes in its dict form: {"proj.tasks.*": {"queue": "slow"}, ...}."""
    if not routes:
        return None
    from fnmatch import fnmatchcase

    for routes_map in routes if isinstance(routes, (list, tuple)) else [routes]:
        if not isinstance(routes_map, dict):
            continue
        for pattern, route in routes_map.items():
            if fnmatchcase(name, pattern):
                return route.get("queue") if isinstance(route, dict) else str(route)
    return None


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Task:
    """Base class of tasks; options are class attributes as in Celery."""

    name: str = ""
    app: Any = None
    typing = True
    max_retries: int | None = 3
    default_retry_delay: float = 180
    autoretry_for: tuple = ()
    dont_autoretry_for: tuple = ()
    retry_kwargs: dict = {}
    retry_backoff: bool | int = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    ignore_result: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | float | None = None  # across all workers (native/ratelimit.py)
    queue: str | None = None
    priority: int | None = None
    expires: Any = None
    acks_late = False
    track_started: bool | None = None
    serializer = "json"
    bind = False
    _local = threading.local()

    # --- running ----------------------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:  # replaced by the decorated function
        raise NotImplementedError("Tasks must define the run method.")

    @property
    def request(self) -> Context:
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else Context()

    def push_request(self, **fields: Any) -> None:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(Context(**fields))

    def push_context(self, ctx: Context) -> None:
        """push_request() of a Context already built (the worker's, see Context.adopt)."""
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(ctx)

    def pop_request(self) -> None:
        self._local.stack.pop()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        stack = getattr(self._local, "stack", None)
        if stack:  # the worker or apply() already pushed this run's request
            return self.run(*args, **kwargs)
        self.push_request(args=list(args), kwargs=kwargs, called_directly=True, task=self.name)
        try:
            return self.run(*args, **kwargs)
        finally:
            self.pop_request()

    # --- handlers (override in a base class) -----------------------------------------------
    def on_success(self, retval: Any, task_id: str, args: list, kwargs: dict) -> None:
        pass

    def on_failure(self, exc: BaseException, task_id: str, args: list, kwargs: dict,
                   einfo: Any) -> None:
        pass

    def on_retry(self, exc: BaseException, task_id: str, args: list, kwargs: dict,
                 einfo: Any) -> None:
        pass

    def after_return(self, status: str, retval: Any, task_id: str, args: list, kwargs: dict,
                     einfo: Any) -> None:
        pass

    # --- sending ----------------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult | EagerResult:
        return self.apply_async(args, kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: partial arguments, the rest given when it is called or chained."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a chain does not pass it the previous result."""
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args: Any = None, kwargs: Any = None, *starargs: Any,
                  **options: Any) -> Signature:
        return Signature(self, args or (), kwargs or {}, options)

    subtask = signature

    def map(self, it: Any) -> xmap:
        return xmap(self.s(), it)

    def starmap(self, it: Any) -> xstarmap:
        return xstarmap(self.s(), it)

    def chunks(self, it: Any, n: int) -> chunks:
        return chunks(self.s(), it, n)

    def check_arguments(self, *args: Any, **kwargs: Any) -> None:
        """Celery's typing=True: a call that does not fit the function raises TypeError here,
        in the caller, instead of failing later in a worker."""
        fun = getattr(self, "__wrapped__", None)
        if fun is None or not self.typing:
            return
        try:
            bound = _signature_of(fun)
        except (TypeError, ValueError):
            return
        try:
            if self.bind:
                bound.bind(self, *args, **kwargs)
            else:
                bound.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{self.name}: {error}") from None

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """Send after the caller's Django transaction commits (at once outside of one)."""
        self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(self, args: Any = None, kwargs: Any = None,
                              **options: Any) -> None:
        self.check_arguments(*(args or ()), **(kwargs or {}))
        from supervisor.native.transactions import on_commit

        on_commit(lambda: self.apply_async(args, kwargs, **options))

    def add_to_chord(self, sig: Any, lazy: bool = False) -> Any:
        """Add `sig` to the header of the chord this task belongs to: the body waits for it
        too, and gets its result with the others' (after them). The chord's counter is
        raised in the transaction that enqueues `sig`: both or neither."""
        from supervisor.native.flow import add_to_chord

        if lazy:
            raise NotImplementedError(f"{self.name}: self.add_to_chord(sig, lazy=True) is not "
                                      "supported by the native worker (the task is sent now "
                                      "or not at all)")
        if not self.request.chord:
            raise ValueError("Current task is not member of any chord")
        return add_to_chord(self.app, self.request, sig)

    def replace(self, sig: Any) -> None:
        """Replace this running task by `sig`: it takes over this task's place in its
        workflow, and this task's result becomes sig's result."""
        sig = maybe_signature(sig, self.app)
        stamps = self.request.stamps
        if stamps:  # the replacement keeps this task's stamps
            sig.stamp(**stamps)
        return self.on_replace(sig)

    def on_replace(self, sig: Any) -> None:
        """Called with the replacing signature (Celery's hook); raises to end this task."""
        raise replacement(self, sig)

    def build_job(self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
                  countdown: float | None = None, eta: datetime | None = None,
                  expires: Any = None, priority: int | None = None, queue: str | None = None,
                  ignore_result: bool | None = None, time_limit: float | None = None,
                  soft_time_limit: float | None = None, retries: int = 0,
                  serializer: str | None = None, headers: dict | None = None,
                  flow: dict | None = None, link: Any = None, link_error: Any = None,
                  **unknown: Any) -> Job:
        """Validate and encode one call; errors surface here, in the caller, not in a worker."""
        if serializer not in (None, "json"):
            raise EncodeError(f"{self.name}: serializer {serializer!r} unsupported: JSON only")
        conf = self.app.conf
        args_json, kwargs_json = dumps_call(self.name, args, kwargs)
        expires = self.expires if expires is None else expires
        options: dict[str, Any] = dict(flow or {})
        if link or link_error:  # apply_async(link=...): plain calls with callbacks
            options.update(callbacks_option(self.app, link, link_error))
        hard = time_limit if time_limit is not None else self.time_limit
        soft = soft_time_limit if soft_time_limit is not None else self.soft_time_limit
        if unknown:
            if "stamped_headers" in unknown:  # a stamped signature: stamps go with the row
                stamps = stamping.take(unknown)
                if stamps:
                    headers = stamping.job_headers(headers, stamps)
            _check_options(self.name, {k: v for k, v in unknown.items()
                                       if k not in MESSAGE_PROPERTIES})
        if hard is not None and soft is not None and float(soft) > float(hard):
            raise ValueError(f"{self.name}: soft_time_limit must be less than or equal to "
                             f"time_limit (got {soft} > {hard})")
        if time_limit is not None:
            options["time_limit"] = float(time_limit)
        if soft_time_limit is not None:
            options["soft_time_limit"] = float(soft_time_limit)
        if countdown is not None or isinstance(eta, datetime):  # read back as request.eta
            when = _as_utc(eta) if isinstance(eta, datetime) else (
                datetime.now(UTC) + timedelta(seconds=float(countdown)))
            options["eta"] = when.isoformat()
        if headers:
            options["headers"] = dict(headers)
        properties = unknown and {k: unknown.pop(k) for k in MESSAGE_PROPERTIES if k in unknown}
        if properties:  # AMQP message properties: kept, and read back as request.properties
            options["properties"] = properties
        if priority is None:
            priority = self.priority if self.priority is not None else conf.task_default_priority
        return Job(
            task_id=str(task_id or uuid.uuid4()),
            name=self.name,
            queue=queue or _routed_queue(conf.get("task_routes"), self.name) or self.queue
            or conf.task_default_queue,
            priority=int(priority or 0),
            args=args_json,
            kwargs=kwargs_json,
            options=dumps(options) if options else None,
            eta=_as_utc(eta) if isinstance(eta, datetime) else None,
            countdown=float(countdown) if countdown is not None else None,
            expires_at=_as_utc(expires) if isinstance(expires, datetime) else None,
            expires_in=(
                float(expires.total_seconds()) if isinstance(expires, timedelta)
                else float(expires) if isinstance(expires, (int, float)) else None
            ),
            ignore_result=bool(self._ignores_result(ignore_result)),
            retries=int(retries),
            fresh=not task_id,
        )

    def _ignores_result(self, override: bool | None = None) -> bool:
        if override is not None:
            return override
        if self.ignore_result is not None:
            return self.ignore_result
        return bool(self.app.conf.task_ignore_result)

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
                    **options: Any) -> AsyncResult | EagerResult:
        self.check_arguments(*(args or ()), **(kwargs or {}))
        if self.app.conf.task_always_eager:
            dumps_call(self.name, args, kwargs)  # same error as the queue would give
            return self.apply(args, kwargs, task_id=task_id, **options)
        job = self.build_job(args, kwargs, task_id=task_id, **options)
        self.app.backend.enqueue([job])
        result = AsyncResult(job.task_id, app=self.app, task_name=self.name)
        result.ignored = job.ignore_result
        return result

    def apply(self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
              retries: int = 0, throw: bool | None = None, **_options: Any) -> EagerResult:
        """Run in this process now; retries run at once (countdowns are not waited for)."""
        task_id = str(task_id or uuid.uuid4())
        args, kwargs = list(args or ()), dict(kwargs or {})
        propagate = self.app.conf.task_eager_propagates if throw is None else throw
        outer = getattr(self._local, "stack", None)
        parent = outer[-1] if outer else None  # apply() inside a running task: its child
        lineage = {"parent_id": parent.id if parent else None,
                   "root_id": (parent.root_id or parent.id) if parent else task_id}
        while True:
            self.push_request(id=task_id, args=args, kwargs=kwargs, retries=retries,
                              is_eager=True, called_directly=False, task=self.name,
                              delivery_info={"is_eager": True}, **lineage)
            try:
                value = self(*args, **kwargs)
                pending = self.request.retry_request
                if pending is not None:
                    raise pending
            except Retry as retry:
                args, kwargs = _retry_call(retry, args, kwargs)
                retries += 1
                continue
            except Ignore:
                return EagerResult(task_id, None, states.PENDING, name=self.name)
            except BaseException as exc:
                if propagate or not isinstance(exc, Exception):
                    raise
                return EagerResult(task_id, exc, states.FAILURE, tb_module.format_exc(),
                                   name=self.name)
            finally:
                self.pop_request()
            return EagerResult(task_id, value, states.SUCCESS, name=self.name)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    # --- retrying ---------------------------------------------------------------------------
    def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None,
              throw: bool = True, eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Retry:
        """Re-queue this run (Celery semantics).

        With no retries left: re-raise `exc` when given, else MaxRetriesExceededError.
        Without eta/countdown the delay is `default_retry_delay` (180 s).
        """
        request = self.request
        if request.called_directly:
            raise exc if exc is not None else Retry("Task can be retried", None)
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}"
            )
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        if (args is not None and kwargs is None and request.kwargs) or (
                kwargs is not None and args is None and request.args):
            args, kwargs = _switch_convention(self, request, args, kwargs)
        retry = Retry(exc=exc, when=eta if eta is not None else countdown)
        retry.countdown = countdown
        retry.eta = eta
        retry.new_args = args
        retry.new_kwargs = kwargs
        if args is not None or kwargs is not None:
            dumps_call(self.name, args, kwargs)
        if not throw:
            request.retry_request = retry
            return retry
        raise retry


_SIGNATURES: dict[Any, inspect.Signature] = {}


def _signature_of(fun: Any) -> inspect.Signature:
    sig = _SIGNATURES.get(fun)
    if sig is None:
        sig = _SIGNATURES[fun] = inspect.signature(fun)
    return sig


MESSAGE_PROPERTIES = ("app_id", "user_id", "content_type", "content_encoding", "reply_to",
                      "correlation_id", "message_id", "type")
# apply_async options Celery has that change nothing here (AMQP routing details)
HARMLESS_OPTIONS = frozenset({
    "exchange", "routing_key", "exchange_type", "delivery_mode", "mandatory", "immediate",
    "connection", "producer", "router", "add_to_parent", "publisher", "retry", "retry_policy",
    "compression", "shadow", "chord", "group_id", "group_index",
    "root_id", "parent_id", "task_type", "stamped_headers", "stamps", "ignore_result",
    "content_type", "content_encoding", "declare", "subtask_type", "immutable", "argsrepr",
    "kwargsrepr",
})


def _check_options(name: str, unknown: dict) -> None:
    """Nothing is dropped silently: an option this queue cannot honour is an error."""
    bad = sorted(k for k, v in unknown.items() if k not in HARMLESS_OPTIONS and v is not None)
    if bad:
        raise TypeError(f"{name}: apply_async() got unsupported option(s): {', '.join(bad)}")


def _switch_convention(task: Task, request: Context, args: Any, kwargs: Any
                       ) -> tuple[Any, Any]:
    """retry(args=...) on a call made with kwargs, or the reverse: keep what the caller
    passed, minus what the new arguments now pass another way (as Celery 5.7)."""
    fun = getattr(task, "__wrapped__", None)
    try:
        params = list(_signature_of(fun).parameters.values()) if fun else None
    except (TypeError, ValueError):
        params = None
    if not params:
        return args, kwargs
    if task.bind:
        params = params[1:]
    named = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    if args is not None:  # new positional args fill the first parameters
        taken = {p.name for p in named[:len(args)]}
        return args, {k: v for k, v in request.kwargs.items() if k not in taken}
    old = list(request.args)
    if len(old) > len(named) or any(p.kind is p.POSITIONAL_ONLY for p in params[:len(old)]):
        return args, kwargs  # the old positions cannot be named: leave it to the call
    if not any(p.name in kwargs for p in named[:len(old)]):
        return args, kwargs
    return [], {**{p.name: v for p, v in zip(named, old, strict=False)}, **kwargs}


def _retry_call(retry: Retry, args: list, kwargs: dict) -> tuple[list, dict]:
    new_args = getattr(retry, "new_args", None)
    new_kwargs = getattr(retry, "new_kwargs", None)
    return (list(new_args) if new_args is not None else args,
            dict(new_kwargs) if new_kwargs is not None else kwargs)


def autoretry_wrapper(task: Task, fun: Any) -> Any:
    """Wrap `fun` so the exceptions in autoretry_for become task.retry(exc=...)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fun(*args, **kwargs)
        except (Ignore, Retry):
            raise
        except task.dont_autoretry_for:
            raise
        except task.autoretry_for as exc:
            retry_kwargs = dict(task.retry_kwargs or {})
            if task.retry_backoff:
                retry_kwargs["countdown"] = backoff_interval(
                    int(task.retry_backoff), task.request.retries,
                    task.retry_backoff_max, task.retry_jitter,
                )
            raise task.retry(exc=exc, **retry_kwargs) from None

    return run
