"""Two containers of the demo image start at once on one PostgreSQL database, as in a rolling
deploy: migrations run once, under start-all migrate's lock, and both serve."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]  # incl. waiting for the lock


def test_two_containers_at_once_migrate_once_and_both_serve(demo_image, start_container, pg_url):
    env = {"DATABASE_URL": pg_url}
    old, new = (start_container(demo_image, env, host_network=True) for _ in range(2))
    for app in (old, new):
        app.wait_ready()
    logs = [old.logs(), new.logs()]
    assert sum("Applying bookings.0001_initial... OK" in log for log in logs) == 1
    assert sum("No migrations to apply" in log for log in logs) == 1
    assert all("start-all migrate: lock taken" in log for log in logs)
    # one schedule row although both synced
    import psycopg

    with psycopg.connect(pg_url) as conn:
        names = conn.execute("SELECT name FROM django_q_schedule").fetchall()
    assert names == [("start-all:daily-cleanup",)]
    # a booking made through one container is confirmed by a worker (either one)
    booking = new.post_json("/bookings", {"name": "Gus", "email": "gus@example.com"})
    wait_for(
        lambda: old.get_json(f"/bookings/{booking['id']}")["confirmed_at"],
        60,
        "the booking to be confirmed",
    )
