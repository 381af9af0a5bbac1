"""The example's other queues under start-all: Celery + Redis (docker-compose.celery.yml's
app: web, worker and one beat fed by the same schedules-as-code list) and the native
PostgreSQL worker (Procfile.native)."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
import uuid

from tests.conftest import Supervisor, free_port, http_get, need, port_open, wait_for
from tests.kit.conftest import kit_env

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_SETTINGS = """\
from demo.settings import *  # noqa: F403
from supervisor.kit.schedules import load_entries, to_celery_beat_schedule

CELERY_TASK_DEFAULT_QUEUE = "kit-{queue}"  # private queue on the shared Redis
CELERY_BEAT_SCHEDULE = to_celery_beat_schedule(load_entries([
    {{"name": "tick", "func": "bookings.tasks.cleanup_old_records", "every": 1,
     "kwargs": {{"days": 1}}}},
]))
"""


def book(port: int, name: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/bookings",
        data=json.dumps({"name": name, "email": f"{name.lower()}@example.com"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def confirmed(port: int, booking: dict) -> bool:
    return bool(json.loads(http_get(port, f"/bookings/{booking['id']}")[1])["confirmed_at"])


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except Exception:
        return False


def test_celery_variant_confirms_bookings_and_beat_fires(example_project):
    need(redis_available(), f"Redis at {REDIS_URL}")
    (example_project / "demo" / "test_settings.py").write_text(
        TEST_SETTINGS.format(queue=uuid.uuid4().hex[:8])
    )
    port = free_port()
    env = kit_env(
        example_project,
        TASK_QUEUE="celery",
        CELERY_BROKER_URL=REDIS_URL,
        DJANGO_SETTINGS_MODULE="demo.test_settings",
        PORT=str(port),
        START_ALL_HEALTH_PORT=str(free_port()),
    )
    sup = Supervisor(example_project, ["--procfile", "Procfile.celery"], env)
    try:
        wait_for(lambda: port_open(port), 60, f"gunicorn:\n{sup.output[-3000:]}")
        booking = book(port, "Eve")
        wait_for(
            lambda: confirmed(port, booking),
            60,
            f"the celery worker to confirm the booking:\n{sup.output[-3000:]}",
        )
        sup.wait_line(r"^worker\.1 .*cleanup: removed 0 records older than 1 days", 60)
        # start-all sized the worker from the memory limit (Celery's default is cpu_count())
        sized = sup.wait_line(r"worker\.1 started \(pid \d+\): celery .* --concurrency (\d+)")
        sup.wait_line(rf"concurrency: {sized.group(1)} \(prefork\)")
        sup.signal(signal.SIGTERM)
        assert sup.wait(30) == 0, sup.output[-3000:]
        # How long Celery's own warm/cold shutdown takes is Celery's business (once, on a loaded
        # machine, it ignored TERM and QUIT for the whole budget). What start-all guarantees is
        # the order: SIGTERM, then SIGQUIT (cold shutdown), and SIGKILL only after both.
        out = sup.output
        term = out.find("worker.1: sending SIGTERM")
        assert term >= 0, out[-6000:]
        if "worker.1: did not stop within the budget" in out:
            quit_sent = out.find("worker.1 still running: sending SIGQUIT")
            kill_sent = out.find("worker.1: did not stop within the budget")
            assert term < quit_sent < kill_sent, out[-6000:]
    finally:
        sup.close()


def test_native_variant_confirms_bookings_on_postgresql(example_project, pg_url):
    port = free_port()
    env = kit_env(
        example_project,
        TASK_QUEUE="native",
        DATABASE_URL=pg_url,
        PORT=str(port),
        START_ALL_HEALTH_PORT=str(free_port()),
    )
    sup = Supervisor(example_project, ["--procfile", "Procfile.native"], env)
    try:
        wait_for(lambda: port_open(port), 60, f"gunicorn:\n{sup.output[-3000:]}")
        sup.wait_line(r"^worker\.1 .*native: worker .* ready", 60)
        booking = book(port, "Flo")
        wait_for(
            lambda: confirmed(port, booking),
            60,
            f"the native worker to confirm the booking:\n{sup.output[-3000:]}",
        )
        stats = json.loads(http_get(port, "/stats")[1])
        assert stats == {"queue": "native", "bookings": 1, "confirmed": 1, "summaries_done": 0}
        sup.signal(signal.SIGTERM)
        assert sup.wait(30) == 0, sup.output[-3000:]
        assert "SIGKILL" not in sup.output
    finally:
        sup.close()
