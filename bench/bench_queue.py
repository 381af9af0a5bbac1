"""Queue benchmark: the native worker against its peers, in one run, on the same PostgreSQL.

    .venv/bin/python bench/bench_queue.py [--n 10000] [--slow-n 1000] [--samples 200]
                                          [--only native,pgqueuer,procrastinate,celery,django-q2]
    .venv/bin/python bench/bench_queue.py --only native,native-django-tasks,django-tasks-db
    .venv/bin/python bench/bench_queue.py --only native,baseline,native,baseline \
                                          --baseline /path/to/other/checkout

Per queue: enqueue rate (one call per job, and batched), drain throughput of N no-op jobs with
1 and 4 workers (threads for the native worker, processes for Celery and django-q2, async
concurrency for procrastinate, processes for pgqueuer), idle pickup latency enqueue -> task
start (p50/p99), and the native worker's idle RSS. Django's task API runs the same @task code
on the native backend (native-django-tasks: one native_worker, 1 or 4 threads) and on
django-tasks-db (1 or 4 `db_worker` processes, its default 1 s poll). Peers that are slow
(procrastinate, django-q2, django-tasks-db) drain --slow-n jobs to keep the run short; the
table says which N each row used. A peer that cannot run is shown as "n/a: reason". Each peer
runs in its own subprocess, one after another. Throughput is measured from the queue's own
timestamps (first start to last finish) where it keeps them, else from the tasks' own clock.
Prints a markdown table; exits 0.

`--baseline PATH` adds the peer `baseline`: the same native measurement, run by another
checkout of this project (PATH/.venv/bin/python, PATH on PYTHONPATH, its own database), to
compare two versions in one run. A peer named twice in --only runs twice (rows "native #2"):
alternating runs keep a loaded machine's drift out of the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
from benchkit import wait_until

ROOT = Path(__file__).resolve().parent.parent
BASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PEERS = ["native", "graphile-worker", "pgqueuer-asyncpg", "pgqueuer-psycopg", "procrastinate",
         "celery", "django-q2", "native-django-tasks", "django-tasks-db", "pickup-floor"]
CHUNK = 1000  # jobs per batched enqueue call


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency_summary(samples: list[float]) -> dict:
    ms = [s * 1000 for s in samples]
    return {"p50": statistics.median(ms), "p99": percentile(ms, 0.99)}


def latency_rounds(samples: int, budget: float = 15.0):
    """Up to `samples` rounds, cut short after `budget` seconds (a slow poller would
    otherwise take minutes); at least 20."""
    deadline = time.monotonic() + budget
    for i in range(samples):
        if i >= 20 and time.monotonic() > deadline:
            return
        yield i


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class DbCpu:
    """CPU seconds spent by the PostgreSQL backends serving one database while it is entered
    (`with DbCpu(url) as meter:`, then meter.seconds). Backends are sampled every 20 ms, so one
    that exits keeps what was last seen of it; one born meanwhile counts from zero. The
    server's shared processes (WAL writer, checkpointer) are left out: the same for every
    peer. What a drain costs the database is what a shared free-tier PostgreSQL pays, and
    CPU time is steadier than wall time on a busy machine. The bench's own queries on that
    database count too (native's completion count, graphile-worker's empty-table check): a few
    ms per drain. Only for a database on this machine (it reads /proc); otherwise the figure
    is left out."""

    def __init__(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        # "postgres: [cluster_name: ]user database host(port) state"
        self._backend = re.compile(rf"^postgres: (\S+: )?\S+ {re.escape(name)} ")
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.seconds: float | None = None  # set on exit

    def _sample(self, first: bool = False) -> None:
        for proc in psutil.process_iter(["cmdline"]):
            try:
                line = " ".join(proc.info["cmdline"] or ())
                if not self._backend.match(line):
                    continue
                times = proc.cpu_times()
            except psutil.Error:
                continue
            used = times.user + times.system
            self._last[proc.pid] = used
            self._first.setdefault(proc.pid, used if first else 0.0)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self) -> DbCpu:
        self._sample(first=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        # None when no backend was seen: the database runs on another machine (or in a
        # container whose processes this one cannot read), so there is nothing to report
        self.seconds = (sum(used - self._first[pid] for pid, used in self._last.items())
                        if self._last else None)

    def per_job(self, jobs: int) -> float | None:
        """Microseconds of database CPU per job, or None (see __exit__)."""
        return None if self.seconds is None else self.seconds / jobs * 1e6


def peer_pickup_floor(args) -> dict:
    """The floor of a pickup that claims after its notification, on this machine, without any
    queue's code: one process, bare psycopg, a one-index table. An INSERT + pg_notify commits
    on one connection, the LISTEN connection wakes, a third connection claims the row (UPDATE
    ... FOR UPDATE SKIP LOCKED ... RETURNING), as native and every peer here do; sampled like
    the others (10 ms idle between jobs). Such a queue's pickup is this plus its own code."""
    import select

    import psycopg

    enqueue, listen, claim = (psycopg.connect(args.db, autocommit=True) for _ in range(3))
    enqueue.execute("DROP TABLE IF EXISTS pickup_floor")
    enqueue.execute("CREATE TABLE pickup_floor (id bigserial PRIMARY KEY, "
                    "waiting boolean NOT NULL DEFAULT true, payload jsonb)")
    enqueue.execute("CREATE INDEX ON pickup_floor (id) WHERE waiting")
    listen.execute("LISTEN pickup_floor")
    samples = []
    for _ in latency_rounds(args.samples):
        time.sleep(0.01)
        sent = time.perf_counter()
        enqueue.execute("WITH job AS (INSERT INTO pickup_floor (payload) VALUES ('{}') "
                        "RETURNING 1) SELECT pg_notify('pickup_floor', 'default')")
        select.select([listen.pgconn.socket], [], [], 5)
        listen.pgconn.consume_input()
        while listen.pgconn.notifies():
            pass
        claim.execute("UPDATE pickup_floor SET waiting = false WHERE id = (SELECT id FROM "
                      "pickup_floor WHERE waiting ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                      "RETURNING id, payload").fetchall()
        samples.append(time.perf_counter() - sent)
    enqueue.execute("DROP TABLE pickup_floor")
    return {"n": "-", **latency_summary(samples)}


# --- native -------------------------------------------------------------------------------
NATIVE_APP = """
import time
from supervisor.native import Celery
app = Celery("benchapp", broker={url!r})

@app.task
def noop():
    return None

@app.task
def stamp(sent=None):
    now = time.time()
    if sent is not None:  # the pickup's sample, read by the bench from this worker's stdout
        print(now - sent, flush=True)
    return now
"""


def peer_native(args) -> dict:
    import psycopg

    tmp = Path(tempfile.mkdtemp())
    (tmp / "benchapp.py").write_text(NATIVE_APP.format(url=args.db))
    sys.path.insert(0, str(tmp))
    import benchapp

    from supervisor.native import group

    db = psycopg.connect(args.db, autocommit=True)
    out: dict = {"n": args.n}
    single = min(args.n, 2000)
    benchapp.noop.delay()  # connect + migrate outside the timing
    t = time.perf_counter()
    for _ in range(single):
        benchapp.noop.delay()
    out["enqueue_single"] = single / (time.perf_counter() - t)

    def fill() -> float:
        db.execute("TRUNCATE start_all.jobs")
        t = time.perf_counter()
        for start in range(0, args.n, CHUNK):
            group(benchapp.noop.s() for _ in range(min(CHUNK, args.n - start))).apply_async()
        return args.n / (time.perf_counter() - t)

    # the checkout being measured (another one for the `baseline` peer)
    root = os.environ.get("BENCH_NATIVE_ROOT", str(ROOT))
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{root}"}

    def start(concurrency: int, stdout: int | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.native", "worker", "-A", "benchapp:app", "-c",
             str(concurrency), "-l", "WARNING"], cwd=tmp, env=env, stdout=stdout, text=True,
        )
        return proc

    for concurrency in (1, 4):
        rate = fill()
        out.setdefault("enqueue_batch", rate)
        with DbCpu(args.db) as meter:
            worker = start(concurrency)
            # every 0.2 s: the figure comes from the rows' own timestamps, and a count every
            # 50 ms scanned the table while the drain was measured (graphile-worker's and
            # pgqueuer's drains count in their own process)
            wait_until(lambda: db.execute(
                "SELECT count(*) FROM start_all.jobs WHERE status = 'SUCCESS'"
            ).fetchone()[0] >= args.n, 300, "native drain", every=0.2)
        out[f"db_cpu_{concurrency}"] = meter.per_job(args.n)
        span = db.execute(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM start_all.jobs"
        ).fetchone()[0]
        out[f"tput_{concurrency}"] = args.n / float(span)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)

    db.execute("TRUNCATE start_all.jobs")
    # the task prints each sample and the bench reads the worker's stdout, as for pgqueuer: a
    # result.get() here polled the database from the moment of the enqueue, its queries
    # competing with the claim being measured (0.2-1 ms of the p50 on a loaded machine)
    worker = start(4, stdout=subprocess.PIPE)
    benchapp.stamp.delay().get(timeout=30)  # worker up
    time.sleep(1.0)
    samples = []
    for _ in latency_rounds(args.samples):
        benchapp.stamp.delay(time.time())
        samples.append(float(worker.stdout.readline()))
        time.sleep(0.01)  # idle between jobs
    out.update(latency_summary(samples))
    time.sleep(2.0)
    out["rss"] = rss_mib(worker.pid)
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    return out


