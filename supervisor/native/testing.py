"""An in-process worker for tests, like celery.contrib.testing.worker.start_worker:

    from supervisor.native.testing import start_worker

    with start_worker(app):
        assert add.delay(2, 2).get(timeout=10) == 4

The worker runs in a background thread of this process (thread pool by default), so the
test's signal receivers (task_received, task_prerun, ...) hear what it does, as with Celery's
fixture. It needs the same database as the app (no eager mode) and stops gracefully on exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def start_worker(app: Any, concurrency: int = 1, pool: str = "threads",
                 queues: list[str] | None = None, shutdown_timeout: float = 10.0,
                 perform_ping_check: bool = True, ready_timeout: float = 20.0,
                 **_celery_options: Any) -> Iterator[Any]:
    """Start a worker thread for `app`, yield the Worker, stop it on exit."""
    from supervisor.native import dispatch
    from supervisor.native.worker import Worker

    worker = Worker(app, concurrency=concurrency, queues=queues, beat=False,
                    stop_timeout=shutdown_timeout, pool=pool)
    ready = threading.Event()
    failure: list[BaseException] = []

    def on_ready(sender: Any = None, **_: Any) -> None:
        if sender is worker:
            ready.set()

    def run() -> None:
        try:
            worker.run()
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            failure.append(error)
            ready.set()

    dispatch.worker_ready.connect(on_ready, weak=False)
    thread = threading.Thread(target=run, name="native-test-worker", daemon=True)
    thread.start()
    try:
        if perform_ping_check and not ready.wait(ready_timeout):
            raise TimeoutError(f"the test worker was not ready within {ready_timeout}s")
        if failure:
            raise failure[0]
        yield worker
    finally:
        dispatch.worker_ready.disconnect(on_ready)
        worker.stop()
        deadline = time.monotonic() + shutdown_timeout + 5
        thread.join(max(0.0, deadline - time.monotonic()))
