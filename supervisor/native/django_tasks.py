"""Django's task API (`django.tasks`, or the `django-tasks` backport on Django 5.2) on the
native queue:

    TASKS = {"default": {
        "BACKEND": "supervisor.native.django_tasks.NativeBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"max_retries": 3, "retry_backoff": 2, "lease_seconds": 30,
                    "schedule": {"digest": {"task": "mail.tasks.digest", "schedule": "0 7 * * *"}}},
    }}

`@task` functions, `.enqueue()` / `.aenqueue()`, `get_result()`, priorities, queues and
`run_after` work as Django documents them; `python manage.py native_worker` runs them. What
the API lacks comes from the native queue: retries with exponential backoff (backend OPTIONS or
`@task(max_retries=..., retry_backoff=...)`), leases with the reaper (a task held by a worker
that died runs again), cron schedules, time limits.

A Django task is stored as one native job named by the function's module path; the worker
resolves that name back to the `@task` object when it first meets it.
"""

from __future__ import annotations

import importlib.util
import random
import threading
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

if importlib.util.find_spec("django.tasks"):  # Django >= 6.0
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
else:  # Django 5.2 with the django-tasks backport
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

from supervisor.native.app import Celery
from supervisor.native.task import Task as NativeJob

# backend OPTIONS -> (native app setting, or None for a per-task default)
APP_OPTIONS = {
    "database_url": "native_database_url",
    "lease_seconds": "native_lease_seconds",
    "max_recoveries": "native_max_recoveries",
    "heartbeat_interval": "native_heartbeat_interval",
    "result_expires": "result_expires",
    "failure_expires": "native_failure_expires",
    "concurrency": "worker_concurrency",
    "timezone": "timezone",
}
TASK_OPTIONS = ("max_retries", "retry_backoff", "retry_backoff_max", "retry_jitter",
                "time_limit", "soft_time_limit")
DEFAULTS = {"max_retries": 0, "retry_backoff": 1.0, "retry_backoff_max": 600.0,
            "retry_jitter": True, "time_limit": None, "soft_time_limit": None}

# native status -> Django's
STATUS = {
    "PENDING": TaskResultStatus.READY,
    "RETRY": TaskResultStatus.READY,
    "RESERVED": TaskResultStatus.RUNNING,
    "SUCCESS": TaskResultStatus.SUCCESSFUL,
    "FAILURE": TaskResultStatus.FAILED,
    "REVOKED": TaskResultStatus.FAILED,
}

GET_RESULT = """
SELECT status, result, traceback, retries, created_at, started_at, finished_at, name, args,
       kwargs, worker, queue, priority
FROM start_all.jobs WHERE task_id = %s
"""

_apps: dict[tuple, Celery] = {}  # one native app per backend configuration, for every thread
_apps_lock = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class NativeTask(Task):
    """A Django Task with the native queue's extras, as `@task(...)` keyword arguments.
    None means: the backend's OPTIONS (then the defaults in DEFAULTS)."""

    max_retries: int | None = None
    retry_backoff: float | None = None  # seconds before the first retry, doubling each time
    retry_backoff_max: float | None = None
    retry_jitter: bool | None = None  # a random delay in [0, backoff] (spreads a herd)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    time_limit: float | None = None  # hard limit (s): the task fails
    soft_time_limit: float | None = None  # raises SoftTimeLimitExceeded inside the task


def backoff(base: float, attempt: int, maximum: float, jitter: bool) -> float:
    """Seconds before retry number `attempt` (0 for the first): base * 2**attempt, capped."""
    delay = min(maximum, base * (2 ** attempt))
    return random.uniform(0, delay) if jitter else delay


class _Registry(dict):
    """The native app's task registry, which also knows this backend's Django tasks by
    module path (the worker meets them by name, e.g. in a job or a schedule entry)."""

    def __init__(self, existing: dict, alias: str) -> None:
        super().__init__(existing)
        self.aliases = {alias}

    def get(self, name: str, default: Any = None) -> Any:
        found = super().get(name)
        if found is None and isinstance(name, str) and "." in name:
            found = self._resolve(name)
        return default if found is None else found

    def _resolve(self, name: str) -> Any:
        try:
            obj = import_string(name)
        except ImportError:
            return None
        if not isinstance(obj, Task) or obj.backend not in self.aliases:
            return None
        return _backend_for(obj).native_job(obj)


