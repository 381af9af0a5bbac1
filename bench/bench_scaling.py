"""Throughput with 1, 2 and 3 worker containers: examples/docker-compose/docker-compose.workers.yml.

    .venv/bin/python bench/bench_scaling.py [--tasks 10000] [--workers 1,2,3]

For each count N: a fresh compose project (PostgreSQL, the web container, N worker containers,
native worker, 512 MB each), --tasks tally tasks queued through the web app (POST /tallies,
one INSERT per 1,000), drained; the rate is tasks / (last run - first run), from the runs' own
timestamps in the database, so polling does not count. Every task must run exactly once.
Needs root, podman (../shared/tools/container-runtime.sh) and docker-compose (v1). All
containers share this machine's cores: the figure says how far more containers help HERE.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import wait_for  # noqa: E402
from tests.container.compose import Compose  # noqa: E402
from tests.container.conftest import LOCK_PATH, _prepare_runtime, podman  # noqa: E402


def measure(image: str, workers: int, tasks: int, workdir: Path) -> dict:
    stack = Compose(["docker-compose.workers.yml"], {"START_ALL_IMAGE": image}, workdir)
    names = [f"worker{i}" for i in range(1, workers + 1)]
    try:
        stack.up("db", "app", *names)
        stack.wait_web()
        for name in names:
            wait_for(lambda n=name: stack.health(n).get("ready"), 120, f"{name} ready")
        started = time.monotonic()
        stack.post_json("/tallies", {"count": tasks}, timeout=300)
        done = wait_for(lambda: (t := stack.get_json("/tallies"))["tasks"] >= tasks and t,
                        1800, f"{tasks} tasks")
        wall = time.monotonic() - started
        assert done["runs"] == tasks and done["repeated"] == 0, done
        return {"seconds": done["seconds"], "wall": wall, "rate": tasks / done["seconds"],
                "by_host": sorted(done["by_host"].values(), reverse=True)}
    finally:
        stack.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,3")
    args = parser.parse_args()
    if not _prepare_runtime():
        print("bench_scaling: podman is not available", file=sys.stderr)
        return 1
    counts = [int(n) for n in args.workers.split(",")]
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one container session at a time on this machine
        image = f"localhost/start-all-bench-scaling:{uuid.uuid4().hex[:8]}"
        dangling = set(podman("images", "-q", "--filter", "dangling=true").stdout.split())
        print(f"building {image} ...", file=sys.stderr)
        podman("build", "--format", "docker", "-t", image, str(ROOT), timeout=900)
        rows = []
        try:
            for n in counts:
                print(f"measuring {n} worker container(s) ...", file=sys.stderr)
                with tempfile.TemporaryDirectory() as tmp:
                    rows.append((n, measure(image, n, args.tasks, Path(tmp))))
        finally:
            podman("rmi", "-f", image, check=False)
            new = set(podman("images", "-q", "--filter", "dangling=true").stdout.split())
            if new - dangling:
                podman("rmi", *sorted(new - dangling), check=False)
    load = os.getloadavg()
    print(f"\nNative worker, {args.tasks:,} tasks queued through the web app, one PostgreSQL; "
          f"host: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f}:\n")
    print("| worker containers | drain (s) | tasks/s | vs 1 | tasks per container |")
    print("|---:|---:|---:|---:|---|")
    base = rows[0][1]["rate"]
    for n, r in rows:
        print(f"| {n} | {r['seconds']:.1f} | {r['rate']:,.0f} | {r['rate'] / base:.2f}x "
              f"| {', '.join(f'{c:,}' for c in r['by_host'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
