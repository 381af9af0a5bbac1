"""Statements per plain task: what one `.delay()` and the native worker send to PostgreSQL
for a plain task (no canvas), counted by pg_stat_statements on a private throwaway cluster.

    .venv/bin/python bench/bench_roundtrips.py [--n 200] [--baseline /path/to/other/checkout]

Per checkout (this one, and with --baseline another one with its own .venv, to compare two
versions): N `noop.delay()` calls (producer statements), then N tasks one at a time through a
running worker with 1 thread: enqueue, wait until its row says SUCCESS, next (the worker's
statements per task; its periodic heartbeat and the like are listed apart). The cluster is
`initdb` in a temporary directory on a free port (tests/pgcluster.py), never the shared
server. Prints a markdown table; exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgcluster import PgCluster  # noqa: E402  (one throwaway-cluster implementation)

MARK = "/* roundtrips */"  # the measuring side's own queries carry this and are left out
PERIODIC = ("start_all.workers", "pg_notify('start_all_control'", "lease_until < now()",
            "DELETE FROM start_all.jobs WHERE status = 'SUCCESS'")  # heartbeat, reap, prune

CHILD = r'''
import json, os, signal, subprocess, sys, time
import psycopg
url, n, mark = sys.argv[1], int(sys.argv[2]), sys.argv[3]
open("rtapp.py", "w").write(
    "from supervisor.native import Celery\n"
    f"app = Celery('rtapp', broker={url!r})\n"
    "@app.task\ndef noop():\n    return None\n")
sys.path.insert(0, os.getcwd())
import rtapp
admin = psycopg.connect(url, autocommit=True)

def q(sql, *params):
    cur = admin.execute(mark + " " + sql, params or None)
    return cur.fetchall() if cur.description else []

def stats():
    rows = q("SELECT query, calls FROM pg_stat_statements WHERE dbid = "
             "(SELECT oid FROM pg_database WHERE datname = current_database())")
    return [(query, calls) for query, calls in rows
            if mark not in query and "pg_stat_statements" not in query]

rtapp.noop.delay()  # connect and migrate outside the count
q("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
q("SELECT pg_stat_statements_reset()")
for _ in range(n):
    rtapp.noop.delay()
producer = stats()
q("TRUNCATE start_all.jobs")
worker = subprocess.Popen([sys.executable, "-m", "supervisor.native", "worker", "-A", "rtapp:app",
                           "-c", "1", "-l", "WARNING", "--without-beat"])

def done(task_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not q("SELECT 1 FROM start_all.jobs WHERE task_id = %s AND status = 'SUCCESS'",
                task_id):
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not finish a task")
        time.sleep(0.001)

done(rtapp.noop.delay().id, 60)  # the worker is up
time.sleep(0.5)
q("SELECT pg_stat_statements_reset()")
for _ in range(n):
    done(rtapp.noop.delay().id)
time.sleep(0.2)  # let its last statements land
one_by_one = stats()
worker.send_signal(signal.SIGTERM)
worker.wait(30)
print(json.dumps({"producer": producer, "worker": one_by_one}))
'''


def measure(cluster: PgCluster, label: str, root: Path, python: str, n: int) -> dict:
    url = cluster.create_database(f"rt_{label}")
    work = tempfile.mkdtemp(prefix="roundtrips-")
    env = {**os.environ, "PYTHONPATH": f"{work}{os.pathsep}{root}"}
    proc = subprocess.run([python, "-c", CHILD, url, str(n), MARK], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def split(rows: list, n: int) -> tuple[float, float, dict]:
    """Per-task statements (the producer's enqueues left out), periodic ones, and by kind."""
    per_task = periodic = 0
    kinds: dict[str, float] = {}
    for query, calls in rows:
        short = " ".join(query.split())[:70]
        if any(p in query for p in PERIODIC):
            periodic += calls
            continue
        if "INSERT INTO start_all.jobs" in query:
            continue  # the producer's enqueue of each task (counted on the producer's side)
        per_task += calls
        kinds[short] = kinds.get(short, 0) + calls / n
    return per_task / n, periodic, kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="tasks per measurement")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (with its own .venv) to compare with")
    args = parser.parse_args()
    checkouts = [("this", ROOT, sys.executable)]
    if args.baseline is not None:
        base = args.baseline.resolve()
        python = base / ".venv" / "bin" / "python"
        if not python.exists():
            print(f"bench_roundtrips: --baseline {args.baseline}: no .venv/bin/python there",
                  file=sys.stderr)
            return 2
        checkouts.append(("baseline", base, str(python)))
    cluster = PgCluster(settings={"shared_preload_libraries": "pg_stat_statements",
                                  "pg_stat_statements.track": "top"})
    rows = ["| checkout | statements per .delay() | worker statements per task "
            "(one at a time) | periodic (heartbeat, reap, prune) | worker's, by statement |",
            "|---|---|---|---|---|"]
    try:
        cluster.start()
        for label, root, python in checkouts:
            got = measure(cluster, label, root, python, args.n)
            producer = sum(calls for query, calls in got["producer"]) / args.n
            per_task, periodic, kinds = split(got["worker"], args.n)
            by_kind = "; ".join(f"{v:.2f} x `{k}`" for k, v in sorted(kinds.items(),
                                                                        key=lambda kv: -kv[1]))
            rows.append(f"| {label} ({root.name}) | {producer:.2f} | {per_task:.2f} | "
                        f"{periodic} | {by_kind} |")
    finally:
        cluster.destroy()
    print("\n".join(rows))
    print(f"\n({args.n} tasks each; PostgreSQL {cluster.bindir}, private cluster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
