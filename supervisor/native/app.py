"""The Celery-compatible application: configuration, the task registry and the decorators."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

from supervisor.native import canvas
from supervisor.native.conf import Settings, defaults
from supervisor.native.control import Control
from supervisor.native.current import current_app, get_current, set_current
from supervisor.native.exceptions import ConfigError, NotRegistered
from supervisor.native.ratelimit import parse_rate
from supervisor.native.task import Task, autoretry_wrapper

__all__ = ["Celery", "current_app", "shared_task"]

_shared: list[tuple[Callable, dict]] = []  # @shared_task definitions, bound to every app
_lock = threading.Lock()  # guards lazy backend creation only

# decorator options that are not plain Task attributes
DECORATOR_OPTIONS = ("name", "base", "bind", "_shared", "pydantic", "pydantic_strict",
                     "pydantic_context", "pydantic_dump_kwargs")


class AppSignal:
    """app.on_after_configure and friends: connect receivers, send once the app is set up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: list[Callable] = []

    def connect(self, receiver: Callable | None = None, **_options: Any) -> Any:
        if receiver is None:
            return lambda fn: self.connect(fn)
        if receiver not in self.receivers:
            self.receivers.append(receiver)
        return receiver

    def send(self, sender: Any, **named: Any) -> list:
        return [(r, r(sender=sender, signal=self, **named)) for r in list(self.receivers)]


