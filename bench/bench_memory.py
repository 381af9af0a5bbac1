"""Whole-container memory of the booking example: start-all (tuned) against the naive script.

    .venv/bin/python bench/bench_memory.py [--tasks 500]

Builds the demo image (the root Dockerfile = examples/koyeb) and runs it with podman as the
platform would (--memory 512m, PORT set), each stack on a fresh PostgreSQL database of this
machine (host network). Per stack: the PSS of every process in the container, summed, once
idle and at its peak while a burst of --tasks bookings (one e-mail task each) is posted
through the web app and drained by the worker; and how long the drain took.

Stacks:
- naive: `manage.py qcluster & gunicorn` in a shell as PID 1, Django/django-q2/gunicorn
  defaults (qcluster workers = cpu_count(), LocMemCache, CONN_MAX_AGE=0, 1 sync worker);
- start-all + qcluster, tuned: the example as shipped, 1 web process, 1 django-q2 worker;
- start-all + native worker, tuned: Procfile.native, 1 web process, 1 worker thread;
- start-all + qcluster, sized: no counts given, start-all sizes both from the 512 MB limit.
Goal: a tuned stack under 256 MiB with one worker and one web process.
Needs root (PSS of other users' processes), podman (../shared/tools/container-runtime.sh)
and PostgreSQL at $DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from benchkit import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_SCRIPT = ROOT.parent / "shared" / "tools" / "container-runtime.sh"
PG_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MIB = 1024 * 1024
GOAL_MIB = 256
NAIVE_SETTINGS = """\
# Django, django-q2 and gunicorn defaults, as a first deployment would have them.
from demo.settings import *  # noqa: F403

