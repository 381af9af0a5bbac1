"""More workers, proven: examples/docker-compose/docker-compose.workers.yml run for real (one web
container, three worker containers, one PostgreSQL; native worker; roles from one image).

10,000 tasks queued through the web app: every one runs, and runs once; then a worker container
is SIGKILLed in the middle of 3,000 more: none is lost, and only jobs that container held run
again. A beat entry every 2 s fires once per slot across the three. `docker-compose stop` ends
every container inside its grace period.
"""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.container.compose import Compose
from tests.container.conftest import podman

pytestmark = [pytest.mark.container, pytest.mark.timeout(1500)]  # incl. waiting for the lock

WORKERS = ("worker1", "worker2", "worker3")
TICK = 2


def processes(report: dict) -> list[str]:
    return [p["name"] for p in report.get("processes", [])]


def test_three_worker_containers_share_one_queue(demo_image, tmp_path):
    env = {"START_ALL_IMAGE": demo_image, "DEMO_TICK_SECONDS": str(TICK),
           "NATIVE_LEASE_SECONDS": "10"}
    stack = Compose(["docker-compose.workers.yml"], env, tmp_path)
    try:
        stack.up()
        stack.wait_web()
        # one image, two roles: the web container ran release and runs gunicorn only; each
        # worker container runs the worker only and skipped release
        assert processes(stack.health("app")) == ["web.1"]
        for worker in WORKERS:
            report = wait_for(lambda w=worker: (r := stack.health(w)) and r.get("ready") and r,
                              90, f"{worker} ready\n{stack.logs(worker)[-3000:]}")
            assert processes(report) == ["worker.1"]
            assert report["supervisor"]["only"] == ["worker"]
            assert "release skipped here" in stack.logs(worker)
        assert "running release before the other processes" in stack.logs("app")

        assert stack.post_json("/tallies", {"count": 10_000})["queued"] == 10_000
        first = wait_for(lambda: (t := stack.get_json("/tallies"))["tasks"] >= 10_000 and t,
                         300, "10,000 tasks to run")
        assert first["runs"] == 10_000 and first["tasks"] == 10_000  # 0 lost, none twice
        assert first["repeated"] == 0
        assert sorted(first["by_host"]) == sorted(
            podman("inspect", "-f", "{{.Config.Hostname}}", stack.container(w)).stdout.strip()
            for w in WORKERS
        ), first["by_host"]
        print(f"10,000 tasks on 3 worker containers: {first['seconds']:.1f} s "
              f"({10_000 / first['seconds']:.0f} tasks/s), per container {first['by_host']}")

        # a worker container killed mid-run: its held jobs come back after the 10 s lease
        stack.post_json("/tallies", {"count": 3_000, "seconds": 0.01})
        victim = stack.container("worker3")
        victim_host = podman("inspect", "-f", "{{.Config.Hostname}}", victim).stdout.strip()
        wait_for(lambda: stack.get_json("/tallies")["by_host"].get(victim_host, 0)
                 > first["by_host"][victim_host] + 50, 120, "worker3 to take some of them")
        podman("kill", "-s", "KILL", victim)
        after = wait_for(lambda: (t := stack.get_json("/tallies"))["tasks"] >= 13_000 and t,
                         300, "all 13,000 tasks to run after the kill")
        assert after["tasks"] == 13_000  # none lost
        # repeated runs only of jobs the killed container held when it died: each ran once
        # there (unfinished, or finished but not yet recorded) and once more elsewhere
        assert len(after["repeated_on"]) == after["repeated"], after
        for task_id, hosts in after["repeated_on"].items():
            assert len(hosts) == 2 and victim_host in hosts, (task_id, hosts)
        print(f"after SIGKILL of worker3: {after['repeated']} task(s) ran twice "
              f"(leases of the killed container)")

        ticks = stack.get_json("/tallies")["ticks"]
        fired = [t for t in ticks if t["runs"]]
        assert len(fired) >= 5, ticks
        # once per slot: every claimed slot ran exactly once, and slots are consecutive
        assert all(t["runs"] == 1 for t in fired), ticks
        slots = [t["slot"] for t in ticks]
        assert len(set(slots)) == len(slots)
        steps = {round(b - a) for a, b in zip(slots, slots[1:], strict=False)}
        assert steps == {TICK}, slots
        print(f"beat: {len(fired)} slots fired, by hosts {sorted({t['host'] for t in fired})}")

        took = stack.stop(timeout=15)
        assert all(seconds < 15 for seconds in took.values()), took
        codes = stack.exit_codes()
        assert all(code in ("0", "137") for code in codes.values()), codes
        assert [n for n, c in codes.items() if c != "0"] in ([], [victim]), codes
    finally:
        stack.down()
