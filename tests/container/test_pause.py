"""Sleep and pause: a free instance that sleeps is a paused VM, its processes frozen, never
signalled. `podman pause` freezes a container the same way (cgroup freezer). Two demo
containers, one on the native worker and one on django-q2's qcluster, each with a slow task
running, are frozen for 60 s (longer than the native lease, 30 s) and thawed
(tests/container/sleep.py):

- start-all's health server answers 200 and ok within 2 s of `podman unpause` (and /healthz on
  $PORT soon after: gunicorn may replace a web worker on wake);
- the native worker notices the clock jump and opens fresh connections at once, then renews
  its lease before anything could reap it; the supervisor records the freeze;
- the task frozen mid-run finishes, once (attempts == 1), on both queues;
- the native beat entry (every 10 s) fires once for the whole sleep, not once per missed slot;
- a task queued after the wake runs at once.
The 10-minute variant is a chaos command: `bash bench/run sleep` (bench/bench_sleep.py).
"""

from __future__ import annotations

import uuid

import pytest

from tests.container import sleep
from tests.kit.conftest import PG_URL

pytestmark = [pytest.mark.container, pytest.mark.timeout(1500)]  # incl. waiting for the lock

PAUSE = 60.0


@pytest.fixture
def second_pg_url(pg_url):
    import psycopg

    name = f"kit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_frozen_containers_wake_healthy_without_losing_or_repeating_work(
    demo_image, start_container, pg_url, second_pg_url
):
    f = sleep.run(demo_image, start_container, pg_url, second_pg_url, PAUSE)
    print(f"sleep figures: {f}")
    # start-all's own health server answers ok within 2 s; /healthz on $PORT goes through a
    # gunicorn worker, which gunicorn's own 30 s timeout may replace on wake (docs/scaling.md)
    assert all(seconds < 2.0 for seconds in f["healthy_after"].values()), f
    assert all(seconds < 10.0 for seconds in f["port_healthy_after"].values()), f
    assert f["native_frozen_seen"] >= PAUSE - 10 and f["native_leases_renewed"] >= 1, f
    assert f["supervisor_wake"]["frozen"] >= PAUSE - 10, f
    assert f["attempts"] == {"native": 1, "qcluster": 1}, f  # neither lost nor run twice
    assert all(f["finished_after"].values()), f
    assert not f["native_reaped"], f  # leases renewed before the reaper looked
    assert f["ticks_during_sleep"] == 1 and f["tick_runs_max"] == 1, f
    assert all(seconds < 15 for seconds in f["new_task_after_wake"].values()), f
