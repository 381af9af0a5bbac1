"""The compose variants run for real: the booking app's task done through the web app, one beat
only, and `docker-compose stop` inside the grace period.

- docker-compose.celery-redis.yml / -rabbitmq.yml: the native app with USE_DB_QUEUE=false, i.e.
  Celery itself on Redis or RabbitMQ (a web container and a worker container: `--only`);
- docker-compose.celery.yml: TASK_QUEUE=celery, worker and beat in one container.
RabbitMQ is a local stand-in image built from Debian's rabbitmq-server (registries are
unreachable here), so the compose file is the one users run, with a `rabbitmq` service.
"""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.container.compose import Compose, rabbitmq_image

pytestmark = [pytest.mark.container, pytest.mark.timeout(1500)]  # incl. waiting for the lock

TICK = 2
VARIANTS = {
    "celery-redis": (["docker-compose.celery-redis.yml"], ["app", "worker"]),
    "celery-rabbitmq": (["docker-compose.celery-rabbitmq.yml"], ["app", "worker"]),
    "celery": (["docker-compose.celery.yml"], ["app"]),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compose_variant_runs_a_task_with_one_beat_and_stops_in_grace(
    demo_image, tmp_path, variant
):
    files, services = VARIANTS[variant]
    if "rabbitmq" in variant:
        rabbitmq_image()
    stack = Compose(files, {"START_ALL_IMAGE": demo_image, "DEMO_TICK_SECONDS": str(TICK)},
                    tmp_path)
    try:
        stack.up()
        stack.wait_web()
        booking = stack.post_json("/bookings", {"name": "Ada", "email": "ada@example.com"})
        wait_for(lambda: stack.get_json(f"/bookings/{booking['id']}")["confirmed_at"], 120,
                 f"the confirmation task to be done\n{stack.logs()[-4000:]}")
        assert f"Booking #{booking['id']} confirmed" in stack.logs()  # the e-mail, in the log

        # one beat only: one scheduler started, and ticks come once per interval, not twice
        ticks = wait_for(lambda: len(t := stack.get_json("/tallies")["ticks"]) >= 6 and t,
                         120, "six beat ticks")
        logs = stack.logs()
        assert logs.count("beat: Starting...") == 1, logs[-4000:]
        gaps = [b["at"] - a["at"] for a, b in zip(ticks, ticks[1:], strict=False)]
        # a second beat would put ticks close together (celery beat's first tick, at start,
        # may come early: only the steady state counts)
        assert min(gaps[1:]) > TICK / 2, gaps
        assert all(t["runs"] == 1 for t in ticks), ticks

        took = stack.stop(timeout=15)
        app_containers = {stack.container(s) for s in services}
        assert app_containers <= set(took), took
        assert all(took[name] < 15 for name in app_containers), took
        codes = stack.exit_codes()
        assert all(codes[name] == "0" for name in app_containers), codes
    finally:
        stack.down()
