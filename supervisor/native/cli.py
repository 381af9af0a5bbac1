"""`python -m supervisor.native worker -A pkg.module:app [options]`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
from typing import Any

from supervisor.kit.dburl import password_of
from supervisor.native.exceptions import ConfigError
from supervisor.redact import install_for_logging, redact, secrets_from


def build_parser(prog: str = "python -m supervisor.native") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="The native PostgreSQL worker.")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a worker (and the beat schedule)")
    add_worker_arguments(worker, app_required=True)
    migrate = sub.add_parser("migrate", help="create or upgrade the queue schema and exit")
    migrate.add_argument("-A", "--app", required=True, help="pkg.module:app")
    return parser


def add_worker_arguments(parser: argparse.ArgumentParser, app_required: bool) -> None:
    parser.add_argument("-A", "--app", required=app_required, help="pkg.module:app")
    parser.add_argument("-c", "--concurrency", type=int, default=None,
                        help="executor threads (default: START_ALL_WORKER_CONCURRENCY, "
                             "worker_concurrency, else 4)")
    parser.add_argument("-P", "--pool", default=None,
                        help="threads or prefork (child processes); default: "
                             "START_ALL_WORKER_POOL, worker_pool, else threads")
    parser.add_argument("-Q", "--queues", default=None, help="comma-separated queue names")
    parser.add_argument("--poll-only", action="store_true", default=None,
                        help="never LISTEN (transaction-mode poolers)")
    parser.add_argument("--without-beat", action="store_true",
                        help="do not fire beat_schedule entries from this worker")
    parser.add_argument("--stop-timeout", type=float, default=None,
                        help="seconds to finish running tasks on SIGTERM")
    parser.add_argument("-l", "--loglevel", default="INFO")
    parser.add_argument("-n", "--hostname", default=None)


def load_app(spec: str) -> Any:
    """'pkg.module:app', or 'pkg' / 'pkg.module' holding `app` or `celery` (or any app), or
    its `celery` submodule holding one: the places Celery's -A looks."""
    from supervisor.native.app import Celery

    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"-A {spec}: cannot import {module_name} ({error})") from None
    if attr:
        app = getattr(module, attr, None)
        if isinstance(app, Celery):
            return app
        raise ConfigError(f"-A {spec}: {attr} in {module_name} is not a native Celery app")
    app = _find_app(module, Celery)
    if app is None and hasattr(module, "__path__"):  # a package: try pkg.celery, as Celery
        try:
            app = _find_app(importlib.import_module(f"{module_name}.celery"), Celery)
        except ModuleNotFoundError as error:
            if error.name != f"{module_name}.celery":
                raise
    if app is None:
        raise ConfigError(f"-A {spec}: no native Celery app found (looked for app, celery, "
                          f"any Celery instance, and {module_name}.celery)")
    return app


def _find_app(module: Any, kind: type) -> Any:
    for name in ("app", "celery"):
        value = getattr(module, name, None)
        if isinstance(value, kind):
            return value
        if value is not None and isinstance(getattr(value, "app", None), kind):
            return value.app  # `celery` being the proj.celery module itself
    found = [v for v in vars(module).values() if isinstance(v, kind)]
    return found[0] if len(found) == 1 else None