# --- pgqueuer -----------------------------------------------------------------------------
PGQ_DRIVER = os.environ.get("BENCH_PGQ_DRIVER", "psycopg")


async def _pgq_connect(url: str, listener: bool = False):
    """A pgqueuer Queries on its fastest driver (asyncpg) or on psycopg, per BENCH_PGQ_DRIVER;
    `listener`: for a worker (it LISTENs)."""
    from pgqueuer import Queries

    if PGQ_DRIVER == "asyncpg":
        import asyncpg
        from pgqueuer import AsyncpgDriver

        conn = await asyncpg.connect(url)
        return conn, Queries(AsyncpgDriver(conn))
    import psycopg
    from pgqueuer import PsycopgDriver

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    if not listener:
        return conn, Queries(PsycopgDriver(conn))
    # psycopg's notifies() holds the connection's lock while it waits (pgqueuer waits 1 s at a
    # time), so on ONE connection every dequeue after a NOTIFY queues behind the watcher's next
    # 1 s wait: the ~1,000 ms "pickup" this bench used to report. A worker gets the LISTEN on a
    # connection of its own (asyncpg has no such lock: one connection is fine there).
    listen = await psycopg.AsyncConnection.connect(url, autocommit=True)
    return conn, Queries(_SplitDriver(PsycopgDriver(conn), PsycopgDriver(listen)))