MIDDLEWARE = MIDDLEWARE[1:]  # noqa: F405 - no supervisor, no health middleware
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
DATABASES["default"]["CONN_HEALTH_CHECKS"] = False  # noqa: F405
Q_CLUSTER = {"name": "naive", "orm": "default"}
"""
NAIVE_SCRIPT = (
    "python manage.py migrate --noinput && "
    "{ python manage.py qcluster & exec gunicorn demo.wsgi --bind 0.0.0.0:$PORT; }"
)
TUNED = {"WEB_CONCURRENCY": "1", "START_ALL_WORKER_CONCURRENCY": "1"}
STACKS = [
    ("naive `qcluster & gunicorn`, defaults", "naive", {}),
    ("start-all + qcluster, tuned (1 web, 1 worker)", "start-all", TUNED),
    (
        "start-all + native worker, tuned (1 web, 1 thread)",
        "start-all",
        {**TUNED, "TASK_QUEUE": "native", "START_ALL_PROCFILE": "Procfile.native"},
    ),
    ("start-all + qcluster, sized by start-all for 512 MB", "start-all", {}),
]


def podman(*args: str, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise SystemExit(f"podman {args[0]} failed: {result.stderr[-2000:]}")
    return result.stdout.strip()


def prepare_runtime() -> None:
    if "CONTAINERS_CONF" not in os.environ and RUNTIME_SCRIPT.is_file():
        out = subprocess.run(["bash", str(RUNTIME_SCRIPT)], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export ") :].split("=", 1)
                os.environ[key] = value


def get_json(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def post_booking(port: int, number: int) -> None:
    body = json.dumps({"name": f"guest {number}", "email": f"g{number}@example.com"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/bookings",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def container_memory(host_pid: int) -> tuple[int, int]:
    """(sum of PSS over every process of the container, number of processes)."""
    root = psutil.Process(host_pid)
    total, count = 0, 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total, count


class Sampler(threading.Thread):
    """PSS of the container every 0.25 s, in the background."""

    def __init__(self, host_pid: int) -> None:
        super().__init__(daemon=True)
        self.host_pid, self.samples, self.done = host_pid, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.samples.append(container_memory(self.host_pid))
            except psutil.NoSuchProcess:
                return
            self.done.wait(0.25)


def create_database() -> tuple[str, str]:
    import psycopg

    name = f"bench_memory_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, PG_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_stack(image: str, kind: str, env: dict, tasks: int, naive_settings: Path) -> dict:
    port = free_port()
    dbname, url = create_database()
    name = f"bench-memory-{uuid.uuid4().hex[:8]}"
    args = ["run", "-d", "--name", name, "--memory", "512m", "--network", "host"]
    environment = {"PORT": str(port), "DATABASE_URL": url, **env}
    if kind == "naive":
        environment["DJANGO_SETTINGS_MODULE"] = "demo.naive_settings"
        args += ["-v", f"{naive_settings}:/app/demo/naive_settings.py:ro"]
        args += ["--entrypoint", "sh"]
    else:
        environment["START_ALL_HEALTH_PORT"] = str(free_port())
    for key, value in environment.items():
        args += ["-e", f"{key}={value}"]
    args.append(image)
    if kind == "naive":
        args += ["-c", NAIVE_SCRIPT]
    try:
        podman(*args)
        host_pid = int(podman("inspect", "-f", "{{.State.Pid}}", name))
        wait_until(lambda: get_json(port, "/stats"), 120, f"{name} to serve /stats", every=0.1)
        if kind != "naive":
            wait_until(lambda: (get_json(port, "/healthz") or {}).get("ready"), 120, "ready",
                       every=0.1)
        # idle: the median of 5 s of samples once serving
        idle = Sampler(host_pid)
        idle.start()
        time.sleep(5)
        idle.done.set()
        idle.join()
        idle_pss = statistics.median(s[0] for s in idle.samples)
        processes = max(s[1] for s in idle.samples)

        burst = Sampler(host_pid)
        burst.start()
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: post_booking(port, n), range(tasks)))
        posted = time.monotonic() - started
        wait_until(
            lambda: (get_json(port, "/stats") or {}).get("confirmed", 0) >= tasks,
            600,
            f"{tasks} bookings confirmed",
        )
        drained = time.monotonic() - started
        burst.done.set()
        burst.join()
        peak = max(s[0] for s in burst.samples)
        return {
            "idle": idle_pss / MIB,
            "peak": peak / MIB,
            "processes": processes,
            "posted": posted,
            "drained": drained,
        }
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
        drop_database(dbname)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    args = parser.parse_args()
    prepare_runtime()
    # the container tests' lock: their image clean-up and this build never overlap
    lock = open(Path(tempfile.gettempdir()) / "start-all-container-tests.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    image = f"localhost/start-all-bench-memory:{uuid.uuid4().hex[:8]}"
    dangling = set(podman("images", "-q", "--filter", "dangling=true").split())
    print(f"building {image} from {ROOT}/Dockerfile ...", file=sys.stderr)
    podman("build", "--format", "docker", "-t", image, str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        naive_settings = Path(tmp) / "naive_settings.py"
        naive_settings.write_text(NAIVE_SETTINGS)
        naive_settings.chmod(0o644)
        os.chmod(tmp, 0o755)
        try:
            for label, kind, env in STACKS:
                print(f"measuring: {label} ...", file=sys.stderr)
                rows.append((label, run_stack(image, kind, env, args.tasks, naive_settings)))
        finally:
            podman("rmi", "-f", image, check=False)
            # the build's untagged stage images; ones that existed before stay
            ours = set(podman("images", "-q", "--filter", "dangling=true").split()) - dangling
            if ours:
                podman("rmi", *sorted(ours), check=False)
    print(
        f"\nWhole-container memory, booking example, --memory 512m, {args.tasks}-task burst "
        f"(PSS summed over every process; host cpu_count() = {os.cpu_count()}):\n"
    )
    print(
        "| stack | processes | idle PSS (MiB) | burst peak PSS (MiB) "
        f"| {args.tasks} tasks posted + drained (s) |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, r in rows:
        print(
            f"| {label} | {r['processes']} | {r['idle']:.1f} | {r['peak']:.1f} "
            f"| {r['drained']:.1f} |"
        )
    tuned = [r for label, r in rows if "tuned" in label]
    verdict = "met" if all(r["peak"] < GOAL_MIB for r in tuned) else "NOT met"
    print(f"\nGoal: tuned stacks under {GOAL_MIB} MiB at the burst peak: {verdict}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
