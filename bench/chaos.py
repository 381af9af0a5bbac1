"""The chaos suite: real faults under a real start-all running web + native worker.

    bash bench/run chaos [--short] [--only kills,tasks,outage,sigterm] [--json FILE]

- kills:   worker SIGKILLs (300; short 20) while `wrk` loads the web: failed requests,
           restarts against kills, zombies, PID 1's RSS drift.
- tasks:   10,000 tasks (short 2,000) with 20 random worker SIGKILLs (short 5), then again
           with 40 rapid ones (short 8): lost, re-runs against executions cut off, finished
           tasks run again, false FAILUREs, drain time after the last kill.
- outage:  on a private throwaway cluster (initdb + pg_ctl, never the shared server):
           PostgreSQL stopped for 20 s (short 5) under a draining worker; pg_terminate_backend
           x10 (short 3); the LISTEN connection alone cut; the database check over 10 outages
           (short 3). Container survives, lost, time to resume, what /healthz said and when.
- sigterm: SIGTERM to start-all while 50 tasks run (half short, half longer than the stop
           budget): finished / returned / run twice, exit code, stop time.
- peers:   the same stop of PostgreSQL under django-q2's qcluster (ORM broker) and a Celery
           worker (Redis broker, tasks that need the database): exits, lost, resume (full mode).

Prints one table (markdown); `--json` also writes the figures. The zero figures (failed
requests, zombies, lost, finished-run-again, false FAILUREs, container exits) are what the
suite's test asserts; everything else is a measurement. The machine's shared PostgreSQL on
127.0.0.1:5432 gets one database per run (dropped after); the outage scenario never touches it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import free_port, wait_until  # noqa: E402  (bench/ is on sys.path above)

from tests.pgcluster import PgCluster  # noqa: E402  (one throwaway-cluster implementation)

BASE_URL = os.environ.get("CHAOS_BASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PY = sys.executable
SETTLED = 0.25  # s: a run that ended this long before its worker's SIGKILL must not run again
SCENARIOS = ("kills", "tasks", "outage", "sigterm", "peers")  # --short leaves out "peers"


# ----- small helpers ------------------------------------------------------------------------------


def admin(sql: str, url: str = BASE_URL) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


class Marks:
    """The S/E lines the tasks wrote (see chaos_app.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, int, int, float]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                out.append((parts[0], int(parts[1]), int(parts[2]), float(parts[3])))
        return out

    def analyse(self, kills: dict[int, float] | None = None) -> dict:
        """Counts from the marks. `kills`: pid -> when it was SIGKILLed, to tell a task whose
        body had just ended (its result not yet written: it was still in flight) from one
        whose run had finished well before the kill."""
        kills = kills or {}
        started: dict[int, list[tuple[int, float]]] = {}
        ended: dict[int, list[tuple[int, float]]] = {}
        for kind, i, pid, t in self.read():
            (started if kind == "S" else ended).setdefault(i, []).append((pid, t))
        cut_off = sum(1 for i, runs in started.items() for pid, _ in runs
                      if pid not in {p for p, _ in ended.get(i, [])})
        reruns = sum(len(runs) - 1 for runs in started.values())
        gaps = []  # seconds from the end of a run that was repeated to the kill of its worker
        for i, ends in ended.items():
            pid, first = min(ends, key=lambda e: e[1])
            if any(t > first for _, t in started.get(i, [])):
                gaps.append(kills[pid] - first if pid in kills else float("inf"))
        return {"executions": sum(len(r) for r in started.values()), "cut_off": cut_off,
                "reruns": reruns, "finished_again": len(gaps),
                "finished_again_max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
                "finished_long_before_kill_again": sum(g > SETTLED for g in gaps),
                "ended_ids": len(ended), "last_end": max((t for ends in ended.values()
                                                          for _, t in ends), default=None)}


