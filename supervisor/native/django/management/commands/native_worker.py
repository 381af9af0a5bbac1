"""`python manage.py native_worker [-A proj.celery:app] [--concurrency N] [--queues a,b]`."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from supervisor.native.cli import add_worker_arguments, load_app, run_worker
from supervisor.native.exceptions import ConfigError


def _find_app(spec: str | None) -> Any:
    """-A, else the START_ALL_NATIVE_APP setting, else the app the project already created
    (Django projects import it from proj/__init__.py, as Celery's docs recommend)."""
    spec = spec or getattr(settings, "START_ALL_NATIVE_APP", None)
    if spec:
        return load_app(spec)
    from supervisor.native import app as app_module

    if app_module._current is None:
        raise ConfigError(
            "no native app found: pass -A proj.celery:app or set START_ALL_NATIVE_APP"
        )
    return app_module._current


class Command(BaseCommand):
    help = "Run the start-all native worker for this project."

    def add_arguments(self, parser: Any) -> None:
        add_worker_arguments(parser, app_required=False)

    def handle(self, *args: Any, **options: Any) -> None:
        from argparse import Namespace

        try:
            app = _find_app(options.get("app"))
            code = run_worker(app, Namespace(**options))
        except ConfigError as error:
            raise CommandError(str(error), returncode=2) from None
        sys.exit(code)
