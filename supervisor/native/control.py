"""`app.control`: revoke, purge and inspect() across processes, through the database.

Every worker publishes its state (running and prefetched tasks, counters) into its row of
start_all.workers with each heartbeat. inspect() takes a request number, wakes the workers
with NOTIFY start_all_control, and waits (up to `timeout`, 1 s as in Celery) until every live
worker has published a state at least that fresh. A worker that does not answer in time is
left out, as Celery leaves out a worker that does not reply; workers in poll-only mode (no
LISTEN, e.g. behind a transaction pooler, or SQLite) answer with their heartbeat instead.

The worker side is `worker_state(worker)`: the worker imports this module, never the reverse.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

NOTIFY_CONTROL = "start_all_control"

ASK = """
SELECT n, pg_notify('start_all_control', n::text)
FROM (SELECT nextval('start_all.inspect_requests') AS n) AS r
"""
# live = seen within three heartbeats
STATES = """
SELECT id, hostname, pid, state, answered FROM start_all.workers
WHERE last_seen > now() - make_interval(secs => %s) ORDER BY started_at, id
"""
PUBLISH = """
UPDATE start_all.workers
SET state = %s, answered = (SELECT CASE WHEN is_called THEN last_value ELSE 0 END
                            FROM start_all.inspect_requests)