def concurrency_for(option: int | None, app: Any) -> int:
    if option:
        return option
    env = os.environ.get("START_ALL_WORKER_CONCURRENCY", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ConfigError(f"START_ALL_WORKER_CONCURRENCY={env!r} is not a number") from None
    return int(app.conf.worker_concurrency or 4)


def pool_for(option: str | None, app: Any) -> str:
    """The pool name, from the option, START_ALL_WORKER_POOL or worker_pool (Celery's)."""
    chosen = (option or os.environ.get("START_ALL_WORKER_POOL", "").strip()
              or app.conf.get("worker_pool") or "threads")
    name = {"processes": "prefork", "thread": "threads", "solo": "threads"}.get(chosen, chosen)
    if name not in ("threads", "prefork"):
        raise ConfigError(f"--pool {chosen!r}: the native worker runs 'threads' or 'prefork' "
                          "(gevent and eventlet are not supported)")
    return name


def run_worker(app: Any, args: argparse.Namespace) -> int:
    from supervisor.native.worker import Worker

    logging.basicConfig(
        level=getattr(logging, str(args.loglevel).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr,
    )
    install_for_logging([*secrets_from(dict(os.environ)), password_of(app.database_url)])
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    app.import_pending()
    app.finalize()  # on_after_configure receivers (add_periodic_task) run before beat starts
    worker = Worker(
        app, concurrency=concurrency_for(args.concurrency, app), queues=queues,
        poll_only=args.poll_only, beat=False if args.without_beat else None,
        stop_timeout=args.stop_timeout, hostname=args.hostname,
        pool=pool_for(getattr(args, "pool", None), app),
    )
    return worker.run()


def celery_argv(args: argparse.Namespace) -> list[str]:
    """The equivalent real Celery command (USE_DB_QUEUE=false)."""
    module = args.app.partition(":")[0]
    argv = [sys.executable, "-m", "celery", "-A", module, "worker", "-l", args.loglevel]
    if args.concurrency or os.environ.get("START_ALL_WORKER_CONCURRENCY"):
        argv += ["-c", str(args.concurrency or os.environ["START_ALL_WORKER_CONCURRENCY"])]
    if getattr(args, "pool", None):
        argv += ["-P", args.pool]
    if args.queues:
        argv += ["-Q", args.queues]
    if not args.without_beat:
        argv.append("-B")  # the native worker fires the schedule itself; keep that behaviour
        if not os.access(".", os.W_OK):  # beat keeps its state file in the working directory
            argv += ["--schedule", os.path.join(tempfile.gettempdir(), "celerybeat-schedule")]
    return argv


def _guard_secrets(app: Any) -> None:
    """No password in any line or traceback of ours; a malformed URL is one line, exit 2."""
    from supervisor.kit.dburl import password_of, validate

    try:
        url = app.database_url
    except ConfigError:
        return  # reported where it is used
    problem = validate(url, "the native queue's database URL")
    secrets = [*secrets_from(dict(os.environ)), password_of(url)]
    install_for_logging(secrets)
    if problem:
        raise ConfigError(problem)


def exec_celery(args: argparse.Namespace) -> None:
    """Become the equivalent `celery worker` (USE_DB_QUEUE=false)."""
    argv = celery_argv(args)
    print(f"USE_DB_QUEUE=false: running {' '.join(argv)}", file=sys.stderr, flush=True)
    os.execv(argv[0], argv)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from supervisor.native import use_db_queue

    try:
        if args.command == "worker" and not use_db_queue():
            exec_celery(args)
        if args.command == "worker" and (args.pool or os.environ.get(
                "START_ALL_WORKER_POOL", "threads")) in ("threads", "thread", "solo"):
            from supervisor.native.pool import install_interruptible_sleep

            install_interruptible_sleep()  # before the task modules import time.sleep
        app = load_app(args.app)
        _guard_secrets(app)
        if args.command == "migrate":
            from supervisor.native.backends import backend_for

            db = backend_for(app.database_url).WorkerDb(app.database_url, True)
            applied = db.connect()
            db.close()
            print(f"native: schema up to date ({', '.join(applied) or 'nothing to apply'})")
            return 0
        return run_worker(app, args)
    except ConfigError as error:
        print(redact(f"native: {error}", secrets_from(dict(os.environ))), file=sys.stderr)
        return 2
    except Exception as error:
        import psycopg

        if isinstance(error, psycopg.OperationalError):
            print(redact(f"native: cannot reach the database: {str(error).strip()}",
                         secrets_from(dict(os.environ))), file=sys.stderr)
            return 1
        raise