class _SplitDriver:
    """A pgqueuer driver: queries on one psycopg connection, LISTEN on another."""

    def __init__(self, queries, listener) -> None:
        self._queries, self._listener = queries, listener

    def __getattr__(self, name: str):
        return getattr(self._queries, name)

    async def add_listener(self, channel, callback) -> None:
        await self._listener.add_listener(channel, callback)

    async def remove_listener(self, channel, callback) -> None:
        await self._listener.remove_listener(channel, callback)

    async def __aenter__(self):
        await self._listener.__aenter__()
        await self._queries.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._queries.__aexit__(*exc)
        await self._listener.__aexit__(*exc)


async def _pgq_worker(url: str) -> dict:
    """One pgqueuer worker process in drain mode: exits when the queue is empty."""
    from pgqueuer import QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    _, queries = await _pgq_connect(url, listener=True)
    qm = QueueManager(queries)
    seen = {"first": None, "last": None, "count": 0}

    @qm.entrypoint("noop")
    async def noop(job) -> None:
        now = time.time()
        seen["first"] = seen["first"] or now
        seen["last"] = now
        seen["count"] += 1

    await qm.run(mode=QueueExecutionMode.drain, batch_size=10)
    return seen


def peer_pgqueuer(args) -> dict:
    async def main() -> dict:
        conn, queries = await _pgq_connect(args.db)
        try:
            await queries.install()
        except Exception:
            pass  # already installed
        out: dict = {"n": args.n}
        single = min(args.n, 2000)
        t = time.perf_counter()
        for _ in range(single):
            await queries.enqueue("noop", None)
        out["enqueue_single"] = single / (time.perf_counter() - t)
        for concurrency in (1, 4):
            await queries.clear_queue()
            t = time.perf_counter()
            for start in range(0, args.n, CHUNK):
                k = min(CHUNK, args.n - start)
                await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
            out.setdefault("enqueue_batch", args.n / (time.perf_counter() - t))
            with DbCpu(args.db) as meter:
                procs = [subprocess.Popen([sys.executable, __file__, "--peer",
                                           "pgqueuer-worker", "--db", args.db],
                                          stdout=subprocess.PIPE, text=True)
                         for _ in range(concurrency)]
                parts = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1])
                         for p in procs]
            out[f"db_cpu_{concurrency}"] = meter.per_job(args.n)
            parts = [p for p in parts if p["count"]]
            done = sum(p["count"] for p in parts)
            span = max(p["last"] for p in parts) - min(p["first"] for p in parts)
            out[f"tput_{concurrency}"] = done / span
        out.update(await _pgq_latency(args))
        await conn.close()
        out["driver"] = PGQ_DRIVER
        return out

    return asyncio.run(main())


async def _pgq_latency_worker(url: str) -> dict:
    """A continuous pgqueuer worker process printing, per job, now - the enqueue time."""
    from pgqueuer import QueueManager

    _, queries = await _pgq_connect(url, listener=True)
    qm = QueueManager(queries)

    @qm.entrypoint("stamp")
    async def stamp(job) -> None:
        print(time.time() - float(job.payload.decode()), flush=True)

    await qm.run()
    return {}


async def _pgq_latency(args) -> dict:
    _, producer = await _pgq_connect(args.db)
    worker = subprocess.Popen([sys.executable, __file__, "--peer", "pgqueuer-latency-worker",
                               "--db", args.db], stdout=subprocess.PIPE, text=True)
    try:
        await producer.enqueue("stamp", str(time.time()).encode())
        worker.stdout.readline()  # the worker is up
        await asyncio.sleep(1.0)
        samples = []
        for _ in latency_rounds(args.samples):
            await producer.enqueue("stamp", str(time.time()).encode())
            samples.append(float(worker.stdout.readline()))
            await asyncio.sleep(0.01)
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
    return latency_summary(samples)