class Stack:
    """start-all (as PID 1 of a fresh PID namespace when root) running web + native worker."""

    def __init__(self, db_url: str, tmp: Path, concurrency: int = 4, env: dict | None = None,
                 web_workers: int = 2, worker: str | None = None, release: str | None = None,
                 marker: str = "supervisor.native") -> None:
        self.tmp = tmp
        self.port = free_port()
        self.hport = free_port()
        self.marker = marker
        self.marks = Marks(tmp / f"marks-{uuid.uuid4().hex[:6]}")
        procfile = tmp / f"Procfile-{uuid.uuid4().hex[:6]}"
        worker = worker or (f"python3 -m supervisor.native worker -A chaos_app:app "
                            f"-c {concurrency} -l WARNING")
        procfile.write_text(
            (f"release: {release}\n" if release else "")
            + f"web: gunicorn --chdir {ROOT / 'bench'} --bind 127.0.0.1:$PORT "
            f"--workers {web_workers} chaos_app:wsgi\n"
            f"worker: {worker}\n")
        base = {k: v for k, v in os.environ.items() if not k.startswith("START_ALL_")}
        self.env = {
            **base,
            "PATH": os.pathsep.join([os.path.dirname(PY), os.environ.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "bench"), str(ROOT / "bench" / "chaos_django"), str(ROOT)]),
            "DATABASE_URL": db_url, "CHAOS_MARKS": str(self.marks.path),
            "PORT": str(self.port), "START_ALL_HEALTH_PORT": str(self.hport),
            "START_ALL_HEALTH_INTERVAL": "0.5", "START_ALL_SIZING": "off",
            "START_ALL_HEARTBEAT_INTERVAL": "1",  # stale after 3 s: load-proof
            **(env or {}),
        }
        argv = [PY, "-m", "supervisor", "--procfile", str(procfile)]
        if os.geteuid() == 0 and shutil.which("unshare"):
            argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
        self.log_path = tmp / f"start-all-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=tmp, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def supervisor(self) -> psutil.Process:
        """The supervisor itself (unshare's child when it runs as PID 1)."""
        top = psutil.Process(self.proc.pid)
        if top.name() == "unshare":
            return wait_until(lambda: (top.children() or [None])[0], 10, "the supervisor")
        return top

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.hport}/healthz",
                                        timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def worker_pid(self) -> int | None:
        try:
            for child in self.supervisor.children():
                if self.marker in " ".join(child.cmdline()) and (
                        child.status() != psutil.STATUS_ZOMBIE):
                    return child.pid
        except psutil.Error:
            pass
        return None

    def wait_ready(self, timeout: float = 60) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"start-all exited {self.proc.returncode}:\n{self.output}")
            try:
                code, report = self.health()
            except OSError:
                return False
            return report.get("ready")

        wait_until(ready, timeout, "start-all ready", every=0.1)

    def zombies(self) -> int:
        try:
            return sum(1 for p in self.supervisor.children(recursive=True)
                       if p.status() == psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return 0

    def stop(self, timeout: float = 30) -> tuple[int, float]:
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        started = time.monotonic()
        try:
            self.supervisor.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        self.log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.supervisor.kill()  # PID 1 gone: the kernel kills its namespace
            except psutil.Error:
                pass
            self.proc.kill()
            self.proc.wait()


class Queue:
    """The producer side, with the app's own API (the test process is a client)."""

    def __init__(self, db_url: str) -> None:
        os.environ["CHAOS_DB_URL"] = db_url
        for name in list(sys.modules):
            if name == "chaos_app":
                del sys.modules[name]
        import chaos_app

        from supervisor.native import group

        self.app = chaos_app
        self.group = group
        self.url = db_url

    def enqueue(self, ids, seconds: float = 0.0) -> None:
        import psycopg

        ids = list(ids)
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            for attempt in (1, 2):  # the producer's connection may predate a server restart
                try:
                    self.group(self.app.work.s(i, seconds) for i in chunk).apply_async()
                    break
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise

    def counts(self) -> dict[str, int]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn:
            rows = conn.execute("SELECT status, count(*) FROM start_all.jobs GROUP BY 1")
            return dict(rows.fetchall())

    def safe_counts(self) -> dict[str, int] | None:
        try:
            return self.counts()
        except Exception:
            return None

    def last_finished(self) -> float | None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            value = conn.execute(
                "SELECT extract(epoch FROM max(finished_at)) FROM start_all.jobs").fetchone()[0]
            return float(value) if value is not None else None

    def truncate(self) -> None:
        admin("TRUNCATE start_all.jobs", self.url)

    def wait_drained(self, total: int, timeout: float) -> float:
        def done():
            counts = self.safe_counts() or {}
            return sum(counts.get(s, 0) for s in ("SUCCESS", "FAILURE", "REVOKED")) >= total

        wait_until(done, timeout, f"{total} tasks finished", every=0.2)
        return time.time()


class HealthLog(threading.Thread):
    """Polls /healthz every 0.1 s and keeps (time, code, status, database ok) transitions."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.samples: list[tuple[float, int | None, str, object]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                code, report = self.stack.health()
                sample = (time.time(), code, report.get("status", "?"),
                          report.get("checks", {}).get("database", {}).get("ok"))
            except OSError:
                sample = (time.time(), None, "unreachable", None)
            self.samples.append(sample)
            self.halt.wait(0.1)

    def summary(self, since: float) -> str:
        """'ok 200 -> degraded 200 at +0.8 s -> ok 200 at +21.3 s' relative to `since`."""
        parts, last = [], None
        for t, code, status, _ in self.samples:
            key = (status, code)
            if key != last:
                offset = f" at {t - since:+.1f} s" if parts else ""
                parts.append(f"{status} {code}{offset}")
                last = key
        return " -> ".join(parts)

    def statuses_between(self, start: float, end: float) -> set[tuple[str, int | None]]:
        return {(s, c) for t, c, s, _ in self.samples if start <= t <= end}


def fresh_database(base_url: str = BASE_URL) -> tuple[str, str]:
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"', base_url)
    return name, base_url.rsplit("/", 1)[0] + "/" + name


def drop_database(name: str, base_url: str = BASE_URL) -> None:
    try:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', base_url)
    except Exception:
        pass


def migrate(db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)]),
           "CHAOS_DB_URL": db_url}
    subprocess.run([PY, "-m", "supervisor.native", "migrate", "-A", "chaos_app:app"],
                   env=env, check=True, capture_output=True, cwd=ROOT / "bench")


# ----- scenarios ----------------------------------------------------------------------------------


def scenario_kills(args, tmp: Path) -> dict:
    kills = 20 if args.short else 300
    name, url = fresh_database()
    migrate(url)
    stack = Stack(url, tmp, concurrency=2, env={
        "START_ALL_CRASH_LOOP_COUNT": "100000", "START_ALL_BACKOFF_INITIAL": "0.05",
        "START_ALL_BACKOFF_MAX": "0.2"})
    try:
        stack.wait_ready()
        rss_before = stack.supervisor.memory_info().rss
        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c20", "-d600s", "--timeout", "5s",
             f"http://127.0.0.1:{stack.port}/"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        sent, last = 0, None
        started = time.monotonic()
        for _ in range(kills):
            pid = new_worker(stack, last)
            time.sleep(random.uniform(0.02, 0.15))
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except ProcessLookupError:
                pass
            last = pid
        killing = time.monotonic() - started
        wait_until(lambda: (p := stack.worker_pid()) and p != last, 30, "the last restart")
        time.sleep(1.0)
        wrk.send_signal(signal.SIGINT)
        report = wrk.communicate(timeout=30)[0]
        code, health = stack.health()
        worker = next(p for p in health["processes"] if p["name"] == "worker.1")
        zombies = wait_zombies(stack)
        rss_after = stack.supervisor.memory_info().rss
        alive = stack.proc.poll() is None
    finally:
        stack.stop()
        drop_database(name)
    requests, failed = parse_wrk(report)
    return {"kills": sent, "restarts": worker["restarts"], "requests": requests,
            "failed_requests": failed, "zombies": zombies, "seconds": round(killing, 1),
            "pid1_rss_before_mib": round(rss_before / 2**20, 1),
            "pid1_rss_drift_kib": round((rss_after - rss_before) / 1024),
            "container_alive": alive, "healthz_after": code}


def ns_pid(pid: int) -> int:
    """The pid as the process sees itself (inside start-all's PID namespace): its marks."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        pass
    return pid


def new_worker(stack: Stack, last: int | None) -> int:
    """The worker's pid once it differs from `last` (the supervisor restarted it)."""
    return wait_until(lambda: (p := stack.worker_pid()) and p != last and p, 30,
                      "the restarted worker")


def wait_zombies(stack: Stack) -> int:
    """Zombies left once the loop had a moment to reap (a just-killed one is not a leak)."""
    deadline = time.monotonic() + 3
    count = stack.zombies()
    while count and time.monotonic() < deadline:
        time.sleep(0.1)
        count = stack.zombies()
    return count


def parse_wrk(report: str) -> tuple[int, int]:
    requests = int(m.group(1)) if (m := re.search(r"(\d+) requests in", report)) else 0
    failed = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)",
                                                report)) else 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      report):
        failed += sum(int(x) for x in m.groups())
    return requests, failed