def _task_backends() -> Any:
    if importlib.util.find_spec("django.tasks"):
        from django.tasks import task_backends
    else:
        from django_tasks import task_backends
    return task_backends


def _backend_for(task: Task) -> NativeBackend:
    return _task_backends()[task.backend]


class NativeBackend(BaseTaskBackend):
    task_class = NativeTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        unknown = set(self.options) - {*APP_OPTIONS, *TASK_OPTIONS, "schedule", "app"}
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted({*APP_OPTIONS, *TASK_OPTIONS, 'schedule', 'app'}))})"
            )
        self.native_app = self._app()

    # --- the native app behind this backend ------------------------------------------------
    def _app(self) -> Celery:
        key = (self.alias, repr(sorted(self.options.items())))
        with _apps_lock:
            app = _apps.get(key)
            if app is None:
                app = _apps[key] = self._build_app()
            return app

    def _build_app(self) -> Celery:
        spec = self.options.get("app")
        if spec:  # share a Celery-API app: one worker runs both kinds of task
            module, _, attr = spec.partition(":")
            app = getattr(importlib.import_module(module), attr or "app")
            if not isinstance(app, Celery):
                raise ImproperlyConfigured(f"TASKS[{self.alias!r}]: {spec} is not a native app")
        else:
            from django.conf import settings

            app = Celery(f"django-tasks:{self.alias}", set_as_current=False)
            app.conf.task_default_queue = "default"
            app.conf.timezone = getattr(settings, "TIME_ZONE", None) or "UTC"
            for option, setting in APP_OPTIONS.items():
                if option in self.options:
                    app.conf[setting] = self.options[option]
        schedule = {}
        for name, entry in (self.options.get("schedule") or {}).items():
            entry = dict(entry)
            if isinstance(entry.get("task"), Task):
                entry["task"] = entry["task"].module_path
            schedule[name] = entry
        if schedule:
            app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **schedule}
        if isinstance(app.tasks, _Registry):
            app.tasks.aliases.add(self.alias)
        else:
            app.tasks = _Registry(app.tasks, self.alias)
        return app

    @property
    def worker_queues(self) -> list[str]:
        """What `manage.py native_worker` consumes when no -Q is given."""
        return sorted(self.queues) or [self.native_app.conf.task_default_queue]

    def option(self, task: Task, name: str) -> Any:
        value = getattr(task, name, None)
        if value is None:
            value = self.options.get(name, DEFAULTS[name])
        return value

    def native_job(self, task: Task) -> NativeJob:
        """The native task that runs `task` (created once per module path and options)."""
        path = task.module_path
        app = self.native_app
        known = dict.get(app.tasks, path)
        if known is not None and known.django_task == task:
            return known
        backend = self
        attrs = {
            "name": path, "app": app, "django_task": task, "queue": task.queue_name,
            "priority": task.priority, "max_retries": self.option(task, "max_retries"),
            "time_limit": self.option(task, "time_limit"),
            "soft_time_limit": self.option(task, "soft_time_limit"),
            "run": lambda _self, *args, **kwargs: backend._execute(_self, args, kwargs),
            "__module__": task.func.__module__,
        }
        job = type(task.func.__name__, (NativeJob,), attrs)()
        dict.__setitem__(app.tasks, path, job)
        return job

    # --- Django's API -------------------------------------------------------------------------
    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        retries = self.option(task, "max_retries")
        if retries is not None and (int(retries) != retries or retries < 0):
            raise ImproperlyConfigured(f"{task.module_path}: max_retries must be >= 0")

    def check(self, **kwargs: Any) -> list:
        from django.apps import apps
        from django.core import checks

        messages = list(super().check(**kwargs))
        if not apps.is_installed("supervisor.native.django"):
            messages.append(checks.Warning(
                f"TASKS[{self.alias!r}] runs on the native queue, but "
                "'supervisor.native.django' is not in INSTALLED_APPS",
                hint="add it: it provides `python manage.py native_worker`, which runs the tasks",
                id="start_all.W001",
            ))
        return messages

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):
            run_after = timezone.make_aware(run_after)
        native = self.native_job(task)
        job = native.build_job(args, kwargs, priority=task.priority, queue=task.queue_name,
                               eta=run_after)
        # same database as Django's: the INSERT joins the caller's transaction (see
        # transactions.py); Django's documented on_commit() pattern works as well
        self.native_app.backend.enqueue([job])
        result = self._result(task, job.task_id, TaskResultStatus.READY, args, kwargs,
                              enqueued_at=timezone.now())
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        store = self.native_app.backend
        if store.url.startswith("sqlite:"):  # development: fewer columns
            return self._result_from_meta(result_id, store.get_meta(str(result_id)))
        rows = store.execute(GET_RESULT, (str(result_id),))
        if not rows:
            raise TaskResultDoesNotExist(result_id)
        (status, value, traceback, retries, created, started, finished, name, args, kwargs,
         worker, queue, priority) = rows[0]
        return self._build(result_id, name, status, value, traceback, retries, args, kwargs,
                           created, started, finished, worker, queue, priority)

    def _result_from_meta(self, result_id: str, meta: dict | None) -> TaskResult:
        if meta is None:
            raise TaskResultDoesNotExist(result_id)
        return self._build(result_id, meta["name"], meta["status"], meta["result"],
                           meta["traceback"], meta["retries"], meta["args"], meta["kwargs"],
                           None, None, meta["finished_at"], None, None, None)

    def _build(self, result_id: str, name: str, status: str, value: Any, traceback: str | None,
               retries: int, args: Any, kwargs: Any, created: Any, started: Any,
               finished: Any, worker: str | None, queue: str | None,
               priority: int | None) -> TaskResult:
        try:
            task = import_string(name)
        except ImportError:
            raise TaskResultDoesNotExist(f"{result_id}: task {name} cannot be imported") from None
        if not isinstance(task, Task):
            raise TaskResultDoesNotExist(f"{result_id}: {name} is not a Django task")
        changes = {}
        if queue and queue != task.queue_name:
            changes["queue_name"] = queue
        if priority is not None and priority != task.priority:
            changes["priority"] = priority
        if changes:
            task = task.using(**changes)
        errors = []
        if status in ("FAILURE", "REVOKED", "RETRY") and isinstance(value, dict):
            errors.append(TaskError(
                exception_class_path=f"{value.get('exc_module')}.{value.get('exc_type')}",
                traceback=traceback or "",
            ))
        attempts = retries + (1 if status in ("RESERVED", "SUCCESS", "FAILURE") else 0)
        result = self._result(
            task, result_id, STATUS.get(status, TaskResultStatus.READY), args or [],
            kwargs or {}, enqueued_at=created, started_at=started, finished_at=finished,
            worker_ids=[worker or "?"] * attempts,
        )
        if status == "SUCCESS":
            object.__setattr__(result, "_return_value", value)
        result.errors.extend(errors)
        return result

    def _result(self, task: Task, result_id: str, status: Any, args: list, kwargs: dict,
                enqueued_at: Any = None, started_at: Any = None, finished_at: Any = None,
                worker_ids: list[str] | None = None) -> TaskResult:
        return TaskResult(
            task=task, id=str(result_id), status=status, enqueued_at=enqueued_at,
            started_at=started_at, last_attempted_at=started_at, finished_at=finished_at,
            args=args, kwargs=kwargs, backend=self.alias, errors=[],
            worker_ids=list(worker_ids or []),
        )

    # --- in the worker ---------------------------------------------------------------------
    def _execute(self, job: NativeJob, args: tuple, kwargs: dict) -> Any:
        """Run the Django task in an executor thread: signals, retries, the outcome."""
        from django.db import close_old_connections

        task: Task = job.django_task
        request = job.request
        now = timezone.now()
        result = self._result(task, request.id, TaskResultStatus.RUNNING, list(args),
                              dict(kwargs), started_at=now,
                              worker_ids=[request.hostname or "?"] * (request.retries + 1))
        task_started.send(type(self), task_result=result)
        close_old_connections()  # a thread keeps its connection between tasks, as a request
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
            value = normalize_json(value)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            retries = self.option(task, "max_retries") or 0
            if isinstance(exc, getattr(task, "retry_on", Exception)) and request.retries < retries:
                delay = backoff(float(self.option(task, "retry_backoff")), request.retries,
                                float(self.option(task, "retry_backoff_max")),
                                bool(self.option(task, "retry_jitter")))
                raise job.retry(exc=exc, countdown=delay, max_retries=retries) from None
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            object.__setattr__(result, "finished_at", timezone.now())
            import traceback as tb

            result.errors.append(TaskError(
                exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                traceback="".join(tb.format_exception(exc)),
            ))
            task_finished.send(type(self), task_result=result)
            raise
        finally:
            close_old_connections()
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "_return_value", value)
        task_finished.send(type(self), task_result=result)
        return value