# --- graphile-worker (Node) ----------------------------------------------------------------
PEERS_DIR = ROOT / "bench" / ".peers"  # gitignored: npm installs graphile-worker here


def _graphile(url: str, *argv: object, timeout: float = 600) -> dict:
    modules = PEERS_DIR / "node_modules"
    if not (modules / "graphile-worker").is_dir():
        PEERS_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(PEERS_DIR), "--no-audit", "--no-fund",
                        "--silent", "graphile-worker"], check=True, timeout=600,
                       stdout=subprocess.DEVNULL)
    proc = subprocess.run(
        ["node", str(ROOT / "bench" / "graphile_peer.cjs"), url, *map(str, argv)],
        env={**os.environ, "NODE_PATH": str(modules)}, capture_output=True, text=True,
        timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["node failed"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer_graphile(args) -> dict:
    """graphile-worker tuned per its performance page (localQueue 500, completeJobBatchDelay
    0); the same jobs, concurrency and timing as the others: drain time from the first task's
    start (its own clock) to the moment its queue table is empty, that is the last completion
    committed, as native's ends with its last finish; batched enqueue with addJobs (1,000 per
    call)."""
    import psycopg

    db = psycopg.connect(args.db, autocommit=True)

    def clear() -> None:
        db.execute("TRUNCATE graphile_worker._private_jobs CASCADE")

    out: dict = {"n": args.n}
    out["enqueue_single"] = _graphile(args.db, "single", min(args.n, 2000))["rate"]
    for concurrency in (1, 4):
        clear()
        rate = _graphile(args.db, "batch", args.n)["rate"]
        out.setdefault("enqueue_batch", rate)
        with DbCpu(args.db) as meter:
            seen = _graphile(args.db, "drain", args.n, concurrency)
        out[f"db_cpu_{concurrency}"] = meter.per_job(args.n)
        out[f"tput_{concurrency}"] = seen["count"] / (seen["last"] - seen["first"])
    clear()
    out.update(latency_summary(_graphile(args.db, "latency", args.samples)["samples"]))
    return out


# --- procrastinate ------------------------------------------------------------------------
def _procrastinate_app(url: str):
    from procrastinate import App, PsycopgConnector

    return App(connector=PsycopgConnector(conninfo=url))


def peer_procrastinate(args) -> dict:
    app = _procrastinate_app(args.db)
    seen = {"first": None, "last": None, "count": 0}
    started: asyncio.Queue = asyncio.Queue()

    @app.task(name="noop")
    async def noop() -> None:
        now = time.time()
        seen["first"] = seen["first"] or now
        seen["last"] = now
        seen["count"] += 1

    @app.task(name="stamp")
    async def stamp() -> None:
        started.put_nowait(time.time())

    async def main() -> dict:
        n = args.slow_n
        out: dict = {"n": n}
        async with app.open_async():
            try:
                await app.schema_manager.apply_schema_async()
            except Exception:
                pass  # already there
            single = min(n, 1000)
            t = time.perf_counter()
            for _ in range(single):
                await noop.defer_async()
            out["enqueue_single"] = single / (time.perf_counter() - t)
            for concurrency in (1, 4):
                await app.connector.execute_query_async("DELETE FROM procrastinate_jobs")
                t = time.perf_counter()
                for start in range(0, n, CHUNK):
                    await noop.batch_defer_async(*[{}] * min(CHUNK, n - start))
                out.setdefault("enqueue_batch", n / (time.perf_counter() - t))
                seen.update(first=None, last=None, count=0)
                await app.run_worker_async(concurrency=concurrency, wait=False,
                                           install_signal_handlers=False, queues=["default"])
                out[f"tput_{concurrency}"] = seen["count"] / (seen["last"] - seen["first"])
            runner = asyncio.create_task(app.run_worker_async(
                concurrency=4, install_signal_handlers=False, queues=["default"]))
            await asyncio.sleep(1.0)
            samples = []
            for _ in latency_rounds(args.samples):
                t0 = time.time()
                await stamp.defer_async()
                samples.append(await asyncio.wait_for(started.get(), 30) - t0)
                await asyncio.sleep(0.01)
            runner.cancel()
            try:
                await runner
            except (asyncio.CancelledError, Exception):
                pass
            out.update(latency_summary(samples))
        return out

    return asyncio.run(main())


# --- celery + redis -----------------------------------------------------------------------
CELERY_APP = """
import time
import redis
from celery import Celery

app = Celery("benchcelery", broker={redis!r}, backend={redis!r})
app.conf.task_default_queue = {queue!r}
app.conf.worker_hijack_root_logger = False
r = redis.Redis.from_url({redis!r})
KEY = {queue!r}

@app.task(ignore_result=True)
def noop():
    now = time.time()
    p = r.pipeline()
    p.setnx(KEY + ":first", now)
    p.set(KEY + ":last", now)
    p.incr(KEY + ":count")
    p.execute()

@app.task
def stamp():
    return time.time()
"""


def peer_celery(args) -> dict:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp())
    (tmp / "benchcelery.py").write_text(CELERY_APP.format(redis=REDIS_URL, queue=queue))
    sys.path.insert(0, str(tmp))
    import benchcelery
    from celery import group

    n = args.n
    out: dict = {"n": n}
    single = min(n, 2000)
    t = time.perf_counter()
    for _ in range(single):
        benchcelery.noop.delay()
    out["enqueue_single"] = single / (time.perf_counter() - t)
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}

    def start(concurrency: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "benchcelery", "worker", "-c",
             str(concurrency), "-l", "WARNING", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-Q", queue], cwd=tmp, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    try:
        for concurrency in (1, 4):
            client.delete(queue, f"{queue}:first", f"{queue}:last", f"{queue}:count")
            t = time.perf_counter()
            for begin in range(0, n, CHUNK):
                group(benchcelery.noop.s() for _ in range(min(CHUNK, n - begin))).apply_async()
            out.setdefault("enqueue_batch", n / (time.perf_counter() - t))
            worker = start(concurrency)
            wait_until(lambda: int(client.get(f"{queue}:count") or 0) >= n, 300, "celery drain")
            span = float(client.get(f"{queue}:last")) - float(client.get(f"{queue}:first"))
            out[f"tput_{concurrency}"] = n / span
            worker.send_signal(signal.SIGQUIT)
            worker.wait(30)
        worker = start(4)
        benchcelery.stamp.delay().get(timeout=60)
        time.sleep(1.0)
        samples = []
        for _ in latency_rounds(args.samples):
            t0 = time.time()
            samples.append(benchcelery.stamp.delay().get(timeout=30) - t0)
            time.sleep(0.01)
        out.update(latency_summary(samples))
        worker.send_signal(signal.SIGQUIT)
        worker.wait(30)
    finally:
        client.delete(queue, f"{queue}:first", f"{queue}:last", f"{queue}:count")
    return out


# --- django-q2 (ORM broker) ---------------------------------------------------------------
def _django_q_setup(url: str, workers: int) -> None:
    import django
    from django.conf import settings

    parts = urlsplit(url)
    settings.configure(
        SECRET_KEY="bench-only",
        INSTALLED_APPS=["django.contrib.contenttypes", "django_q"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/"),
            "USER": parts.username or "postgres", "HOST": parts.hostname or "127.0.0.1",
            "PORT": str(parts.port or 5432), "CONN_MAX_AGE": None, "CONN_HEALTH_CHECKS": True,
        }},
        USE_TZ=True,
        Q_CLUSTER={"name": "bench", "workers": workers, "orm": "default", "timeout": 60,
                   "retry": 120, "save_limit": 0, "catch_up": False, "poll": 0.2},
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def peer_django_q(args) -> dict:
    out: dict = {"n": args.slow_n, "enqueue_batch": "n/a: no batch API"}
    for concurrency in (1, 4):
        proc = subprocess.run(
            [sys.executable, __file__, "--peer", "django-q2-run", "--db", args.db,
             "--slow-n", str(args.slow_n), "--samples", str(args.samples),
             "--concurrency", str(concurrency)],
            capture_output=True, text=True, timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1])
        part = json.loads(proc.stdout.strip().splitlines()[-1])
        out[f"tput_{concurrency}"] = part["tput"]
        for key in ("enqueue_single", "p50", "p99"):
            if key in part:
                out[key] = part[key]
    return out


