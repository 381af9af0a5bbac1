"""The sleeping-instance scenario, shared by tests/container/test_pause.py (60 s) and
bench/bench_sleep.py (10 minutes): freeze two demo containers with `podman pause`, one on the
native worker and one on django-q2's qcluster, each with a slow task running, then thaw them and
measure what happened. Returns figures; the caller asserts or prints them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from tests.conftest import http_get, wait_for
from tests.container.conftest import Container, podman

TICK = 10  # the native demo's beat entry fires every TICK seconds (DEMO_TICK_SECONDS)


def _healthy_after_unpause(app: Container) -> tuple[float, float]:
    """Seconds from `podman unpause` until start-all's own health server (START_ALL_HEALTH_PORT)
    and until /healthz on $PORT (answered by a gunicorn worker) say 200 and ok."""
    podman("unpause", app.name)
    thawed = time.monotonic()
    took: dict[str, float] = {}

    def ok(port: int) -> bool:
        try:
            code, body = http_get(port, "/healthz", timeout=5)
        except OSError:
            return False
        return code == 200 and json.loads(body).get("status") == "ok"

    def both():
        for name, port in (("supervisor", app.health_port), ("port", app.port)):
            if name not in took and ok(port):
                took[name] = time.monotonic() - thawed
        return len(took) == 2

    wait_for(both, 60, f"{app.name} healthy after unpause\n{app.logs()[-3000:]}")
    return took["supervisor"], took["port"]


def run(image: str, start: Callable[..., Container], native_db: str, qcluster_db: str,
        pause: float) -> dict:
    native = start(image, {
        "DATABASE_URL": native_db, "TASK_QUEUE": "native", "START_ALL_PROCFILE": "Procfile.native",
        "DEMO_TICK_SECONDS": str(TICK),
    }, host_network=True)
    qcluster = start(image, {"DATABASE_URL": qcluster_db}, host_network=True)
    apps = {"native": native, "qcluster": qcluster}
    for app in apps.values():
        app.wait_ready()
    jobs = {kind: app.post_json("/summaries", {"text": f"{kind} frozen mid run", "seconds": 8})
            for kind, app in apps.items()}
    for kind, app in apps.items():
        wait_for(lambda a=app, k=kind: a.get_json(f"/summaries/{jobs[k]['id']}")["status"]
                 == "running", 60, f"the {kind} task to start")

    figures: dict = {"pause": pause, "paused_at": time.time()}
    for app in apps.values():
        podman("pause", app.name)
    time.sleep(pause)  # the length of the sleep itself: nothing to wait for, by design
    figures["woke_at"] = time.time()
    healthy = {kind: _healthy_after_unpause(app) for kind, app in apps.items()}
    figures["healthy_after"] = {kind: h[0] for kind, h in healthy.items()}  # start-all's server
    figures["port_healthy_after"] = {kind: h[1] for kind, h in healthy.items()}  # via gunicorn

    line = wait_for(lambda: re.search(r"woke after about (\d+) s frozen \(clock jump\): "
                                      r"reconnecting and renewing (\d+) lease", native.logs()),
                    15, "the native worker's wake-up line")
    figures["native_frozen_seen"] = int(line.group(1))
    figures["native_leases_renewed"] = int(line.group(2))
    figures["supervisor_wake"] = native.health()["supervisor"]["last_wake"]

    figures["attempts"], figures["finished_after"] = {}, {}
    for kind, app in apps.items():
        done = wait_for(lambda a=app, k=kind: (s := a.get_json(f"/summaries/{jobs[k]['id']}"))
                        ["status"] == "done" and s, 120, f"the frozen {kind} task to finish")
        figures["attempts"][kind] = done["attempts"]
        figures["finished_after"][kind] = done["result"] == f"4 words: {kind} frozen mid run"
    figures["native_reaped"] = "lease of" in native.logs()

    ticks = native.get_json("/tallies")["ticks"]
    figures["ticks_during_sleep"] = len(
        [t for t in ticks if figures["paused_at"] + TICK < t["slot"] <= figures["woke_at"]])
    figures["tick_runs_max"] = max((t["runs"] for t in ticks), default=0)

    figures["new_task_after_wake"] = {}
    for kind, app in apps.items():
        posted = time.monotonic()
        booking = app.post_json("/bookings", {"name": "Ann", "email": "ann@example.com"})
        wait_for(lambda a=app, b=booking: a.get_json(f"/bookings/{b['id']}")["confirmed_at"],
                 60, f"a task queued after the wake ({kind})")
        figures["new_task_after_wake"][kind] = time.monotonic() - posted
    figures["notable_log_lines"] = {  # what else the freeze set off (e.g. gunicorn's timeout)
        kind: [line for line in app.logs().splitlines()
               if re.search(r"error|timeout|sigkill|retry|lease", line, re.I)][-8:]
        for kind, app in apps.items()
    }
    return figures