WHERE id = %s
"""
SCHEDULED = """
SELECT task_id, name, queue, priority, args, kwargs, run_at FROM start_all.jobs
WHERE status IN ('PENDING', 'RETRY') AND run_at > now() ORDER BY run_at, id LIMIT 1000
"""
PURGE = "DELETE FROM start_all.jobs WHERE status IN ('PENDING', 'RETRY')"
PURGE_QUEUES = PURGE + " AND queue = ANY(%s)"


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch else None


def worker_state(worker: Any) -> str:
    """The JSON a worker publishes: what inspect() shows (worker side, called by the loop)."""
    now_mono, now_wall = time.monotonic(), time.time()
    with worker.lock:
        running = list(worker.running.values())
        held = list(worker.held.values())
    running_ids = {j.id for j in running}

    def info(job: Any, started: bool) -> dict:
        return {
            "id": job.task_id, "name": job.name, "type": job.name, "args": job.args,
            "kwargs": job.kwargs, "hostname": worker.nodename,
            "time_start": now_wall - (now_mono - job.started) if started else None,
            "acknowledged": True, "worker_pid": worker.pool.pid_of(job) if started else None,
            "delivery_info": {"routing_key": job.queue, "priority": job.priority,
                              "redelivered": False},
        }

    state = {
        "nodename": worker.nodename,
        "active": [info(j, True) for j in running],
        "reserved": [info(j, False) for j in held if j.id not in running_ids],
        "registered": sorted(n for n in worker.app.tasks if not n.startswith("celery.")),
        "queues": [{"name": q, "routing_key": q} for q in worker.queues],
        "stats": {
            "pid": os.getpid(), "uptime": int(now_mono - worker.started_mono),
            "total": dict(worker.totals),
            "pool": {"implementation": worker.pool.kind, "max-concurrency": worker.concurrency,
                     "processes": worker.pool.pids() or [os.getpid()]},
            "prefetch_count": worker.capacity,
            "broker": {"transport": worker.db.dialect},
        },
    }
    return json.dumps(state, default=str)


class Inspect:
    """`app.control.inspect()`: each method returns {nodename: reply} or None (no worker)."""

    def __init__(self, app: Any, destination: list[str] | str | None = None,
                 timeout: float = 1.0, **_options: Any) -> None:
        self.app = app
        self.destination = [destination] if isinstance(destination, str) else destination
        self.timeout = float(timeout)

    # --- reading the workers' states --------------------------------------------------------
    def _states(self) -> dict[str, dict]:
        store = self.app.backend
        heartbeat = float(self.app.conf.native_heartbeat_interval)
        if _is_sqlite(store):
            return self._select(_sqlite_states(store, 3 * heartbeat))
        request = store.execute(ASK)[0][0]
        deadline = time.monotonic() + self.timeout
        while True:  # until every live worker answered, or the timeout
            rows = store.execute(STATES, (3 * heartbeat,))
            if all(r[4] >= request for r in rows) or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return self._select(rows)  # one that did not answer in time: its heartbeat state

    def _select(self, rows: list) -> dict[str, dict]:
        states: dict[str, dict] = {}
        for _id, hostname, pid, state, _answered in rows:
            if state is None:
                continue
            state = json.loads(state) if isinstance(state, str) else state
            name = state.get("nodename") or f"celery@{hostname}"
            if name in states:  # two workers on one host without -n: tell them apart
                name = f"{name}:{pid}"
            if self.destination and name not in self.destination:
                continue
            states[name] = state
        return states

    def _each(self, key: str) -> dict | None:
        states = self._states()
        return {name: state[key] for name, state in states.items()} or None

    # --- Celery's inspect methods -----------------------------------------------------------
    def ping(self) -> dict | None:
        return {name: {"ok": "pong"} for name in self._states()} or None

    def active(self, safe: bool | None = None) -> dict | None:
        return self._each("active")

    def reserved(self, safe: bool | None = None) -> dict | None:
        return self._each("reserved")

    def stats(self) -> dict | None:
        return self._each("stats")

    def registered(self, *taskinfoitems: Any) -> dict | None:
        return self._each("registered")

    registered_tasks = registered

    def active_queues(self) -> dict | None:
        return self._each("queues")

    def scheduled(self, safe: bool | None = None) -> dict | None:
        """Waiting jobs with a future ETA. They stay in the database until due (no worker
        holds them), so they are listed under the first live worker consuming their queue."""
        states = self._states()
        if not states:
            return None
        replies: dict[str, list] = {name: [] for name in states}
        if _is_sqlite(self.app.backend):
            rows = _sqlite_scheduled(self.app.backend)
        else:
            rows = self.app.backend.execute(SCHEDULED)
        for task_id, name, queue, priority, args, kwargs, run_at in rows:
            owner = next((n for n, s in states.items()
                          if any(q["name"] == queue for q in s.get("queues", []))), None)
            if owner is None:
                continue
            eta = run_at if isinstance(run_at, str) else (
                _iso(run_at) if isinstance(run_at, float) else run_at.isoformat())
            replies[owner].append({
                "eta": eta, "priority": priority,
                "request": {"id": task_id, "name": name, "type": name, "args": args,
                            "kwargs": kwargs, "hostname": owner,
                            "delivery_info": {"routing_key": queue, "priority": priority}},
            })
        return replies

    def query_task(self, *ids: Any) -> dict | None:
        """{nodename: {task_id: [state, info]}} for ids a worker holds: 'active' (running) or
        'reserved' (prefetched), as in Celery."""
        wanted = {str(i) for group in ids for i in ([group] if isinstance(group, str)
                                                    else group)}
        replies = {}
        for name, state in self._states().items():
            found = {t["id"]: [kind, t] for kind in ("active", "reserved")
                     for t in state.get(kind, []) if t["id"] in wanted}
            replies[name] = found
        return replies or None

    def revoked(self) -> dict | None:
        raise NotImplementedError(
            "inspect().revoked(): revocations live in the jobs table (status REVOKED); "
            "query AsyncResult(id).state instead")


class Control:
    """`app.control` (Celery's names): revoke, purge, inspect."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def revoke(self, task_id: str | list[str], terminate: bool = False,
               signal: Any = None, destination: Any = None, reply: bool = False,
               timeout: float = 1.0, **_ignored: Any) -> list[dict] | None:
        """terminate=True: a running task is killed (prefork: its child gets SIGKILL whatever
        `signal` says; threads: TaskRevokedError is raised in it). The revoke is one statement
        in the database, done when this returns; reply=True answers, as Celery's, one reply
        per live worker."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.backend.revoke(ids, terminate=terminate)
        if not reply:
            return None
        workers = Inspect(self.app, destination=destination, timeout=timeout).ping() or {}
        return [{name: {"ok": f"tasks {', '.join(ids)} flagged as revoked"}} for name in workers]

    def revoke_by_stamped_headers(self, headers: dict, destination: Any = None,
                                  terminate: bool = False, signal: Any = None,
                                  reply: bool = False, timeout: float = 1.0,
                                  **_ignored: Any) -> list[dict] | None:
        """Revoke the tasks stamped with these values ({stamp: value or [values]}), those
        waiting or running now and those sent later (see stamping.py)."""
        from supervisor.native import stamping

        stamping.revoke_by_stamped_headers(self.app, headers, terminate=terminate)
        if not reply:
            return None
        done = "revoked" if terminate else "flagged as revoked, but not terminated"
        workers = Inspect(self.app, destination=destination, timeout=timeout).ping() or {}
        return [{name: {"ok": f"headers {headers} {done}"}} for name in workers]

    def inspect(self, destination: list[str] | str | None = None, timeout: float = 1.0,
                **options: Any) -> Inspect:
        return Inspect(self.app, destination=destination, timeout=timeout, **options)

    def purge(self, connection: Any = None, queues: list[str] | None = None) -> int:
        """Discard every waiting task (all queues, or `queues`); returns how many."""
        return purge(self.app, queues)

    def ping(self, destination: list[str] | str | None = None, timeout: float = 1.0,
             **_options: Any) -> list[dict]:
        replies = Inspect(self.app, destination=destination, timeout=timeout).ping() or {}
        return [{name: reply} for name, reply in replies.items()]


def _unsupported(name: str, why: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"app.control.{name}(): {why}")
    method.__name__ = name
    return method


_NO_BROADCAST = "the native worker has no broadcast remote control (only revoke, purge, inspect)"
for _name, _why in {
    "rate_limit": "set rate_limit on the task; it holds across all workers (native/ratelimit.py)",
    "time_limit": "set time_limit/soft_time_limit on the task or in apply_async",
    "pool_grow": "restart the worker with another --concurrency",
    "pool_shrink": "restart the worker with another --concurrency",
    "autoscale": "restart the worker with another --concurrency",
    "broadcast": _NO_BROADCAST, "shutdown": _NO_BROADCAST, "pool_restart": _NO_BROADCAST,
    "add_consumer": "start a worker with -Q", "cancel_consumer": "start a worker with -Q",
    "enable_events": "there is no event stream; read the jobs table or use signals",
    "disable_events": "there is no event stream; read the jobs table or use signals",
}.items():
    setattr(Control, _name, _unsupported(_name, _why))


def purge(app: Any, queues: list[str] | None = None) -> int:
    """Delete every waiting (PENDING/RETRY) job, or those of `queues`; returns how many."""
    store = app.backend
    if _is_sqlite(store):
        return _sqlite_purge(store, queues)
    if queues:
        rows = store.execute(PURGE_QUEUES + " RETURNING 1", (list(queues),))
    else:
        rows = store.execute(PURGE + " RETURNING 1")
    return len(rows)


# --- SQLite (development): no NOTIFY, states come with the heartbeat ---------------------------
def _is_sqlite(store: Any) -> bool:
    return type(store).__name__ == "SqliteStore"


def _sqlite_states(store: Any, within: float) -> list:
    return store.db.run(lambda conn: conn.execute(
        "SELECT id, hostname, pid, state, answered FROM start_all_workers "
        "WHERE last_seen > ? ORDER BY started_at, id", (time.time() - within,)).fetchall())


def _sqlite_scheduled(store: Any) -> list:
    rows = store.db.run(lambda conn: conn.execute(
        "SELECT task_id, name, queue, priority, args, kwargs, run_at FROM start_all_jobs "
        "WHERE status IN ('PENDING', 'RETRY') AND run_at > ? ORDER BY run_at, id LIMIT 1000",
        (time.time(),)).fetchall())
    return [(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6]) for r in rows]


def _sqlite_purge(store: Any, queues: list[str] | None) -> int:
    def work(conn: Any) -> int:
        if queues:
            marks = ",".join("?" * len(queues))
            return conn.execute("DELETE FROM start_all_jobs WHERE status IN ('PENDING', "
                                f"'RETRY') AND queue IN ({marks})", list(queues)).rowcount
        return conn.execute(
            "DELETE FROM start_all_jobs WHERE status IN ('PENDING', 'RETRY')").rowcount

    return store.db.transaction(work)