def peer_django_q_run(args) -> dict:
    _django_q_setup(args.db, args.concurrency)
    from django.db.models import Max, Min
    from django_q.brokers import get_broker
    from django_q.cluster import Cluster
    from django_q.models import OrmQ, Success, Task
    from django_q.tasks import async_task, result

    n = args.slow_n
    out: dict = {}
    Task.objects.all().delete()
    OrmQ.objects.all().delete()
    if args.concurrency == 1:
        single = min(n, 1000)
        t = time.perf_counter()
        for _ in range(single):
            async_task("math.fabs", 1.0)
        out["enqueue_single"] = single / (time.perf_counter() - t)
        OrmQ.objects.all().delete()
    for _ in range(n):
        async_task("math.fabs", 1.0)
    from django.db import connections

    connections.close_all()  # the cluster forks: it must not inherit our connection
    cluster = Cluster(get_broker())
    cluster.start()
    try:
        wait_until(lambda: Success.objects.count() >= n, 600, "django-q2 drain", every=0.5)
        span = Success.objects.aggregate(a=Min("started"), b=Max("stopped"))
        out["tput"] = n / (span["b"] - span["a"]).total_seconds()
        if args.concurrency == 1:
            samples = []
            for _ in latency_rounds(min(args.samples, 50)):
                t0 = time.time()
                task_id = async_task("time.time")
                samples.append(result(task_id, wait=30000) - t0)
            out.update(latency_summary(samples))
    finally:
        cluster.stop()
    return out


