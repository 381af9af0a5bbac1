"""The Celery-compatible application: configuration, the task registry and the decorators."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

from supervisor.native.conf import Settings, defaults
from supervisor.native.control import Control
from supervisor.native.exceptions import ConfigError, NotRegistered
from supervisor.native.ratelimit import parse_rate
from supervisor.native.task import Task, autoretry_wrapper

_current: Celery | None = None
_shared: list[tuple[Callable, dict]] = []  # @shared_task definitions, bound to every app
_lock = threading.Lock()

TASK_OPTIONS = (
    "max_retries", "default_retry_delay", "autoretry_for", "dont_autoretry_for", "retry_kwargs",
    "retry_backoff", "retry_backoff_max", "retry_jitter", "ignore_result", "time_limit",
    "soft_time_limit", "queue", "priority", "expires", "acks_late", "track_started", "typing",
    "serializer", "rate_limit",
)


def current_app() -> Celery:
    """The most recently created app (or a default one reading DATABASE_URL)."""
    global _current
    with _lock:
        if _current is None:
            _current = Celery("default")
        return _current


class Celery:
    """`Celery("proj")`: same constructor, settings and decorators as celery.Celery."""

    Task = Task

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, include: list[str] | None = None,
                 set_as_current: bool = True, **config: Any) -> None:
        global _current
        self.main = main
        self.conf = Settings(defaults())
        self.conf.update(config)
        if broker:
            self.conf.broker_url = broker
        self.include = list(include or [])
        self.tasks: dict[str, Task] = {}
        self.control = Control(self)
        self._backend: Any = None
        self._pending_autodiscover: list[tuple[Any, str]] = []
        for fun, options in _shared:
            self._register(fun, options)
        if set_as_current:
            with _lock:
                _current = self

    # --- configuration ----------------------------------------------------------------------
    def config_from_object(self, obj: Any, namespace: str | None = None, silent: bool = False,
                           force: bool = False) -> None:
        """Read upper- or lower-case settings from an object or "module:attr" / "module"."""
        if isinstance(obj, str):
            try:
                module_name, _, attr = obj.partition(":")
                obj = importlib.import_module(module_name)
                if attr:
                    obj = getattr(obj, attr)
            except (ImportError, AttributeError):
                if silent:
                    return
                raise
        prefix = f"{namespace}_" if namespace else ""
        names = [n for n in dir(obj) if n.startswith(prefix) and not n.startswith("__")]
        if not namespace:
            names = [n for n in names if not n.startswith("_")]
        for name in names:
            key = name[len(prefix):].lower()
            if key:
                self.conf[key] = getattr(obj, name)
        self._backend = None

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Import `<package>.tasks` for each package (Django: each installed app), lazily."""
        self._pending_autodiscover.append((packages, related_name))
        if force:
            self.import_pending()

    def import_pending(self) -> None:
        """Import --include modules and autodiscovered task modules (the worker calls this)."""
        _django_setup_if_needed()
        for module in self.include:
            importlib.import_module(module)
        pending, self._pending_autodiscover = self._pending_autodiscover, []
        for packages, related_name in pending:
            if callable(packages):
                packages = packages()
            if packages is None:
                packages = _django_apps()
            for package in packages:
                try:
                    importlib.import_module(f"{package}.{related_name}")
                except ModuleNotFoundError as error:
                    if error.name != f"{package}.{related_name}":
                        raise

    # --- tasks ------------------------------------------------------------------------------
    def task(self, *args: Any, **options: Any) -> Any:
        """@app.task or @app.task(bind=True, max_retries=5, ...)."""
        if len(args) == 1 and callable(args[0]) and not options:
            return self._register(args[0], {})

        def decorate(fun: Callable) -> Task:
            return self._register(fun, options)

        return decorate

    def _register(self, fun: Callable, options: dict) -> Task:
        name = options.get("name") or _task_name(fun, self.main)
        known = self.tasks.get(name)
        if known is not None and getattr(known, "__wrapped__", None) is fun and not options.get(
            "_shared"
        ):
            return known
        base = options.get("base") or self.Task
        unknown = set(options) - {"name", "base", "bind", "_shared", *TASK_OPTIONS}
        attrs: dict[str, Any] = {k: v for k, v in options.items() if k in TASK_OPTIONS}
        parse_rate(attrs.get("rate_limit"))  # a malformed rate fails here, in one line
        attrs.update(name=name, app=self, bind=bool(options.get("bind")), __wrapped__=fun,
                     __doc__=fun.__doc__, __module__=fun.__module__, _unknown=unknown)
        if options.get("_shared"):
            attrs["app"] = property(lambda _self: current_app())
        cls = type(fun.__name__, (base,), attrs)
        task = cls()
        run = (lambda *a, **kw: fun(task, *a, **kw)) if task.bind else fun
        if task.autoretry_for:
            run = autoretry_wrapper(task, run)
        task.run = run
        self.tasks[name] = task
        return task

    def register_task(self, task: Task) -> Task:
        self.tasks[task.name] = task
        return task

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Queue a task by name (it need not be importable here)."""
        from supervisor.native.result import AsyncResult

        task = self.tasks.get(name) or type(name, (self.Task,), {"name": name, "app": self})()
        job = task.build_job(args, kwargs, **options)
        self.backend.enqueue([job])
        return AsyncResult(job.task_id, app=self, task_name=name)

    def AsyncResult(self, task_id: str) -> Any:  # noqa: N802 - Celery's name
        from supervisor.native.result import AsyncResult

        return AsyncResult(task_id, app=self)

    # --- storage ----------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        url = self.conf.native_database_url
        broker = self.conf.broker_url or ""
        if not url and broker.split(":", 1)[0] in ("postgres", "postgresql", "sqlite"):
            url = broker
        url = url or os.environ.get("DATABASE_URL") or _django_database_url()
        if not url:
            raise ConfigError(
                "no database for the native queue: set DATABASE_URL (or broker=postgresql://... "
                "or, for development, broker=sqlite:///queue.sqlite3)"
            )
        return url

    @property
    def backend(self) -> Any:
        if self._backend is None:
            with _lock:
                if self._backend is None:
                    from supervisor.native.backends import backend_for

                    url = self.database_url
                    self._backend = backend_for(url).Store(url, self)
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __repr__(self) -> str:
        return f"<native Celery {self.main}>"


def _task_name(fun: Callable, main: str | None) -> str:
    module = fun.__module__
    if module == "__main__" and main:
        module = main
    return f"{module}.{fun.__name__}"


def shared_task(*args: Any, **options: Any) -> Any:
    """A task usable by any app: registered in every app, sent through the current one."""

    def decorate(fun: Callable) -> Task:
        _shared.append((fun, options))
        with _lock:
            existing = list(filter(None, [_current]))
        task = None
        for app in existing:
            app._register(fun, options)
        # the object handed back sends through whichever app is current at call time
        task = current_app()._register(fun, {**options, "_shared": True})
        return task

    if len(args) == 1 and callable(args[0]) and not options:
        return decorate(args[0])
    return decorate


def _django_setup_if_needed() -> None:
    """A worker started with -A on a Django project: set Django up before importing tasks,
    as Celery does when DJANGO_SETTINGS_MODULE is set."""
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return
    import importlib.util

    if importlib.util.find_spec("django") is None:
        return
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def _django_configured() -> bool:
    import sys

    if "django" not in sys.modules:
        return False
    from django.conf import settings

    return bool(settings.configured)


def _django_apps() -> list[str]:
    if not _django_configured():
        return []
    from django.apps import apps

    return [config.name for config in apps.get_app_configs()]


def _django_database_url() -> str | None:
    """Build a URL from Django's default database when it is PostgreSQL."""
    if not _django_configured():
        return None
    from django.conf import settings

    db = settings.DATABASES.get("default", {})
    if "postgresql" not in db.get("ENGINE", ""):
        return None
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        dbname=db.get("NAME") or "", user=db.get("USER") or None,
        password=db.get("PASSWORD") or None, host=db.get("HOST") or None,
        port=str(db.get("PORT")) if db.get("PORT") else None,
    )
