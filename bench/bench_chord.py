"""Chord benchmark: a 1,000-task chord, time until its body has run, native vs Celery + Redis.

    .venv/bin/python bench/bench_chord.py [--n 1000] [--rounds 3] [--concurrency 4]
                                          [--only native,celery-threads,celery-prefork]

Per queue, with one worker process of --concurrency executors already running: send
chord(noop(i) for i in range(n))(collect) and wait until the body has run (its own timestamp).
Reported: the time to send the chord, the time from sending until the body ran (median of
--rounds), and, for scale, the same n tasks sent as a plain group and drained (no chord).
The native worker keeps the chord's counter in PostgreSQL; Celery keeps it in Redis (its
result backend) and uses Redis as the broker. A queue that cannot run shows "n/a: reason".
Prints a markdown table; exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from benchkit import wait_until

ROOT = Path(__file__).resolve().parent.parent
BASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUES = ["native", "celery-threads", "celery-prefork"]

TASKS = """
import os
import time

{app}


@app.task
def noop(i):
    return i


@app.task
def collect(results):
    with open(os.environ["BENCH_DONE"], "a") as f:
        f.write(f"{{time.time()}} {{len(results)}}\\n")
    return len(results)
"""
NATIVE_APP = """
from supervisor.native import Celery

app = Celery("chordbench", broker=os.environ["BENCH_DB_URL"])
app.conf.native_poll_interval = 0.2
"""
CELERY_APP = """
from celery import Celery

app = Celery("chordbench", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BACKEND"])
app.conf.worker_prefetch_multiplier = 64
app.conf.result_expires = 600
"""


def body_times(path: Path) -> list[tuple[float, int]]:
    if not path.exists():
        return []
    return [(float(a), int(b)) for a, b in (line.split() for line in path.read_text().split(
        "\n") if line.strip())]


def measure(app_module, n: int, rounds: int, done: Path) -> dict:
    """In this (producer) process: chords and plain groups against a running worker."""
    from_canvas = app_module.__name__
    if from_canvas.startswith("native"):
        from supervisor.native import chord, group
    else:
        from celery import chord, group
    noop, collect = app_module.noop, app_module.collect
    send, total, plain = [], [], []
    for _ in range(rounds):
        seen = len(body_times(done))
        t0 = time.time()
        result = chord(noop.s(i) for i in range(n))(collect.s())
        send.append(time.time() - t0)
        wait_until(lambda seen=seen: len(body_times(done)) > seen, 300, "the chord body",
                   every=0.005)
        finished, count = body_times(done)[-1]
        assert count == n, f"the body got {count} results, not {n}"
        total.append(finished - t0)
        assert result.get(timeout=60) == n
        t0 = time.time()
        g = group(noop.s(i) for i in range(n)).apply_async()
        g.get(timeout=300)
        plain.append(time.time() - t0)
    return {"send": statistics.median(send), "total": statistics.median(total),
            "plain": statistics.median(plain)}


def run_queue(name: str, n: int, rounds: int, concurrency: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench-chord-{name}-"))
    done = work / "done.txt"
    env = {**os.environ, "BENCH_DONE": str(done), "PYTHONPATH": f"{work}{os.pathsep}{ROOT}"}
    dbname, admin = None, None
    if name == "native":
        import psycopg

        admin = psycopg.connect(BASE_URL, autocommit=True)
        dbname = f"bench_chord_{uuid.uuid4().hex[:8]}"
        admin.execute(f'CREATE DATABASE "{dbname}"')
        env["BENCH_DB_URL"] = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{dbname}"))
        module = "native_chord"
        (work / f"{module}.py").write_text(TASKS.format(app=NATIVE_APP))
        argv = [sys.executable, "-m", "supervisor.native", "worker", "-A", f"{module}:app",
                "-c", str(concurrency), "--without-beat"]
        ready = "ready:"
    else:
        import redis

        base = urlsplit(REDIS_URL)
        broker = urlunsplit(base._replace(path="/13"))
        backend = urlunsplit(base._replace(path="/14"))
        redis.Redis.from_url(broker).flushdb()
        redis.Redis.from_url(backend).flushdb()
        env.update(BENCH_BROKER=broker, BENCH_BACKEND=backend)
        module = "celery_chord"
        (work / f"{module}.py").write_text(TASKS.format(app=CELERY_APP))
        pool = name.split("-", 1)[1]
        argv = [sys.executable, "-m", "celery", "-A", module, "worker", "-l", "info",
                "--pool", pool, "-c", str(concurrency), "--without-gossip", "--without-mingle"]
        ready = "ready."
    log = work / "worker.log"
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or ready in log.read_text(errors="replace"),
                   60, f"{name} worker ready", 0.05)
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-500:])
        code = (f"import json, sys; sys.path[:0] = [{str(work)!r}, {str(ROOT)!r}]; "
                f"import bench_chord, {module}; "
                f"print(json.dumps(bench_chord.measure({module}, {n}, {rounds}, "
                f"bench_chord.Path({str(done)!r}))))")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "bench", env=env,
                             capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--only", default=",".join(QUEUES))
    args = parser.parse_args()
    rows = []
    for name in [q for q in args.only.split(",") if q]:
        try:
            rows.append((name, run_queue(name, args.n, args.rounds, args.concurrency)))
        except Exception as error:  # a peer that cannot run is reported, not fatal
            rows.append((name, f"n/a: {str(error).strip()[:120]}"))
    print(f"\nChord of {args.n} no-op tasks, one worker, concurrency {args.concurrency}, "
          f"median of {args.rounds}\n")
    print("| queue | send chord (s) | until the body ran (s) | same tasks as a plain group (s)"
          " | chord / group |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        if isinstance(r, str):
            print(f"| {name} | {r} | | | |")
        else:
            print(f"| {name} | {r['send']:.3f} | {r['total']:.3f} | {r['plain']:.3f} | "
                  f"{r['total'] / r['plain']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