# --- Django's task API: the native backend and django-tasks-db's db_worker ----------------
DJANGO_TASKS_SETTINGS = """
from urllib.parse import urlsplit
_db = urlsplit({url!r})
SECRET_KEY = "bench-only"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", {app!r}, "benchtasks"]
DATABASES = {{"default": {{
    "ENGINE": "django.db.backends.postgresql", "NAME": _db.path.lstrip("/"),
    "USER": _db.username or "postgres", "HOST": _db.hostname or "127.0.0.1",
    "PORT": str(_db.port or 5432), "CONN_MAX_AGE": None}}}}
TASKS = {{"default": {{"BACKEND": {backend!r}, "OPTIONS": {options!r}}}}}
LOGGING_CONFIG = None
"""
DJANGO_TASKS_TASKS = """
import time
try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

@task
def noop():
    return None

@task
def stamp():
    return time.time()
"""
DJANGO_TASKS_KINDS = {
    # peer -> (INSTALLED_APPS entry, BACKEND, OPTIONS, worker argv with {c} for concurrency)
    "native-django-tasks": ("supervisor.native.django",
                            "supervisor.native.django_tasks.NativeBackend",
                            "database_url", ["native_worker", "-c", "{c}", "-l", "WARNING"]),
    "django-tasks-db": ("django_tasks_db", "django_tasks_db.DatabaseBackend", None,
                        ["db_worker", "--no-startup-delay", "--no-reload", "--verbosity", "0"]),
}


def _django_tasks_project(peer: str, url: str) -> Path:
    app, backend, option, _ = DJANGO_TASKS_KINDS[peer]
    tmp = Path(tempfile.mkdtemp())
    (tmp / "benchtasks").mkdir()
    (tmp / "benchtasks" / "__init__.py").write_text("")
    (tmp / "benchtasks" / "tasks.py").write_text(DJANGO_TASKS_TASKS)
    options = {option: url} if option else {}
    (tmp / "benchsettings.py").write_text(
        DJANGO_TASKS_SETTINGS.format(url=url, app=app, backend=backend, options=options))
    (tmp / "manage.py").write_text(
        "import sys\nfrom django.core.management import execute_from_command_line\n"
        "execute_from_command_line(sys.argv)\n")
    return tmp


def peer_django_tasks(args) -> dict:
    """The same @task code on two backends: enqueue(), drain with 1 and 4 workers (native:
    threads of one native_worker; django-tasks-db: that many db_worker processes, one task
    at a time each), pickup latency enqueue -> task start (db_worker polls every second, its
    default)."""
    peer = args.peer
    native = peer == "native-django-tasks"
    tmp = _django_tasks_project(peer, args.db)
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}",
           "DJANGO_SETTINGS_MODULE": "benchsettings"}
    os.environ.update(DJANGO_SETTINGS_MODULE="benchsettings")
    sys.path.insert(0, str(tmp))
    import django

    django.setup()
    from benchtasks.tasks import noop, stamp
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    n = args.n if native else args.slow_n
    table = "start_all.jobs" if native else "django_tasks_database_dbtaskresult"
    done = "status = 'SUCCESS'" if native else "status = 'SUCCESSFUL'"
    start_col, end_col = ("started_at", "finished_at")
    out: dict = {"n": n, "enqueue_batch": "n/a: no batch API"}

    def sql(statement: str):
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchone() if cursor.description else None

    noop.enqueue()  # connect (and migrate the native schema) outside the timing
    sql(f"DELETE FROM {table}")
    single = min(n, 2000)
    t = time.perf_counter()
    for _ in range(single):
        noop.enqueue()
    out["enqueue_single"] = single / (time.perf_counter() - t)
    argv = DJANGO_TASKS_KINDS[peer][3]

    def start(concurrency: int) -> list[subprocess.Popen]:
        words = [w.format(c=concurrency) for w in argv]
        count = 1 if native else concurrency
        return [subprocess.Popen([sys.executable, "manage.py", *words], cwd=tmp, env=env,
                                 stdout=subprocess.DEVNULL) for _ in range(count)]

    def stop(workers: list[subprocess.Popen]) -> None:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)

    for concurrency in (1, 4):
        sql(f"DELETE FROM {table}")
        for _ in range(n):
            noop.enqueue()
        workers = start(concurrency)
        wait_until(lambda: sql(f"SELECT count(*) FROM {table} WHERE {done}")[0] >= n, 600,
                   f"{peer} drain", every=0.2)
        span = sql(f"SELECT extract(epoch FROM max({end_col}) - min({start_col})) FROM {table}")
        out[f"tput_{concurrency}"] = n / float(span[0])
        stop(workers)

    sql(f"DELETE FROM {table}")
    workers = start(1 if not native else 4)
    first = stamp.enqueue()
    wait_until(lambda: (first.refresh(), first.is_finished)[1], 60, "worker up", every=0.01)
    time.sleep(1.0)
    samples = []
    for _ in latency_rounds(min(args.samples, 50) if not native else args.samples):
        t0 = time.time()
        result = stamp.enqueue()
        wait_until(lambda r=result: (r.refresh(), r.is_finished)[1], 30, "pickup",
                   every=0.002)
        samples.append(result.return_value - t0)
        time.sleep(0.01)
    out.update(latency_summary(samples))
    stop(workers)
    return out