def scenario_tasks(args, tmp: Path) -> dict:
    total = 2000 if args.short else 10_000
    plans = {"random": 5 if args.short else 20, "rapid": 8 if args.short else 40}
    name, url = fresh_database()
    migrate(url)
    out = {}
    try:
        queue = Queue(url)
        for mode, kills in plans.items():
            queue.truncate()
            stack = Stack(url, tmp, concurrency=8, env={
                "START_ALL_CRASH_LOOP_COUNT": "100000", "START_ALL_BACKOFF_INITIAL": "0.05",
                "START_ALL_BACKOFF_MAX": "0.2"})
            try:
                stack.wait_ready()
                queue.enqueue(range(total), seconds=0.025)
                sent, last, last_kill, killed = 0, None, time.time(), {}
                for _ in range(kills):
                    pid = new_worker(stack, last)
                    if mode == "random":
                        time.sleep(random.uniform(0.3, 1.5))
                    else:
                        time.sleep(random.uniform(0.05, 0.3))
                    counts = queue.safe_counts() or {}
                    if counts.get("SUCCESS", 0) >= total:
                        break  # drained before every kill went out
                    inner = ns_pid(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        sent += 1
                        last_kill = killed[inner] = time.time()
                    except ProcessLookupError:
                        pass
                    last = pid
                queue.wait_drained(total, 300)
                counts = queue.counts()
                finished = queue.last_finished()
                marks = stack.marks.analyse(killed)
                alive = stack.proc.poll() is None
            finally:
                stack.stop()
            out[mode] = {
                "tasks": total, "kills": sent,
                "lost": total - counts.get("SUCCESS", 0) - counts.get("FAILURE", 0),
                "false_failures": counts.get("FAILURE", 0),
                "cut_off": marks["cut_off"], "reruns": marks["reruns"],
                "finished_again": marks["finished_again"],
                "finished_again_max_gap_ms": marks["finished_again_max_gap_ms"],
                "finished_long_before_kill_again": marks["finished_long_before_kill_again"],
                "drain_after_last_kill_s": round(max(0.0, finished - last_kill), 2),
                "container_alive": alive,
            }
    finally:
        drop_database(name)
    return out


def scenario_outage(args, tmp: Path) -> dict:
    down_for = 5.0 if args.short else 20.0
    terminations = 3 if args.short else 10
    check_rounds = 3 if args.short else 10
    out: dict = {}
    cluster = PgCluster()
    try:
        cluster.start()
        url = cluster.create_database("chaos")
        migrate(url)
        queue = Queue(url)
        stack = Stack(url, tmp, concurrency=4)
        health = HealthLog(stack)
        try:
            stack.wait_ready()
            health.start()
            # 1. stopped for 20 s under a draining worker
            total = 1500
            queue.enqueue(range(total), seconds=0.02)
            wait_until(lambda: len(stack.marks.read()) > 100, 30, "tasks running")
            pids_before = stack.worker_pid()
            stop_at = time.time()
            cluster.stop()
            time.sleep(down_for)
            cluster.start()
            start_at = time.time()
            resumed = wait_until(
                lambda: next((t for k, _, _, t in stack.marks.read()
                              if k == "E" and t > start_at), None), 60, "tasks again")
            queue.wait_drained(total, 120)
            counts = queue.counts()
            marks = stack.marks.analyse()
            out["stop"] = {
                "down_s": down_for, "tasks": total,
                "lost": total - counts.get("SUCCESS", 0) - counts.get("FAILURE", 0),
                "false_failures": counts.get("FAILURE", 0),
                "finished_again": marks["finished_again"],
                "resume_after_start_s": round(resumed - start_at, 2),
                "worker_restarted": stack.worker_pid() != pids_before,
                "container_alive": stack.proc.poll() is None,
                "healthz": health.summary(stop_at),
                "healthz_during": sorted(f"{s} {c}" for s, c in health.statuses_between(
                    stop_at + 3.0, start_at)),
            }
            # 2. pg_terminate_backend of the worker's connections, x10
            queue.truncate()
            total = 1000
            queue.enqueue(range(10_000, 10_000 + total), seconds=0.01)
            cut = 0
            for _ in range(terminations):
                wait_until(lambda: cluster.psql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'chaos' "
                    "AND application_name NOT LIKE 'psql%'") not in ("", "0"), 30,
                    "the worker connected")
                cut += cluster.terminate("chaos", "application_name NOT LIKE 'psql%'")
                time.sleep(0.5)
            queue.wait_drained(total, 120)
            counts = queue.counts()
            out["terminate"] = {
                "rounds": terminations, "connections_cut": cut, "tasks": total,
                "lost": total - counts.get("SUCCESS", 0) - counts.get("FAILURE", 0),
                "false_failures": counts.get("FAILURE", 0),
                "container_alive": stack.proc.poll() is None,
            }
            # 3. the LISTEN connection alone is cut: does a new task still start promptly?
            queue.truncate()
            cut = cluster.terminate("chaos", "query ILIKE 'LISTEN%'")
            time.sleep(0.5)
            pickups = []
            for k in range(5):
                before = time.time()
                queue.enqueue([20_000 + k])
                done = wait_until(lambda k=k: next((t for kind, i, _, t in stack.marks.read()
                                                    if kind == "S" and i == 20_000 + k), None),
                                  60, "pickup after the LISTEN cut")
                pickups.append(done - before)
            out["listen_cut"] = {"connections_cut": cut,
                                 "first_pickup_s": round(pickups[0], 3),
                                 "worst_pickup_s": round(max(pickups), 3),
                                 "container_alive": stack.proc.poll() is None}
            # 4. the database check across outages
            downs, ups = [], []
            for _ in range(check_rounds):
                stopped = time.time()
                cluster.stop()
                wait_until(lambda stopped=stopped: any(t > stopped and ok is False
                                       for t, _, _, ok in health.samples), 30, "degraded")
                downs.append(next(t for t, _, _, ok in health.samples
                                  if t > stopped and ok is False) - stopped)
                started = time.time()
                cluster.start()
                wait_until(lambda started=started: any(t > started and ok is True
                                       for t, _, _, ok in health.samples), 30, "ok again")
                ups.append(next(t for t, _, _, ok in health.samples
                                if t > started and ok is True) - started)
                time.sleep(0.3)
            out["check"] = {"rounds": check_rounds,
                            "degraded_within_3s": sum(d < 3 for d in downs),
                            "ok_within_3s": sum(u < 3 for u in ups),
                            "worst_degraded_s": round(max(downs), 2),
                            "worst_ok_s": round(max(ups), 2),
                            "container_alive": stack.proc.poll() is None}
        finally:
            health.halt.set()
            stack.stop()
    finally:
        cluster.destroy()
    return out