class Celery:
    """`Celery("proj")`: same constructor, settings and decorators as celery.Celery."""

    Task = Task

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, include: list[str] | None = None,
                 set_as_current: bool = True, **config: Any) -> None:
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
        self._placeholders: dict[str, Task] = {}
        self.on_configure = AppSignal("on_configure")
        self.on_after_configure = AppSignal("on_after_configure")
        self.on_after_finalize = AppSignal("on_after_finalize")
        self.finalized = False
        self._register_builtins()
        for fun, options in _shared:
            self._register(fun, options)
        if set_as_current:
            set_current(self)

    def _register_builtins(self) -> None:
        """The tasks canvas runs as jobs (map, starmap, collecting a nested group)."""
        self._register(lambda task, it: canvas.run_map(task, it, False), {"name": "celery.map"})
        self._register(lambda task, it: canvas.run_map(task, it, True),
                       {"name": "celery.starmap"})
        self._register(lambda *results: results[0] if len(results) == 1 else list(results),
                       {"name": "celery.accumulate"})

    def set_current(self) -> None:
        """Make this the app that shared tasks and bare AsyncResult(id) use (Celery's)."""
        set_current(self)

    set_default = set_current

    def finalize(self, auto: bool = False) -> None:
        """Send on_after_configure / on_after_finalize once (the worker calls this at start),
        so add_periodic_task() calls in receivers land in beat_schedule in time."""
        if self.finalized:
            return
        self.finalized = True
        self.on_configure.send(sender=self)
        self.on_after_configure.send(sender=self, source=self.conf)
        self.on_after_finalize.send(sender=self)

    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (), kwargs: Any = None,
                          name: str | None = None, **options: Any) -> str:
        """Celery's add_periodic_task: an entry in beat_schedule, fired by the worker."""
        sig = canvas.maybe_signature(sig, self) if isinstance(sig, dict) else sig
        if type(sig) is not canvas.Signature:
            raise TypeError("add_periodic_task: the native beat sends single task signatures; "
                            f"got a {type(sig).__name__}")
        key = name or f"{sig.name}{tuple(sig.args)!r}"
        entry = {"task": sig.name, "schedule": schedule, "args": list(args or sig.args),
                 "kwargs": dict(kwargs or sig.kwargs),
                 "options": {**sig.options, **options}}
        self.conf.beat_schedule = {**(self.conf.get("beat_schedule") or {}), key: entry}
        return key

    def signature(self, *args: Any, **kwargs: Any) -> canvas.Signature:
        kwargs.setdefault("app", self)
        return canvas.signature(*args, **kwargs)

    def placeholder_task(self, name: str) -> Task:
        """A stand-in for a task not registered here (send_task, signatures by name)."""
        task = self._placeholders.get(name)
        if task is None:
            task = type(name, (self.Task,), {"name": name, "app": self, "typing": False})()
            self._placeholders[name] = task
        return task

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
        # as in Celery, any other option becomes an attribute of the task class
        attrs: dict[str, Any] = {k: v for k, v in options.items() if k not in DECORATOR_OPTIONS}
        parse_rate(attrs.get("rate_limit"))  # a malformed rate fails here, in one line
        attrs.update(name=name, app=self, bind=bool(options.get("bind")),
                     __wrapped__=staticmethod(fun),  # the plain function, never bound
                     __doc__=fun.__doc__, __module__=fun.__module__)
        if options.get("_shared"):
            attrs["app"] = property(lambda _self: current_app())
        cls = type(getattr(fun, "__name__", "task"), (base,), attrs)
        task = cls()
        run = (lambda *a, **kw: fun(task, *a, **kw)) if task.bind else fun
        if options.get("pydantic"):
            run = _pydantic_wrapper(fun, run, options)
        if task.autoretry_for:
            run = autoretry_wrapper(task, run)
        task.run = run
        self.tasks[name] = task
        return task

    def register_task(self, task: Any, **options: Any) -> Task:
        """Register a class-based task (an instance or the class): its class is bound to this
        app, with class-level options (autoretry_for included) honoured, so every instance
        of it sends through this app."""
        cls = task if isinstance(task, type) else type(task)
        task = task() if isinstance(task, type) else task
        parse_rate(getattr(cls, "rate_limit", None))
        if not cls.name:
            cls.name = f"{cls.__module__}.{cls.__name__}"
        if not isinstance(cls.__dict__.get("app"), property):
            cls.app = self
        if "__wrapped__" not in cls.__dict__:
            original = cls.run
            cls.__wrapped__ = staticmethod(original)  # for the argument check at .delay()
            cls.bind = True  # run() takes self
            if cls.autoretry_for:
                def run(self_: Task, *args: Any, **kwargs: Any) -> Any:
                    call = autoretry_wrapper(self_, lambda *a, **kw: original(self_, *a, **kw))
                    return call(*args, **kwargs)

                cls.run = run
        self.tasks[cls.name] = task
        return task

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Queue a task by name (it need not be importable here)."""
        from supervisor.native.result import AsyncResult

        task = self.tasks.get(name) or self.placeholder_task(name)
        job = task.build_job(args, kwargs, **options)
        self.backend.enqueue([job])
        result = AsyncResult(job.task_id, app=self, task_name=name)
        result.ignored = job.ignore_result
        return result

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
        existing = list(filter(None, [get_current()]))
        for app in existing:
            app._register(fun, options)
        # the object handed back sends through whichever app is current at call time
        task = current_app()._register(fun, {**options, "_shared": True})
        return task

    if len(args) == 1 and callable(args[0]) and not options:
        return decorate(args[0])
    return decorate


def _pydantic_wrapper(fun: Callable, run: Callable, options: dict) -> Callable:
    """pydantic=True: arguments validated into the annotated types, a model result dumped to
    a dict (JSON), as Celery does."""
    import typing

    import pydantic

    try:  # string annotations (from __future__ import annotations) resolved
        hints = typing.get_type_hints(fun)
    except Exception:
        hints = dict(getattr(fun, "__annotations__", {}))
    hints.pop("return", None)
    adapters = {k: pydantic.TypeAdapter(v) for k, v in hints.items()}
    strict = options.get("pydantic_strict", False)
    context = options.get("pydantic_context")
    dump_kwargs = options.get("pydantic_dump_kwargs") or {}
    import inspect

    params = list(inspect.signature(fun).parameters)
    if options.get("bind"):
        params = params[1:]

    def validated(*args: Any, **kwargs: Any) -> Any:
        args = [adapters[p].validate_python(a, strict=strict, context=context)
                if p in adapters else a for p, a in zip(params, args, strict=False)
                ] + list(args[len(params):])
        kwargs = {k: adapters[k].validate_python(v, strict=strict, context=context)
                  if k in adapters else v for k, v in kwargs.items()}
        value = run(*args, **kwargs)
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump(**{"mode": "json", **dump_kwargs})
        return value

    return validated


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


def __getattr__(name: str) -> Any:
    if name == "_current":  # older callers read the current app here; it lives in current.py
        return get_current()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
