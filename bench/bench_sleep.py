"""A free instance asleep for 10 minutes: `podman pause` longer than every lease and timeout.

    .venv/bin/python bench/bench_sleep.py [--pause 600]

The scenario of tests/container/test_pause.py (tests/container/sleep.py) with a long sleep:
two demo containers (native worker; django-q2's qcluster), a slow task running in each, frozen
for --pause seconds, thawed. Prints what happened: seconds until /healthz said ok again, the
freeze each side saw, the frozen task's attempts, beat slots fired for the whole sleep, and how
soon a new task ran. django-q2's `retry` is 180 s in the demo: a longer sleep is where it may
deliver the frozen task again. Needs root, podman and PostgreSQL at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.container import sleep  # noqa: E402
from tests.container.conftest import LOCK_PATH, Container, _prepare_runtime, podman  # noqa: E402
from tests.kit.conftest import PG_URL  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pause", type=float, default=600.0)
    parser.add_argument("--no-lock", action="store_true",
                        help="do not wait for the container tests' machine-wide lock (a long "
                        "test session holds it); builds beside it and removes only its own tag")
    args = parser.parse_args()
    if not _prepare_runtime():
        print("bench_sleep: podman is not available", file=sys.stderr)
        return 1
    import psycopg

    names = [f"bench_sleep_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    urls = [PG_URL.rsplit("/", 1)[0] + f"/{name}" for name in names]
    started: list[Container] = []

    def start(image, env, host_network=False):
        started.append(Container(image, env, host_network))
        return started[-1]

    with open(LOCK_PATH, "w") as lock:
        if not args.no_lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one container session at a time on this machine
        image = f"localhost/start-all-bench-sleep:{uuid.uuid4().hex[:8]}"
        dangling = set(podman("images", "-q", "--filter", "dangling=true").stdout.split())
        try:
            podman("build", "--format", "docker", "-t", image, str(ROOT), timeout=900)
            print(f"sleeping {args.pause:g} s ...", file=sys.stderr)
            f = sleep.run(image, start, urls[0], urls[1], args.pause)
        finally:
            for container in started:
                container.remove()
            podman("rmi", "-f", image, check=False)
            new = set(podman("images", "-q", "--filter", "dangling=true").stdout.split())
            if new - dangling and not args.no_lock:  # unlocked, they may be another build's
                podman("rmi", *sorted(new - dangling), check=False)
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                for name in names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    load = os.getloadavg()
    print(f"\n`podman pause` for {args.pause:g} s with a slow task running "
          f"(load average {load[0]:.1f}):\n")
    print("| | native worker | django-q2 qcluster |")
    print("|---|---:|---:|")
    h, a, n = f["healthy_after"], f["attempts"], f["new_task_after_wake"]
    p = f["port_healthy_after"]
    print(f"| start-all's /healthz ok after unpause (s) | {h['native']:.2f} | "
          f"{h['qcluster']:.2f} |")
    print(f"| /healthz on $PORT ok after unpause (s) | {p['native']:.2f} | {p['qcluster']:.2f} |")
    print(f"| frozen task: attempts | {a['native']} | {a['qcluster']} |")
    print(f"| new task done after wake (s) | {n['native']:.2f} | {n['qcluster']:.2f} |")
    print(f"\nnative worker: saw {f['native_frozen_seen']} s frozen, reconnected, renewed "
          f"{f['native_leases_renewed']} lease(s); reaped anything: {f['native_reaped']}; "
          f"supervisor saw {f['supervisor_wake']['frozen']:g} s")
    print(f"native beat (every {sleep.TICK} s): {f['ticks_during_sleep']} slot(s) fired for "
          f"the whole sleep; most runs of one slot: {f['tick_runs_max']}")
    for kind, lines in f["notable_log_lines"].items():
        print(f"{kind} log lines with error/timeout/sigkill/retry/lease: "
              + (" // ".join(lines) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