def scenario_sigterm(args, tmp: Path) -> dict:
    name, url = fresh_database()
    migrate(url)
    try:
        queue = Queue(url)
        budget = 8.0
        stack = Stack(url, tmp, concurrency=50, env={"START_ALL_STOP_TIMEOUT": str(budget)})
        try:
            stack.wait_ready()
            queue.enqueue(range(25), seconds=2.0)
            queue.enqueue(range(100, 125), seconds=60.0)
            wait_until(lambda: len({i for k, i, _, _ in stack.marks.read() if k == "S"}) >= 50,
                       60, "50 tasks running")
            code, took = stack.stop(timeout=budget + 20)
        finally:
            stack.kill()
        after = queue.counts()
        first = stack.marks.analyse()
        finished_ids = {i for k, i, _, _ in stack.marks.read() if k == "E"}
        # a second worker takes whatever went back (the 60 s tasks, shortened here so that the
        # drain takes a moment): does any task that had finished run twice?
        admin("UPDATE start_all.jobs SET kwargs = '{}', args = jsonb_build_array(args->0, 0.01)"
              " WHERE status NOT IN ('SUCCESS', 'FAILURE')", url)
        drain = subprocess.Popen(
            [PY, "-m", "supervisor.native", "worker", "-A", "chaos_app:app", "-c", "8",
             "-l", "WARNING"], cwd=ROOT / "bench",
            env={**stack.env, "CHAOS_DB_URL": url}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            queue.wait_drained(50, 120)
        finally:
            drain.send_signal(signal.SIGTERM)
            drain.wait(30)
        ran_again = {i for k, i, _, t in stack.marks.read() if k == "S"}
        run_twice = sum(1 for i in finished_ids
                        if sum(1 for k, j, _, _ in stack.marks.read() if k == "S" and j == i) > 1)
        return {
            "running_at_sigterm": 50, "finished": len(finished_ids),
            "returned": after.get("PENDING", 0) + after.get("RETRY", 0),
            "left_reserved": after.get("RESERVED", 0), "cut_off": first["cut_off"],
            "finished_run_twice": run_twice, "all_done_after": len(ran_again),
            "exit_code": code, "stop_s": round(took, 2), "budget_s": budget,
        }
    finally:
        drop_database(name)


def scenario_peers(args, tmp: Path) -> dict:
    """What django-q2's qcluster and a Celery worker (Redis broker, tasks that need the
    database) do under start-all while their PostgreSQL is stopped."""
    down_for = 5.0 if args.short else 20.0
    django_dir = ROOT / "bench" / "chaos_django"
    out = {}
    for kind in ("qcluster", "celery"):
        cluster = PgCluster()
        stack = None
        try:
            cluster.start()
            url = cluster.create_database("peer")
            env = {"START_ALL_BACKOFF_MAX": "5"}
            if kind == "qcluster":
                options = {"worker": f"cd {django_dir} && python3 manage.py qcluster",
                           "release": f"python3 {django_dir / 'manage.py'} migrate --no-input",
                           "marker": "qcluster"}
                env["DJANGO_SETTINGS_MODULE"] = "chaosproj.settings"
            else:
                env["CHAOS_CELERY_QUEUE"] = f"chaos-{uuid.uuid4().hex[:8]}"
                options = {"worker": "celery -A chaos_celery worker -c 2 -l WARNING "
                                     "--without-gossip --without-mingle",
                           "marker": "celery"}
            stack = Stack(url, tmp, env=env, **options)
            send = _peer_sender(kind, stack)
            health = HealthLog(stack)
            stack.wait_ready(120)
            health.start()
            sent = list(range(0, 20))
            send(sent, 0.2)
            wait_until(lambda stack=stack: len(stack.marks.read()) >= 4, 60,
                       f"{kind} running tasks")
            stop_at = time.time()
            cluster.stop()
            while time.time() - stop_at < down_for:
                if kind == "celery":  # the broker is up: the web goes on sending tasks
                    i = 1000 + len(sent)
                    send([i], 0.0)
                    sent.append(i)
                time.sleep(0.5)
            cluster.start()
            start_at = time.time()
            after = list(range(5000, 5020))
            send(after, 0.0)
            sent += after
            try:
                wait_until(lambda stack=stack, after=after: set(after) <= {
                    i for k, i, _, _ in stack.marks.read() if k == "E"}, 90,
                    f"{kind} working again")
            except TimeoutError:
                pass
            try:  # and until the supervisor saw the database back (for the /healthz column)
                wait_until(lambda health=health, start_at=start_at: any(
                    t > start_at and ok is True for t, _, _, ok in health.samples), 15,
                    "the database check ok")
            except TimeoutError:
                pass
            marks = stack.marks.read()
            ended = {i for k, i, _, _ in marks if k == "E"}
            resumed = min((t for k, _, _, t in marks if k == "E" and t > start_at),
                          default=None)
            code, report = stack.health()
            worker = next(p for p in report["processes"] if p["name"] == "worker.1")
            output = stack.output
            out[kind] = {
                "down_s": down_for, "sent": len(sent), "lost": len(set(sent) - ended),
                "worker_exits": output.count("worker.1 exited") + output.count("worker.1 killed"),
                "not_counted": output.count("not counted as a crash"),
                "restarts": worker["restarts"],
                "resume_after_start_s": round(resumed - start_at, 2) if resumed else None,
                "container_alive": stack.proc.poll() is None,
                "healthz": health.summary(stop_at),
            }
            health.halt.set()
        finally:
            if stack is not None:
                stack.stop()
            cluster.destroy()
    return out


def _peer_sender(kind: str, stack: Stack):
    """send(ids, seconds): enqueue record tasks the way that worker's app would."""
    if kind == "celery":
        from celery import Celery

        client = Celery(broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        queue = stack.env["CHAOS_CELERY_QUEUE"]

        def send(ids, seconds):
            for i in ids:
                client.send_task("chaos_celery.touch_db", (i, seconds), queue=queue)

        return send
    django_dir = ROOT / "bench" / "chaos_django"

    def send(ids, seconds):
        code = ("from django_q.tasks import async_task\n"
                f"for i in {list(ids)!r}: async_task('chaos_marks.record', i, {seconds})")
        subprocess.run([PY, "manage.py", "shell", "-c", code], cwd=django_dir,
                       env=stack.env, check=True, capture_output=True, timeout=60)

    return send


# ----- the table ----------------------------------------------------------------------------------


def rows(results: dict) -> list[tuple[str, str, str, str]]:
    out = []

    def add(scenario, figure, value, target=""):
        out.append((scenario, figure, str(value), target))

    if k := results.get("kills"):
        add("worker SIGKILL under wrk", "kills sent / restarts", f"{k['kills']} / {k['restarts']}",
            "equal")
        add("", "requests / failed", f"{k['requests']} / {k['failed_requests']}", "0 failed")
        add("", "zombies", k["zombies"], "0")
        add("", "PID 1 RSS drift", f"{k['pid1_rss_drift_kib']:+d} KiB (of "
            f"{k['pid1_rss_before_mib']} MiB)", "~0")
    for mode in ("random", "rapid"):
        if t := results.get("tasks", {}).get(mode):
            label = f"{t['tasks']:,} tasks, {t['kills']} {mode} SIGKILLs"
            add(label, "lost", t["lost"], "0")
            add("", "re-runs / cut off by a kill + results in flight",
                f"{t['reruns']} / {t['cut_off']} + {t['finished_again']}", "equal")
            gap = t["finished_again_max_gap_ms"]
            add("", "run again after their body ended (latest: ms before the kill)",
                f"{t['finished_again']}" + (f" ({gap:g} ms)" if gap is not None else ""),
                "only in flight")
            add("", f"run again, finished > {SETTLED * 1000:g} ms before the kill",
                t["finished_long_before_kill_again"], "0")
            add("", "false FAILUREs", t["false_failures"], "0")
            add("", "drain after the last kill", f"{t['drain_after_last_kill_s']} s")
    if o := results.get("outage"):
        s = o["stop"]
        add(f"PostgreSQL stopped {s['down_s']:g} s", "container survives",
            "yes" if s["container_alive"] else "NO", "yes")
        add("", "lost / false FAILUREs", f"{s['lost']} / {s['false_failures']}", "0 / 0")
        add("", "processing again after restart", f"{s['resume_after_start_s']} s", "< 1 s")
        add("", "/healthz", s["healthz"], "degraded 200")
        t = o["terminate"]
        add(f"pg_terminate_backend x{t['rounds']}", "lost / container survives",
            f"{t['lost']} / {'yes' if t['container_alive'] else 'NO'}", "0 / yes")
        c = o["listen_cut"]
        add("LISTEN connection cut", "pickup after the cut (first / worst)",
            f"{c['first_pickup_s']} / {c['worst_pickup_s']} s")
        d = o["check"]
        add(f"database check, {d['rounds']} outages", "degraded < 3 s / ok < 3 s",
            f"{d['degraded_within_3s']} / {d['ok_within_3s']} of {d['rounds']}",
            f"{d['rounds']} / {d['rounds']}")
        add("", "worst: degraded after / ok after",
            f"{d['worst_degraded_s']} / {d['worst_ok_s']} s")
    if g := results.get("sigterm"):
        add("SIGTERM, 50 tasks running", "finished / returned / finished run twice",
            f"{g['finished']} / {g['returned']} / {g['finished_run_twice']}", "25 / 25 / 0")
        add("", "exit code / stop time", f"{g['exit_code']} / {g['stop_s']} s "
            f"(budget {g['budget_s']:g} s)", "0 / < budget + 0.5")
    return out


def peer_rows(results: dict) -> list[str]:
    lines = []
    for kind, p in results.get("peers", {}).items():
        took = p["resume_after_start_s"]
        resume = f"{took} s" if took is not None else "never"
        lines.append(
            f"| {kind} | {p['down_s']:g} s | {p['worker_exits']} ({p['not_counted']} not counted "
            f"as crashes) | {'yes' if p['container_alive'] else 'NO'} | {p['lost']} of "
            f"{p['sent']} | {resume} | {p['healthz']} |")
    if lines:
        lines[:0] = ["", "| worker | PostgreSQL down | worker exits | container survives | "
                     "tasks lost | working again after the restart | /healthz |",
                     "|---|---|---|---|---|---|---|"]
    return lines


def table(results: dict) -> str:
    lines = ["| scenario | figure | measured | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(results)]
    if not rows(results):
        lines = []
    return "\n".join(lines + peer_rows(results))


def zero_figures(results: dict) -> dict[str, object]:
    """The figures that must be zero (or true): what the suite's test asserts."""
    out = {}
    if k := results.get("kills"):
        out |= {"kills.failed_requests": k["failed_requests"], "kills.zombies": k["zombies"],
                "kills.container_alive": k["container_alive"]}
    for mode, t in results.get("tasks", {}).items():
        out |= {f"tasks.{mode}.lost": t["lost"],
                f"tasks.{mode}.false_failures": t["false_failures"],
                f"tasks.{mode}.finished_long_before_kill_again":
                    t["finished_long_before_kill_again"],
                f"tasks.{mode}.container_alive": t["container_alive"]}
    if o := results.get("outage"):
        out |= {"outage.stop.lost": o["stop"]["lost"],
                "outage.stop.container_alive": o["stop"]["container_alive"],
                "outage.terminate.lost": o["terminate"]["lost"],
                "outage.terminate.container_alive": o["terminate"]["container_alive"]}
    if g := results.get("sigterm"):
        out |= {"sigterm.finished_run_twice": g["finished_run_twice"],
                "sigterm.exit_code": g["exit_code"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the quick variant (the test's)")
    parser.add_argument("--only", default=None, help=f"some of {','.join(SCENARIOS)}")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.only is None:
        args.only = ",".join(s for s in SCENARIOS if not (args.short and s == "peers"))
    if not shutil.which("wrk") and "kills" in args.only:
        print("chaos: wrk not found (apt-get install -y wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="start-all-chaos-"))
    results: dict = {}
    for scenario in args.only.split(","):
        started = time.monotonic()
        results[scenario] = globals()[f"scenario_{scenario}"](args, tmp)
        print(f"chaos: {scenario} done in {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
    mode = "short" if args.short else "full"
    print(f"Chaos suite ({mode}), {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs:\n")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results,
                                               "zero": zero_figures(results)}, indent=2))
    if os.environ.get("CHAOS_KEEP"):
        print(f"chaos: logs and marks kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
