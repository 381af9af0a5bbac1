"""celery worker: SIGTERM is a warm shutdown that waits for running tasks; the supervisor
escalates to SIGQUIT (cold shutdown) inside the budget. Real Celery, real Redis."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from tests.conftest import need
from tests.core.test_runtime import FIXTURES, supervisor_time


@pytest.fixture
def redis_url():
    import redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        ok = True
    except redis.exceptions.ConnectionError:
        ok = False
    need(ok, f"Redis at {url}")
    return url


def test_busy_celery_worker_is_escalated_to_cold_shutdown(
    run_supervisor, tmp_path, redis_url, monkeypatch
):
    queue = f"start-all-test-{uuid.uuid4().hex[:8]}"
    env = {
        "REDIS_URL": redis_url,
        "CELERY_TEST_QUEUE": queue,
        "PYTHONPATH": f"{FIXTURES}:{os.environ.get('PYTHONPATH', '')}",
        "START_ALL_STOP_TIMEOUT": "4",
        "START_ALL_LOG_FORMAT": "json",  # the supervisor's own timestamps (supervisor_time)
    }
    monkeypatch.setenv("CELERY_TEST_QUEUE", queue)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.syspath_prepend(FIXTURES)
    sup = run_supervisor(
        "worker: celery -A celeryapp worker --concurrency 1 --loglevel INFO\n", env=env
    )
    sup.wait_line(r"celery@\S+ ready", timeout=30)
    from celeryapp import sleepy

    sleepy.apply_async((60,), queue=queue)
    sup.wait_line(r"Task celeryapp.sleepy\[.*\] received", timeout=20)
    sup.signal(signal.SIGTERM)
    code = sup.wait()
    out = sup.output
    assert code == 0
    assert "worker.1: sending SIGTERM to pid" in out
    assert "worker.1 still running: sending SIGQUIT" in out  # warm -> cold at 60 % of 4 s
    # timed on the supervisor's clock: SIGQUIT at 60 % of the budget, all over by the budget
    # (celery's cold shutdown usually ends it by itself; when it does not, SIGKILL at 4 s does)
    stopping = supervisor_time(out, "stopping (received SIGTERM)")
    assert 0.6 * 4 - 0.05 <= supervisor_time(out, "worker.1 still running: sending SIGQUIT") \
        - stopping <= 0.6 * 4 + 0.5
    assert supervisor_time(out, "exit 0") - stopping <= 4 + 0.5 + 0.5
