"""The native worker's two pools: memory (PSS) per child and CPU-bound parallelism.

    .venv/bin/python bench/bench_pool.py [--concurrency 1,2,4] [--tasks 40]

Memory: the booking example (examples/koyeb, Django + its ORM) runs its native worker,
`manage.py native_worker -A demo.native:app -P threads|prefork -c N`, on a fresh PostgreSQL
database of this machine, drains --tasks ORM tasks (cleanup_old_records) so every process is
warm, then reads the PSS of the worker's process tree (/proc/PID/smaps_rollup: shared
copy-on-write pages counted once, as the memory cgroup counts them) and of each child.
CPU: `-A pooltasks:app -c 2` runs 4 tasks of pure-Python work, each sized to take about 1 s
alone on this machine; the wall time until all are done shows whether they ran in parallel
(2 free cores: about 2 s) or took turns under the GIL (about 4 s).
Drain: --drain no-op tasks queued first, then a `-c 2` worker of each pool drains them.
Needs PostgreSQL at $DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres) and
root or the same user (PSS of the worker's processes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from supervisor.resources import process_memory, tree_pids  # noqa: E402

PG_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
EXAMPLE = ROOT / "examples" / "koyeb"
APPS = ROOT / "tests" / "native" / "apps"
MIB = 1024 * 1024


def admin():
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def url_for(name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(PG_URL)._replace(path=f"/{name}"))


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"bench_pool: timed out waiting for {what}")


class Worker:
    def __init__(self, argv: list[str], cwd: Path, env: dict, log: Path) -> None:
        self.log = log
        self.file = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.file,
                                     stderr=subprocess.STDOUT)
        wait(lambda: self.proc.poll() is not None or "ready:" in log.read_text(errors="replace"),
             60, "worker ready")
        if self.proc.poll() is not None:
            raise SystemExit(f"bench_pool: worker exited:\n{log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.file.close()


def drained(conn, n: int) -> bool:
    row = conn.execute("SELECT count(*) FROM start_all.jobs WHERE status IN "
                       "('SUCCESS', 'FAILURE')").fetchone()
    return row[0] >= n


def memory_run(url: str, pool: str, concurrency: int, tasks: int, tmp: Path) -> dict:
    import psycopg

    env = {**os.environ, "DATABASE_URL": url, "TASK_QUEUE": "native",
           "DJANGO_SETTINGS_MODULE": "demo.settings", "PYTHONPATH": str(ROOT),
           "DATA_DIR": str(tmp)}
    worker = Worker([sys.executable, "manage.py", "native_worker", "-A", "demo.native:app",
                     "-P", pool, "-c", str(concurrency)], EXAMPLE, env,
                    tmp / f"{pool}-{concurrency}.log")
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("TRUNCATE start_all.jobs")
    from supervisor.native import Celery

    producer = Celery("bench", broker=url, set_as_current=False)
    for _ in range(tasks):
        producer.send_task("bookings.tasks.cleanup_old_records", args=[30])
    wait(lambda: drained(conn, tasks), 120, "the tasks drained")
    time.sleep(1.0)  # let the last results be written and the processes settle
    pids = tree_pids(worker.proc.pid)
    usage = {pid: process_memory(pid) for pid in pids}
    main = usage.get(worker.proc.pid) or (0, 0)
    children = [u for pid, u in usage.items() if pid != worker.proc.pid and u]
    worker.stop()
    conn.close()
    producer.close()
    return {"tree_pss": sum(u[1] for u in usage.values() if u), "main_pss": main[1],
            "child_pss": [c[1] for c in children], "child_rss": [c[0] for c in children]}


def drain_run(url: str, pool: str, tmp: Path, n: int) -> float:
    """Jobs per second draining n no-op tasks with -c 2 (a prefork job also crosses a pipe)."""
    import psycopg

    env = {**os.environ, "NATIVE_TEST_DB_URL": url, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}"}
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("TRUNCATE start_all.jobs")
    from supervisor.native import Celery

    producer = Celery("bench", broker=url, set_as_current=False)
    producer.send_task("pooltasks.add", args=[0, 0])  # schema and connection warm
    conn.execute("TRUNCATE start_all.jobs")
    for _ in range(n):
        producer.send_task("pooltasks.add", args=[1, 1])
    worker = Worker([sys.executable, "-m", "supervisor.native", "worker", "-A", "pooltasks:app",
                     "-P", pool, "-c", "2"], APPS, env, tmp / f"drain-{pool}.log")
    started = time.monotonic()
    wait(lambda: drained(conn, n), 300, "the drain")
    elapsed = time.monotonic() - started
    worker.stop()
    conn.close()
    producer.close()
    return n / elapsed


def one_second_of_work() -> int:
    sys.path.insert(0, str(APPS))
    os.environ.setdefault("NATIVE_TEST_DB_URL", "postgresql://unused/db")
    import pooltasks

    n = 200_000
    while True:
        started = time.perf_counter()
        pooltasks.crunch.run(n)
        took = time.perf_counter() - started
        if took > 0.2:
            return int(n / took)
        n *= 2


def cpu_run(url: str, pool: str, tmp: Path, n: int) -> float:
    import psycopg

    env = {**os.environ, "NATIVE_TEST_DB_URL": url, "PYTHONPATH": f"{APPS}{os.pathsep}{ROOT}"}
    worker = Worker([sys.executable, "-m", "supervisor.native", "worker", "-A", "pooltasks:app",
                     "-P", pool, "-c", "2"], APPS, env, tmp / f"cpu-{pool}.log")
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("TRUNCATE start_all.jobs")
    from supervisor.native import Celery

    producer = Celery("bench", broker=url, set_as_current=False)
    started = time.monotonic()
    for _ in range(4):
        producer.send_task("pooltasks.crunch", args=[n])
    wait(lambda: drained(conn, 4), 120, "the CPU tasks")
    elapsed = time.monotonic() - started
    worker.stop()
    conn.close()
    producer.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--drain", type=int, default=2000, help="no-op jobs for the drain")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    name = f"bench_pool_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = url_for(name)
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            env = {**os.environ, "DATABASE_URL": url, "TASK_QUEUE": "native",
                   "DJANGO_SETTINGS_MODULE": "demo.settings", "PYTHONPATH": str(ROOT),
                   "DATA_DIR": str(tmp)}
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=EXAMPLE,
                           env=env, check=True, stdout=subprocess.DEVNULL)
            load = os.getloadavg()[0]
            print(f"machine load average {load:.1f} on {os.cpu_count()} CPUs")
            print("\nMemory: booking example worker, warm after "
                  f"{args.tasks} ORM tasks (PSS, MiB)\n")
            print("| pool | -c | worker tree | main process | per child (PSS / RSS) |")
            print("|---|---|---|---|---|")
            for pool in ("threads", "prefork"):
                for c in levels:
                    m = memory_run(url, pool, c, args.tasks, tmp)
                    child = "-"
                    if m["child_pss"]:
                        pss = sum(m["child_pss"]) / len(m["child_pss"]) / MIB
                        rss = sum(m["child_rss"]) / len(m["child_rss"]) / MIB
                        child = f"{pss:.1f} / {rss:.1f}"
                    print(f"| {pool} | {c} | {m['tree_pss'] / MIB:.1f} | "
                          f"{m['main_pss'] / MIB:.1f} | {child} |", flush=True)
            n = one_second_of_work()
            print("\nCPU: 4 tasks of ~1 s of pure-Python work each, -c 2 "
                  "(wall seconds until all done)\n")
            print("| pool | wall s |")
            print("|---|---|")
            for pool in ("threads", "prefork"):
                print(f"| {pool} | {cpu_run(url, pool, tmp, n):.2f} |", flush=True)
            print(f"\nDrain: {args.drain} no-op tasks, -c 2 (jobs/s, from the worker's start)\n")
            print("| pool | jobs/s |")
            print("|---|---|")
            for pool in ("threads", "prefork"):
                rate = drain_run(url, pool, tmp, args.drain)
                print(f"| {pool} | {rate:,.0f} |", flush=True)
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
