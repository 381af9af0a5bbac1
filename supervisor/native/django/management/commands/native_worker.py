"""`python manage.py native_worker [-A proj.celery:app] [--concurrency N] [--queues a,b]`."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from supervisor.native.cli import add_worker_arguments, load_app, run_worker
from supervisor.native.exceptions import ConfigError


def _task_backends() -> list[Any]:
    """The TASKS backends that run on the native queue (django.tasks or its backport)."""
    if not getattr(settings, "TASKS", None):
        return []
    try:
        from django.tasks import task_backends
    except ImportError:
        try:
            from django_tasks import task_backends
        except ImportError:
            return []
    found = [task_backends[alias] for alias in settings.TASKS]
    return [backend for backend in found if getattr(backend, "native_app", None) is not None]


def _find_app(spec: str | None) -> Any:
    """-A, else the START_ALL_NATIVE_APP setting, else the app of a TASKS backend on the
    native queue, else the app the project already created (Django projects import it from
    proj/__init__.py, as Celery's docs recommend)."""
    spec = spec or getattr(settings, "START_ALL_NATIVE_APP", None)
    if spec:
        return load_app(spec)
    backends = _task_backends()
    if backends:
        return backends[0].native_app
    from supervisor.native import app as app_module

    if app_module._current is None:
        raise ConfigError(
            "no native app found: pass -A proj.celery:app, set START_ALL_NATIVE_APP, or "
            "set TASKS to supervisor.native.django_tasks.NativeBackend"
        )
    return app_module._current


def _default_queues(app: Any) -> str | None:
    """Without -Q: the app's default queue plus the QUEUES of the TASKS backends on it."""
    queues = {q for b in _task_backends() if b.native_app is app for q in b.worker_queues}
    if not queues:
        return None
    return ",".join(sorted(queues | {app.conf.task_default_queue}))


class Command(BaseCommand):
    help = "Run the start-all native worker for this project."

    def add_arguments(self, parser: Any) -> None:
        add_worker_arguments(parser, app_required=False)

    def handle(self, *args: Any, **options: Any) -> None:
        from argparse import Namespace

        from supervisor.native import use_db_queue

        if not use_db_queue():  # the same line runs Celery itself, as `-m supervisor.native`
            from supervisor.native.cli import exec_celery

            spec = options.get("app") or getattr(settings, "START_ALL_NATIVE_APP", None)
            if not spec:
                raise CommandError("USE_DB_QUEUE=false needs -A proj.module:app", returncode=2)
            exec_celery(Namespace(**{**options, "app": spec}))
        try:
            app = _find_app(options.get("app"))
            options["queues"] = options.get("queues") or _default_queues(app)
            code = run_worker(app, Namespace(**options))
        except ConfigError as error:
            raise CommandError(str(error), returncode=2) from None
        sys.exit(code)