# --- driver -------------------------------------------------------------------------------
RUNNERS = {
    "native": peer_native,
    "pgqueuer-asyncpg": peer_pgqueuer,
    "pgqueuer-psycopg": peer_pgqueuer,
    "procrastinate": peer_procrastinate,
    "celery": peer_celery,
    "django-q2": peer_django_q,
    "native-django-tasks": peer_django_tasks,
    "django-tasks-db": peer_django_tasks,
    "graphile-worker": peer_graphile,
    "pickup-floor": peer_pickup_floor,
    "django-q2-run": peer_django_q_run,
    "pgqueuer-worker": lambda args: asyncio.run(_pgq_worker(args.db)),
    "pgqueuer-latency-worker": lambda args: asyncio.run(_pgq_latency_worker(args.db)),
}


def fmt(value, unit: str = "", digits: int = 0) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def versus_baseline(results: dict[str, dict]) -> list[str]:
    """This checkout against --baseline's: medians over the repeated runs of each."""
    mine, theirs = runs_of(results, "native"), runs_of(results, "baseline")
    if not (mine and theirs):
        return []
    parts = []
    for field, label in (("enqueue_single", "enqueue single"),
                         ("enqueue_batch", "enqueue batched"), ("tput_1", "1 worker"),
                         ("tput_4", "4 workers"), ("db_cpu_1", "database CPU per job"),
                         ("p50", "pickup p50"), ("rss", "idle RSS")):
        a, b = median_of(mine, field), median_of(theirs, field)
        if a is not None and b:
            parts.append(f"{label} {a / b:.2f}x")
    return [f"native vs baseline, medians of {len(mine)} and {len(theirs)} run(s) (>1: this "
            f"checkout's figure is higher): " + ", ".join(parts)]


def runs_of(results: dict[str, dict], peer: str) -> list[dict]:
    """Every run of `peer` that worked (rows "peer", "peer #2", ...)."""
    return [r for key, r in results.items() if key.split(" #")[0] == peer and "error" not in r]


def median_of(runs: list[dict], field: str) -> float | None:
    values = [r[field] for r in runs if isinstance(r.get(field), (int, float))]
    return statistics.median(values) if values else None


def pair_ratios(results: dict[str, dict], mine: str, theirs: str, field: str) -> list[float]:
    """Run "mine #k" against run "theirs #k" (alternating runs), where both worked: the
    spread that a median hides."""
    ratios = []
    for key, a in results.items():
        name, sep, k = key.partition(" #")
        b = results.get(theirs + sep + k) if name == mine else None
        if b and isinstance(a.get(field), (int, float)) and isinstance(b.get(field), (int, float)) \
                and b[field]:
            ratios.append(a[field] / b[field])
    return ratios


def goals(results: dict[str, dict]) -> list[str]:
    """The native worker's goals, each from the medians of every run of the peers it compares
    (a single run's ratio moves by a third on a busy machine)."""
    native = runs_of(results, "native")
    if not native:
        return []

    def ratio(field: str, peer: str) -> str:
        theirs = median_of(runs_of(results, peer), field)
        mine = median_of(native, field)
        return "n/a" if not (theirs and mine) else f"{mine / theirs:.2f}x"

    counts = {peer: len(runs_of(results, peer)) for peer in
              ("native", "graphile-worker", "pgqueuer-asyncpg", "pickup-floor")}
    ran = ", ".join(f"{peer} {n}" for peer, n in counts.items() if n)
    lines = [f"goals, from medians (runs: {ran}):"]
    if counts["graphile-worker"]:
        lines.append(f"  drain vs graphile-worker (tuned): {ratio('tput_1', 'graphile-worker')} "
                     f"with 1 worker (goal >= 1.2x), {ratio('tput_4', 'graphile-worker')} with "
                     f"4; database CPU per job {ratio('db_cpu_1', 'graphile-worker')} "
                     "graphile-worker's (1 worker, lower is better)")
        pairs = pair_ratios(results, "native", "graphile-worker", "tput_1")
        if len(pairs) > 1:
            lines.append("    1 worker, run by run (native #k / graphile-worker #k): "
                         + ", ".join(f"{r:.2f}x" for r in pairs))
    if counts["pgqueuer-asyncpg"]:
        lines.append(f"  drain vs pgqueuer-asyncpg: {ratio('tput_1', 'pgqueuer-asyncpg')} with 1 "
                     f"worker (goal >= 2x); batched enqueue "
                     f"{ratio('enqueue_batch', 'pgqueuer-asyncpg')} (goal >= 1.0x)")
    pickup = median_of(native, "p50")
    floor = median_of(runs_of(results, "pickup-floor"), "p50")
    lines.append(f"  pickup p50 {pickup:.2f} ms (goal <= 2 ms)"
                 + (f"; this machine's floor (pickup-floor) {floor:.2f} ms" if floor else ""))
    rss = median_of(native, "rss")
    if rss:
        lines.append(f"  idle RSS with 4 threads {rss:.1f} MiB (goal <= 40 MiB)")
    dq = median_of(runs_of(results, "django-q2"), "tput_1")
    if dq:
        lines.append(f"  1-worker drain vs django-q2 ORM: {median_of(native, 'tput_1') / dq:.0f}x "
                     "(goal >= 20x)")
    return lines


