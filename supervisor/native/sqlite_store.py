"""SQLite storage for development: `broker="sqlite:///queue.sqlite3"` (one machine).

Same rows and states as on PostgreSQL, same fenced finish and leases, but SQLite serialises
writers and has no LISTEN/NOTIFY: the worker polls (0.5 s by default), revocations reach a
running task at its next heartbeat, and one worker process is the intended setup.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from supervisor.native.job import Job
from supervisor.native.result import BackendMeta
from supervisor.native.serial import loads

FINISHED = ("SUCCESS", "FAILURE", "REVOKED")

ENQUEUE = """
INSERT INTO start_all_jobs (task_id, name, queue, priority, args, kwargs, options, run_at,
                            expires_at, ignore_result, retries, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET
    name = excluded.name, queue = excluded.queue, priority = excluded.priority,
    status = 'PENDING', args = excluded.args, kwargs = excluded.kwargs,
    options = excluded.options, run_at = excluded.run_at, expires_at = excluded.expires_at,
    ignore_result = excluded.ignore_result, retries = excluded.retries, recoveries = 0,
    orphaned = 0, attempt_started = 0, revoke = NULL, result = NULL, traceback = NULL,
    worker = NULL, started_at = NULL,
    finished_at = NULL, created_at = excluded.created_at
WHERE start_all_jobs.status IN ('SUCCESS', 'FAILURE', 'REVOKED')
"""

CLAIM = """
UPDATE start_all_jobs
SET status = 'RESERVED', lease_token = ?, worker = ?, started_at = ?, lease_until = ?
WHERE id IN (
    SELECT id FROM start_all_jobs
    WHERE status IN ('PENDING', 'RETRY') AND queue IN ({queues}) AND run_at <= ?
    ORDER BY priority DESC, run_at, id LIMIT ?
)
RETURNING id, task_id, name, queue, priority, args, kwargs, options, retries, ignore_result,
          revoke, expires_at - ?, orphaned > 0, run_at
"""

MARK_STARTED = """
UPDATE start_all_jobs SET attempt_started = 1, started_at = ?
WHERE id = ? AND lease_token = ? AND status = 'RESERVED'
"""

FINISH = """
UPDATE start_all_jobs
SET status = ?, result = ?, traceback = ?, lease_token = NULL, lease_until = NULL,
    attempt_started = 0, finished_at = CASE WHEN ? = 'RETRY' THEN NULL ELSE ? END,
    run_at = CASE WHEN ? = 'RETRY' THEN ? ELSE run_at END,
    retries = retries + (? = 'RETRY'),
    args = coalesce(?, args), kwargs = coalesce(?, kwargs)
WHERE id = ? AND lease_token = ?
"""

RELEASE = """
UPDATE start_all_jobs
SET status = CASE WHEN retries > 0 THEN 'RETRY' ELSE 'PENDING' END,
    lease_token = NULL, lease_until = NULL, worker = NULL, started_at = NULL,
    attempt_started = 0
WHERE id = ? AND lease_token = ? AND status = 'RESERVED'
"""

REAP = """
UPDATE start_all_jobs
SET recoveries = recoveries + attempt_started,
    orphaned = orphaned + (1 - attempt_started),
    status = CASE WHEN revoke IS NOT NULL THEN 'REVOKED'
                  WHEN attempt_started AND recoveries + 1 > :max THEN 'FAILURE'
                  WHEN retries > 0 THEN 'RETRY' ELSE 'PENDING' END,
    result = CASE WHEN revoke IS NULL AND attempt_started AND recoveries + 1 > :max
        THEN json_object(
        'exc_type', 'WorkerLostError', 'exc_module', 'supervisor.native.exceptions',
        'exc_message', json_array(printf(
            'worker lost %d times while running it (last %s): given up as a poison pill',
            recoveries + 1, worker))) ELSE result END,
    finished_at = CASE WHEN revoke IS NOT NULL OR (attempt_started AND recoveries + 1 > :max)
                       THEN :now END,
    attempt_started = 0, lease_token = NULL, lease_until = NULL, worker = NULL
WHERE status = 'RESERVED' AND lease_until < :now
RETURNING id, task_id, status
"""


def _path(url: str) -> str:
    """sqlite:///relative.db, sqlite:////absolute/path.db, sqlite:///:memory: is refused."""
    path = url.split(":", 1)[1]
    path = path[3:] if path.startswith("///") else path.lstrip("/")
    if not path or path == ":memory:":
        from supervisor.native.exceptions import ConfigError

        raise ConfigError(f"{url}: the SQLite queue needs a file both processes can open")
    return path


def connect(url: str) -> sqlite3.Connection:
    conn = sqlite3.connect(_path(url), timeout=30, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def migrate(conn: sqlite3.Connection) -> list[str]:
    applied = []
    files = sorted(
        (f for f in resources.files("supervisor.native").joinpath("sql_sqlite").iterdir()
         if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    conn.execute("BEGIN IMMEDIATE")  # the write lock serialises concurrent starts
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS start_all_migrations "
                     "(version TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT version FROM start_all_migrations")}
        for f in files:
            version = f.name.removesuffix(".sql")
            if version not in done:
                for statement in f.read_text().split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO start_all_migrations VALUES (?, ?)",
                             (version, time.time()))
                applied.append(version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def _job_row(job: Job, now: float) -> tuple:
    run_at = job.eta.timestamp() if job.eta else now + (job.countdown or 0.0)
    expires_at = (job.expires_at.timestamp() if job.expires_at
                  else now + job.expires_in if job.expires_in is not None else None)
    return (job.task_id, job.name, job.queue, job.priority, job.args, job.kwargs, job.options,
            run_at, expires_at, int(job.ignore_result), job.retries, now)


class _Locked:
    """One connection shared by threads, one statement group at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def run(self, fn: Any) -> Any:
        with self._lock:
            if self._conn is None:
                conn = connect(self.url)
                migrate(conn)
                self._conn = conn
            return fn(self._conn)

    def transaction(self, fn: Any) -> Any:
        def wrapped(conn: sqlite3.Connection) -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return value

        return self.run(wrapped)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SqliteStore(BackendMeta):  # get_task_meta, get_state (result.py)
    """Producer side: enqueue, results, revoke."""

    def __init__(self, url: str, app: Any) -> None:
        self.url = url
        self.app = app
        self.db = _Locked(url)
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self.db = _Locked(self.url)

    def ensure_schema(self) -> None:
        self.db.run(lambda conn: None)

    def execute(self, statement: Any, params: Any) -> None:
        """Run a deferred enqueue (Django on_commit): `statement` is ignored, params are jobs."""
        self._insert(params)

    def _insert(self, jobs: list[Job]) -> None:
        now = time.time()
        self.db.transaction(lambda conn: conn.executemany(
            ENQUEUE, [_job_row(j, now) for j in jobs]))

    def enqueue(self, jobs: list[Job]) -> None:
        from supervisor.native import dispatch, transactions
        from supervisor.native.canvas import is_flow

        if any(j.options and is_flow(loads(j.options)) for j in jobs):
            self.submit(jobs, [])  # link/link_error: refused with the reason
        dispatch.publishing(jobs)
        if transactions.deferred(self, None, jobs):
            return
        self._insert(jobs)
        dispatch.publishing(jobs, after=True)

    def enqueue_batch(self, batch: Any) -> None:
        """A JobBatch (job.py): its calls as rows."""
        self.enqueue(batch.jobs())

    def ensure_chords_allowed(self) -> None:
        raise NotImplementedError("chords need PostgreSQL: the SQLite backend carries plain "
                                  "tasks and groups only")

    def submit(self, jobs: list[Job], chords: list) -> None:
        """Workflows (chains, chords, links) need PostgreSQL's finish transaction."""
        raise NotImplementedError("chains, chords and link callbacks need PostgreSQL: the "
                                  "SQLite backend carries plain tasks and groups only")

    def add_to_chord(self, chord_id: str, header_ids: list[str], jobs: list[Job],
                     chords: list) -> None:
        self.ensure_chords_allowed()

    def in_flow_transaction(self, hook: Any) -> Any:
        self.ensure_chords_allowed()

    def save_group(self, group_id: str, results: dict) -> None:
        self.db.run(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO start_all_groups VALUES (?, ?, ?)",
            (group_id, json.dumps(results), time.time())))

    def restore_group(self, group_id: str) -> dict | None:
        row = self.db.run(lambda conn: conn.execute(
            "SELECT results FROM start_all_groups WHERE id = ?", (group_id,)).fetchone())
        return json.loads(row[0]) if row else None

    def delete_group(self, group_id: str) -> None:
        self.db.run(lambda conn: conn.execute("DELETE FROM start_all_groups WHERE id = ?",
                                              (group_id,)))

    def get_meta(self, task_id: str) -> dict | None:
        row = self.db.run(lambda conn: conn.execute(
            "SELECT status, result, traceback, retries, finished_at, name, args, kwargs "
            "FROM start_all_jobs WHERE task_id = ?", (task_id,)).fetchone())
        if row is None:
            return None
        status, result, traceback, retries, finished_at, name, args, kwargs = row
        return {
            "status": status, "result": loads(result) if result is not None else None,
            "traceback": traceback, "retries": retries, "name": name,
            "finished_at": datetime.fromtimestamp(finished_at, UTC) if finished_at else None,
            "args": loads(args), "kwargs": loads(kwargs),
        }

    def children_of(self, task_id: str) -> list[tuple[str, str]]:
        """(task id, name) of the rows whose parent is `task_id` (AsyncResult.children)."""
        return self.db.run(lambda conn: [tuple(row) for row in conn.execute(
            "SELECT task_id, name FROM start_all_jobs "
            "WHERE json_extract(options, '$.parent_id') = ? ORDER BY id",
            (task_id,)).fetchall()])

    def revoke(self, task_ids: list[str], terminate: bool = False) -> None:
        mode, now = ("terminate" if terminate else "revoke"), time.time()
        marks = ",".join("?" * len(task_ids))
        self.db.run(lambda conn: conn.execute(
            f"""UPDATE start_all_jobs SET revoke = ?,
                  finished_at = CASE WHEN status IN ('PENDING', 'RETRY') THEN ?
                                     ELSE finished_at END,
                  lease_token = CASE WHEN status IN ('PENDING', 'RETRY') THEN NULL
                                     ELSE lease_token END,
                  status = CASE WHEN status IN ('PENDING', 'RETRY') THEN 'REVOKED'
                                ELSE status END
                WHERE task_id IN ({marks}) AND status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')""",
            (mode, now, *task_ids)))
        # an id never sent is REVOKED as Celery's revoke stores it (as in store.REVOKE)
        self.db.run(lambda conn: conn.executemany(
            "INSERT INTO start_all_jobs (task_id, name, status, revoke, finished_at, run_at, "
            "created_at) VALUES (?, '', 'REVOKED', ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING",
            [(task_id, mode, now, now, now) for task_id in task_ids]))

    def _store_result(self, task_id: str, name: str, state: str, encoded: str,
                      traceback: str | None, final: bool) -> bool:
        now = time.time()
        return self.db.run(lambda conn: conn.execute(
            """INSERT INTO start_all_jobs (task_id, name, status, result, traceback,
                                           finished_at, run_at, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (task_id) DO UPDATE SET status = excluded.status,
                   result = excluded.result, traceback = excluded.traceback,
                   finished_at = excluded.finished_at
               WHERE start_all_jobs.status NOT IN ('PENDING', 'RETRY', 'RESERVED', 'REPLACED')
               RETURNING 1""",
            (task_id, name, state, encoded, traceback, now if final else None, now, now),
        ).fetchall()) != []

    def forget(self, task_id: str) -> None:
        self.db.run(lambda conn: conn.execute(
            "DELETE FROM start_all_jobs WHERE task_id = ? AND status IN "
            "('SUCCESS', 'FAILURE', 'REVOKED')", (task_id,)))

    def close(self) -> None:
        self.db.close()


class SqliteWorkerDb:
    """Worker side, same interface as store.PgWorkerDb; always polling."""

    dialect = "sqlite"
    Error = sqlite3.Error
    OperationalError = sqlite3.OperationalError
    Refused = sqlite3.DataError  # a value refused (see Worker._write_singly)

    def __init__(self, url: str, poll_only: bool) -> None:
        self.url = url
        self.poll_only = True
        self.conn: sqlite3.Connection | None = None

    def connect(self) -> list[str]:
        self.conn = connect(self.url)
        return migrate(self.conn)

    def listen(self) -> None:
        pass  # no LISTEN on SQLite: always polling

    def interrupt(self) -> None:
        if self.conn is not None:
            self.conn.interrupt()

    def fileno(self) -> int | None:
        return None

    def notifications(self) -> list[tuple[str, str]]:
        return []

    def _tx(self, fn: Any) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            value = fn(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return value

    def exchange(self, finish: list[list] | None, claim: dict | None) -> tuple[int, list]:
        now = time.time()

        def work(conn: sqlite3.Connection) -> tuple[int, list]:
            written = 0
            for (id_, token, status, result, tb, countdown, args, kwargs,
                 forget) in zip(*finish, strict=True) if finish else ():
                if forget:
                    cur = conn.execute("DELETE FROM start_all_jobs WHERE id = ? AND "
                                       "lease_token = ?", (id_, str(token)))
                else:
                    cur = conn.execute(FINISH, (status, result, tb, status, now, status,
                                                now + (countdown or 0.0), status, args, kwargs,
                                                id_, str(token)))
                written += cur.rowcount
            rows = []
            if claim:
                queues = claim["queues"]
                statement = CLAIM.format(queues=",".join("?" * len(queues)))
                raw = conn.execute(statement, (
                    str(claim["token"]), claim["worker"], now, now + claim["lease"], *queues,
                    now, claim["limit"], now)).fetchall()
                rows = [(r[0], r[1], r[2], r[3], r[4], loads(r[5]), loads(r[6]),
                         loads(r[7]) if r[7] else None, r[8], bool(r[9]), r[10],
                         r[11], bool(r[12]), r[13]) for r in raw]
            return written, rows

        return self._tx(work)

    def release(self, ids: list[int], tokens: list) -> int:
        return self._tx(lambda conn: sum(
            conn.execute(RELEASE, (i, str(t))).rowcount for i, t in zip(ids, tokens, strict=True)
        ))

    @staticmethod
    def finish_params(rows: list[tuple], plain: bool = False) -> list[list]:
        return [list(col) for col in zip(*rows, strict=True)] if rows else []

    def mark_started(self, ids: list[int], tokens: list) -> set[int]:
        now = time.time()

        def work(conn: sqlite3.Connection) -> set[int]:
            return {i for i, t in zip(ids, tokens, strict=True)
                    if conn.execute(MARK_STARTED, (now, i, str(t))).rowcount}

        return self._tx(work)

    def release_token(self, token: Any) -> int:
        return self._tx(lambda conn: conn.execute(
            "UPDATE start_all_jobs SET status = CASE WHEN retries > 0 THEN 'RETRY' ELSE "
            "'PENDING' END, lease_token = NULL, lease_until = NULL, worker = NULL, "
            "started_at = NULL, attempt_started = 0 WHERE lease_token = ? AND "
            "status = 'RESERVED'",
            (str(token),)).rowcount)

    def renew(self, lease: float, tokens: list) -> list[tuple]:
        until = time.time() + lease
        marks = ",".join("?" * len(tokens))
        return self._tx(lambda conn: conn.execute(
            f"UPDATE start_all_jobs SET lease_until = ? WHERE status = 'RESERVED' "
            f"AND lease_token IN ({marks}) RETURNING id, task_id, revoke",
            (until, *[str(t) for t in tokens])).fetchall())

    def reap(self, max_recoveries: int) -> list[tuple]:
        return self._tx(lambda conn: conn.execute(
            REAP, {"max": max_recoveries, "now": time.time()}).fetchall())

    def heartbeat(self, row: tuple) -> None:
        worker_id, hostname, pid, queues, concurrency, running, processed = row
        now = time.time()
        self.conn.execute(
            "INSERT INTO start_all_workers (id, hostname, pid, queues, concurrency, started_at, "
            "last_seen, running, processed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, "
            "running = excluded.running, processed = excluded.processed",
            (worker_id, hostname, pid, json.dumps(queues), concurrency, now, now, running,
             processed))

    def unregister(self, worker_id: str) -> None:
        self.conn.execute("DELETE FROM start_all_workers WHERE id = ?", (worker_id,))

    def publish_state(self, worker_id: str, state: str) -> None:
        self.conn.execute("UPDATE start_all_workers SET state = ? WHERE id = ?",
                          (state, worker_id))

    def fire_cron(self, name: str, slot: float, job: Job) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            won = conn.execute(
                "INSERT INTO start_all_cron_slots VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (name, slot, job.task_id, time.time())).rowcount
            if won:
                conn.execute(ENQUEUE, _job_row(job, time.time()))
            return bool(won)

        return self._tx(work)

    def prune(self, ok: float, bad: float) -> tuple[int, int]:
        now = time.time()

        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            good = conn.execute("DELETE FROM start_all_jobs WHERE status = 'SUCCESS' AND "
                                "finished_at < ?", (now - ok,)).rowcount
            failed = conn.execute("DELETE FROM start_all_jobs WHERE status IN ('FAILURE', "
                                  "'REVOKED') AND finished_at < ?", (now - bad,)).rowcount
            conn.execute("DELETE FROM start_all_cron_slots WHERE fired_at < ?", (now - bad,))
            conn.execute("DELETE FROM start_all_workers WHERE last_seen < ?", (now - 86400,))
            return good, failed

        return self._tx(work)

    def revoke_mode(self, task_id: str) -> str | None:
        row = self.conn.execute("SELECT revoke FROM start_all_jobs WHERE task_id = ?",
                                (task_id,)).fetchone()
        return row[0] if row else None

    def take_next_due(self) -> tuple[bool, float | None]:
        """Its claims do not answer it: next_due() asks."""
        return False, None

    def next_due(self, queues: list[str]) -> float | None:
        marks = ",".join("?" * len(queues))
        row = self.conn.execute(
            f"SELECT min(run_at) FROM start_all_jobs WHERE status IN ('PENDING', 'RETRY') "
            f"AND queue IN ({marks})", queues).fetchone()
        return row[0] - time.time() if row and row[0] is not None else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
