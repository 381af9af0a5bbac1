"""The demo image (root Dockerfile = examples/koyeb) run as the platform runs it: PID 1,
512 MB, PORT=8000, health on $PORT, SIGTERM with a 10 s grace, a worker killed inside."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.container.conftest import podman

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]  # incl. waiting for the lock


def test_health_on_port_and_a_booking_confirmed_by_the_worker(demo_image, start_container):
    app = start_container(demo_image)
    report = app.wait_ready()
    assert report["supervisor"]["pid"] == 1
    assert {p["name"] for p in report["processes"]} == {"web.1", "worker.1"}
    assert all(p["state"] == "running" for p in report["processes"])

    booking = app.post_json("/bookings", {"name": "Ann", "email": "ann@example.com"})
    confirmed = wait_for(
        lambda: app.get_json(f"/bookings/{booking['id']}")["confirmed_at"],
        60,
        "the confirmation task to run in the worker",
    )
    assert confirmed
    assert f"Subject: Booking #{booking['id']} confirmed" in app.logs()

    # Docker's HEALTHCHECK (start-all status --quiet) passes inside the container
    assert podman("healthcheck", "run", app.name, check=False).returncode == 0


def test_stop_finishes_the_task_in_flight_well_inside_the_grace(demo_image, start_container):
    app = start_container(demo_image)
    app.wait_ready()
    job = app.post_json("/summaries", {"text": "one two three", "seconds": 3})
    wait_for(
        lambda: app.get_json(f"/summaries/{job['id']}")["status"] == "running",
        60,
        "the slow task to start",
    )

    elapsed = app.stop(grace=10)

    assert app.state("ExitCode") == "0", app.logs()[-3000:]
    assert elapsed < 9, f"stop took {elapsed:.1f} s of the 10 s grace"
    assert "exit 0" in app.logs()
    # Start the same container again (its SQLite file survives): the job is done, not lost.
    podman("start", app.name)
    app.wait_ready()
    done = wait_for(
        lambda: (s := app.get_json(f"/summaries/{job['id']}"))["status"] == "done" and s,
        60,
        "the interrupted job to be finished (or redelivered and finished)",
    )
    assert done["result"] == "3 words: one two three"


def test_killed_worker_is_restarted_and_health_returns(demo_image, start_container):
    app = start_container(demo_image)
    app.wait_ready()
    worker = app.process("worker.1")

    podman("exec", app.name, "sh", "-c", f"kill -9 {worker['pid']}")

    def restarted():
        now = app.process("worker.1")
        return now if now["restarts"] >= 1 and now["pid"] != worker["pid"] else None

    again = wait_for(restarted, 60, "the worker to be restarted")
    assert again["state"] in ("starting", "running")
    report = app.wait_ready()
    assert report["code"] == 200
    assert "worker.1 restarting" in app.logs()
    # the new worker really works
    booking = app.post_json("/bookings", {"name": "Bo", "email": "bo@example.com"})
    wait_for(
        lambda: app.get_json(f"/bookings/{booking['id']}")["confirmed_at"],
        60,
        "a task done by the restarted worker",
    )
