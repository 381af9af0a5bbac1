"""The compose variants run for real: the booking app's task done through the web app, one beat
only, and `docker-compose stop` inside the grace period.

- docker-compose.celery-redis.yml / -rabbitmq.yml: the native app with USE_DB_QUEUE=false, i.e.
  Celery itself on Redis or RabbitMQ (a web container and a worker container: `--only`);
- docker-compose.celery.yml: TASK_QUEUE=celery, worker and beat in one container.
RabbitMQ is a local stand-in image built from Debian's rabbitmq-server (registries are
unreachable here), so the compose file is the one users run, with a `rabbitmq` service.
"""

from __future__ import annotations

import socket
import uuid

import pytest
import yaml

from tests.conftest import wait_for
from tests.container.compose import COMPOSE_DIR, RABBITMQ_TAGS, Compose, rabbitmq_image
from tests.container.conftest import podman

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


def test_rabbitmq_healthcheck_waits_for_the_amqp_listener(container_runtime):
    """The web container starts once `rabbitmq` is healthy (depends_on): the compose file's own
    healthcheck, run from the moment the broker boots, must not pass before an AMQP client gets
    the broker's Connection.Start (`rabbitmq-diagnostics ping` did, seconds early)."""
    spec = yaml.safe_load((COMPOSE_DIR / "docker-compose.celery-rabbitmq.yml").read_text())
    test = spec["services"]["rabbitmq"]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    rabbitmq_image()
    name = f"sa-rmq-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--name", name, "-p", "127.0.0.1::5672", RABBITMQ_TAGS[1])
    try:
        port = int(podman("port", name, "5672").stdout.strip().rsplit(":", 1)[1])

        def healthy() -> bool:
            return podman("exec", name, *test[1:], check=False, timeout=90).returncode == 0

        wait_for(healthy, 180, "the rabbitmq healthcheck to pass")
        # at once: AMQP 0-9-1's protocol header gets a method frame (type 1) back
        with socket.create_connection(("127.0.0.1", port), timeout=10) as amqp:
            amqp.sendall(b"AMQP\x00\x00\x09\x01")
            assert amqp.recv(1) == b"\x01", "the broker did not answer AMQP when healthy"
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