def table(results: dict[str, dict]) -> str:
    rows = [
        "| queue | N | enqueue/s (single) | enqueue/s (batched) | jobs/s, 1 worker | "
        "jobs/s, 4 workers | DB CPU/job, 1 worker | pickup p50 | pickup p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for peer, r in results.items():
        if "error" in r:
            rows.append(f"| {peer} | n/a: {r['error']} |  |  |  |  |  |  |  |")
            continue
        n = r.get("n", "-")
        rows.append(
            f"| {peer} | {n if isinstance(n, str) else f'{n:,}'} | "
            f"{fmt(r.get('enqueue_single'))} | {fmt(r.get('enqueue_batch'))} | "
            f"{fmt(r.get('tput_1'))} | {fmt(r.get('tput_4'))} | "
            f"{fmt(r.get('db_cpu_1'), ' us', 1)} "
            f"| {fmt(r.get('p50'), ' ms', 2)} | {fmt(r.get('p99'), ' ms', 1)} |"
        )
    lines = ["\n".join(rows), ""]
    lines.extend(goals(results))
    lines.extend(versus_baseline(results))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="no-op jobs per drain")
    parser.add_argument("--slow-n", type=int, default=1_000,
                        help="jobs per drain for the slow peers (procrastinate, django-q2)")
    parser.add_argument("--samples", type=int, default=200, help="pickup latency samples")
    parser.add_argument("--only", default=",".join(PEERS))
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (with its own .venv): adds the peer `baseline`")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.peer:  # inside a peer's subprocess
        print(json.dumps(RUNNERS[args.peer](args), default=str), flush=True)
        return 0

    import psycopg

    load_before = os.getloadavg()[0]
    name = f"bench_queue_{os.getpid()}"
    admin = psycopg.connect(BASE_URL, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    db_url = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{name}"))
    results: dict[str, dict] = {}
    peers = [p.strip() for p in args.only.split(",") if p.strip()]
    if "baseline" in peers and args.baseline is None:
        print("bench_queue: the peer baseline needs --baseline PATH (another checkout)",
              file=sys.stderr)
        return 2
    if args.baseline is not None:
        python = args.baseline.resolve() / ".venv" / "bin" / "python"
        if not python.exists():
            print(f"bench_queue: --baseline {args.baseline}: no .venv/bin/python there",
                  file=sys.stderr)
            return 2
        if "baseline" not in peers:
            peers.append("baseline")
        admin.execute(f'CREATE DATABASE "{name}_baseline"')  # its schema may differ
    try:
        for peer in peers:
            started = time.monotonic()
            print(f"running {peer} ...", file=sys.stderr, flush=True)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            if peer.startswith("pgqueuer-"):
                env["BENCH_PGQ_DRIVER"] = peer.split("-", 1)[1]
            python, runs, url = sys.executable, peer, db_url
            if peer == "baseline":
                root = args.baseline.resolve()
                python, runs = str(root / ".venv" / "bin" / "python"), "native"
                url = f"{db_url}_baseline"
                env.update(PYTHONPATH=str(root), BENCH_NATIVE_ROOT=str(root))
            proc = subprocess.run(
                [python, __file__, "--peer", runs, "--db", url, "--n", str(args.n),
                 "--slow-n", str(args.slow_n), "--samples", str(args.samples)],
                capture_output=True, text=True, timeout=900, env=env,
            )
            seen = sum(1 for key in results if key.split(" #")[0] == peer)
            key = f"{peer} #{seen + 1}" if seen else peer
            if proc.returncode == 0:
                results[key] = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                reason = (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]
                results[key] = {"error": reason}
            print(f"  {peer}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP DATABASE IF EXISTS "{name}_baseline" WITH (FORCE)')
        admin.close()
    print(table(results))
    print(f"\n(this run, on this machine: {os.cpu_count()} CPUs, load average {load_before:.1f} "
          f"before and {os.getloadavg()[0]:.1f} after, PostgreSQL and Redis on localhost; "
          f"command: {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
