"""The PostgreSQL side: schema migration, enqueue, claim, finish, leases, reaper, retention.

Every statement here is one round trip. Producers (web processes calling .delay()) share one
autocommit connection per process; the worker's loop has its own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
import weakref
from importlib import resources
from typing import Any

from supervisor.native.job import JSON_ROWS, Job, JobBatch, rows_param
from supervisor.native.result import BackendMeta
from supervisor.native.serial import loads

log = logging.getLogger("supervisor.native")

NOTIFY_JOBS = "start_all_jobs"
NOTIFY_REVOKE = "start_all_revoke"
NOTIFY_CONTROL = "start_all_control"  # inspect() asking workers to publish their state
WAITING = ("PENDING", "RETRY")
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")
MIGRATION_LOCK = 0x5A11_0001  # advisory lock key shared by every process migrating
_inherited: list = []  # connections inherited across fork: never used, never closed

ENQUEUE = """
WITH rows AS (""" + JSON_ROWS + """), ins AS (
    INSERT INTO start_all.jobs AS j (task_id, name, queue, priority, args, kwargs, options,
                                     run_at, expires_at, ignore_result, retries)
    SELECT task_id, name, queue, priority, args, kwargs, options,
           coalesce(eta, now() + make_interval(secs => coalesce(countdown, 0))),
           coalesce(expires_at, now() + make_interval(secs => expires_in)),
           ignore_result, retries
    FROM rows
    -- a custom task_id that is still waiting or running is not queued twice;
    -- a finished one is queued again, as Celery would overwrite its result
    ON CONFLICT (task_id) DO UPDATE SET
        name = excluded.name, queue = excluded.queue, priority = excluded.priority,
        status = 'PENDING', args = excluded.args, kwargs = excluded.kwargs,
        options = excluded.options, run_at = excluded.run_at, expires_at = excluded.expires_at,
        ignore_result = excluded.ignore_result, retries = excluded.retries, recoveries = 0,
        orphaned = 0, attempt_started = false, revoke = NULL, result = NULL, traceback = NULL,
        worker = NULL, started_at = NULL,
        finished_at = NULL, created_at = now()
    WHERE j.status IN ('SUCCESS', 'FAILURE', 'REVOKED')
    RETURNING queue
)
SELECT pg_notify('start_all_jobs', q) FROM (SELECT DISTINCT queue AS q FROM ins) AS d
"""

# A JobBatch (a plain group's members, calls of one task): the shared fields once, the ids as
# one comma-separated text, the arguments as one JSON array each, only when some member has any
# (a list parameter costs the driver several us per element to send). About 40 %
# less database time per job than ENQUEUE's JSON rows, and no JSON to build per job. Its ids are
# new random UUIDs, so a plain INSERT: an upsert's speculative insertion costs about a fifth of
# the INSERT. ENQUEUE_BATCH_AGAIN is for a second attempt (the first one's answer was lost, it
# may have committed) and for Django's on_commit: the rows already there are left as they are.
_ENQUEUE_BATCH = """
WITH ins AS (
    INSERT INTO start_all.jobs (task_id, name, queue, priority, args, kwargs, options,
                                run_at, expires_at, ignore_result, retries)
    SELECT m.task_id, %(name)s, %(queue)s, %(priority)s, coalesce(m.args, '[]'),
           coalesce(m.kwargs, '{}'), %(options)s::jsonb,
           coalesce(%(eta)s::timestamptz,
                    now() + make_interval(secs => coalesce(%(countdown)s::float8, 0))),
           coalesce(%(expires_at)s::timestamptz,
                    now() + make_interval(secs => %(expires_in)s::float8)),
           %(ignore_result)s, %(retries)s
    FROM unnest(
        string_to_array(%(ids)s, ','),
        ARRAY(SELECT v FROM jsonb_array_elements(%(args)s::jsonb) WITH ORDINALITY AS a(v, n)
              ORDER BY n),
        ARRAY(SELECT v FROM jsonb_array_elements(%(kwargs)s::jsonb) WITH ORDINALITY AS k(v, n)
              ORDER BY n)) AS m(task_id, args, kwargs)
    -- (conflict)
)
SELECT pg_notify('start_all_jobs', %(queue)s)
"""
ENQUEUE_BATCH = _ENQUEUE_BATCH.replace("    -- (conflict)\n", "")
ENQUEUE_BATCH_AGAIN = _ENQUEUE_BATCH.replace("-- (conflict)", "ON CONFLICT (task_id) DO NOTHING")


# One call whose id was made for it (Job.fresh: what .delay() sends): a plain INSERT, with no
# JSON rows and no upsert. Its NOTIFY names the new row when it is due at once (the queue, then
# ID_MARK, then the row's id): an idle worker claims that row by its primary key (CLAIM_IDS),
# without walking the queue's index or asking when the next delayed job is due, on the pickup
# path. A worker older than this compares the whole payload with its queue names: it skips
# such a notification and finds the job at its next poll (native_poll_interval).
ID_MARK = "\x1f"
_ENQUEUE_ONE = """
WITH ins AS (
    INSERT INTO start_all.jobs (task_id, name, queue, priority, args, kwargs, options,
                                run_at, expires_at, ignore_result, retries)
    VALUES (%(task_id)s, %(name)s, %(queue)s, %(priority)s, %(args)s::jsonb,
            %(kwargs)s::jsonb, %(options)s::jsonb,
            coalesce(%(eta)s::timestamptz,
                     now() + make_interval(secs => coalesce(%(countdown)s::float8, 0))),
            coalesce(%(expires_at)s::timestamptz,
                     now() + make_interval(secs => %(expires_in)s::float8)),
            %(ignore_result)s, %(retries)s)
    -- (conflict)
    RETURNING id, queue, run_at <= now() AS due
)
SELECT pg_notify('start_all_jobs', CASE WHEN due THEN queue || chr(31) || id ELSE queue END)
FROM ins
"""
ENQUEUE_ONE = _ENQUEUE_ONE.replace("    -- (conflict)\n", "")
ENQUEUE_ONE_AGAIN = _ENQUEUE_ONE.replace("-- (conflict)", "ON CONFLICT (task_id) DO NOTHING")


def one_params(job: Job) -> dict:
    """ENQUEUE_ONE's parameters."""
    return {"task_id": job.task_id, "name": job.name, "queue": job.queue,
            "priority": job.priority, "args": job.args, "kwargs": job.kwargs,
            "options": job.options, "eta": job.eta, "countdown": job.countdown,
            "expires_at": job.expires_at, "expires_in": job.expires_in,
            "ignore_result": bool(job.ignore_result), "retries": job.retries or 0}


def batch_params(batch: JobBatch) -> dict:
    t = batch.template
    return {"name": t.name, "queue": t.queue, "priority": t.priority, "options": t.options,
            "eta": t.eta, "countdown": t.countdown, "expires_at": t.expires_at,
            "expires_in": t.expires_in, "ignore_result": t.ignore_result, "retries": t.retries,
            "ids": ",".join(batch.task_ids),
            "args": None if batch.args is None else "[" + ",".join(batch.args) + "]",
            "kwargs": None if batch.kwargs is None else "[" + ",".join(batch.kwargs) + "]"}


# The subquery walks jobs_waiting in order and stops at the limit; `= ANY(ARRAY(...))` keeps
# the planner on the primary key for the update (a join would scan the table to hash it).
# A claim commits without waiting for its WAL flush: set_config(..., true) turns
# synchronous_commit off for the statement's own transaction only (one round trip, and it
# holds through a transaction pooler). That is one fsync less on every pickup (0.3-0.4 ms
# here). The claim is visible to every worker at once, as any commit; only a crash of the
# database server can undo it, and only until the next flushed commit of anyone (usually the
# job's own result; the WAL writer flushes it within 3 x wal_writer_delay, 600 ms by default).
# An undone claim leaves the job waiting: it runs again, nothing is lost. Results, starts and
# enqueues are flushed before they count.
CLAIM = """
UPDATE start_all.jobs AS j
SET status = 'RESERVED', lease_token = %(token)s, worker = %(worker)s, started_at = now(),
    lease_until = now() + make_interval(secs => %(lease)s)
WHERE (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
  AND j.id = ANY(ARRAY(
    SELECT id FROM start_all.jobs
    WHERE status IN ('PENDING', 'RETRY') AND queue = ANY(%(queues)s) AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED))
RETURNING j.id, j.task_id, j.name, j.queue, j.priority,
          -- as text: the driver's jsonb loader is a Python call per value (executor.Held
          -- decodes them, the common empty ones without a parser)
          j.args::text, j.kwargs::text, j.options::text, j.retries,
          j.ignore_result, j.revoke,
          extract(epoch FROM j.expires_at - now())::float8 AS expires_left,
          j.orphaned > 0 AS strict, extract(epoch FROM j.run_at)::float8 AS run_at
"""

# The rows that notifications named (see ENQUEUE_ONE), claimed by primary key, with the same
# conditions and the same answer as CLAIM.
_SCAN = """    WHERE status IN ('PENDING', 'RETRY') AND queue = ANY(%(queues)s) AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
"""
_BY_ID = """    WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('PENDING', 'RETRY')
      AND queue = ANY(%(queues)s) AND run_at <= now()
"""
CLAIM_IDS = CLAIM.replace(_SCAN, _BY_ID)
if CLAIM_IDS == CLAIM:
    raise ImportError("store: CLAIM's scan was rewritten; update CLAIM_IDS")

# The claim of an idle worker (its last claim came back short) also answers when the next
# delayed job is due, in one more row (id NULL, the seconds in the last column) when it claims
# fewer than asked for: the loop needed a second round trip for that (NEXT_DUE), on the pickup
# path, where it competed for the CPU with the job it had just handed to a thread. Those
# waiting rows are read in the claim's snapshot, where the rows it claims are still waiting:
# they are left out by id. Not for a draining worker: carrying its full claims through a CTE
# costs about 8 % of a 512-job claim (measured), and a full claim needs no due time.
CLAIM_DUE = "WITH claimed AS (" + CLAIM + """)
SELECT * FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT extract(epoch FROM min(w.run_at) - now())::float8 FROM start_all.jobs AS w
        WHERE w.status IN ('PENDING', 'RETRY') AND w.queue = ANY(%(queues)s)
          AND w.id <> ALL(ARRAY(SELECT id FROM claimed)))
WHERE (SELECT count(*) FROM claimed) < %(limit)s
"""

# One queue (the usual case): an equality lets the index give the order, no sort of the queue.
CLAIM_ONE = CLAIM.replace("queue = ANY(%(queues)s)", "queue = %(queue)s")
CLAIM_DUE_ONE = CLAIM_DUE.replace("queue = ANY(%(queues)s)", "queue = %(queue)s")

# A job held by a worker that died may have been running: before it runs again, its start
# is made durable, so that dying on it again counts as a recovery (see REAP).
MARK_STARTED = """
UPDATE start_all.jobs AS j SET attempt_started = true, started_at = now()
FROM unnest(%s::bigint[], %s::uuid[]) AS o(id, token)
WHERE j.id = o.id AND j.lease_token = o.token AND j.status = 'RESERVED'
RETURNING j.id
"""

NEXT_DUE = """
SELECT extract(epoch FROM min(run_at) - now())::float8 FROM start_all.jobs
WHERE status IN ('PENDING', 'RETRY') AND queue = ANY(%s)
"""

# Fenced: a row is only written while it still carries the lease token of this claim.
FINISH = """
WITH outcome AS (
    -- one JSON array of [id, token, status, result, traceback, countdown, args, kwargs, forget]
    -- rows (result, args, kwargs as JSON texts): far cheaper to build than nine arrays
    SELECT (e->>0)::bigint AS id, (e->>1)::uuid AS token, e->>2 AS status,
           (e->>3)::jsonb AS result, e->>4 AS traceback, (e->>5)::float8 AS countdown,
           (e->>6)::jsonb AS args, (e->>7)::jsonb AS kwargs, (e->>8)::bool AS forget
    FROM jsonb_array_elements(%s::jsonb) AS e
), gone AS (
    DELETE FROM start_all.jobs AS j USING outcome AS o
    WHERE j.id = o.id AND j.lease_token = o.token AND o.forget
    RETURNING j.id
), done AS (
    UPDATE start_all.jobs AS j
    SET status = o.status, result = o.result, traceback = o.traceback,
        lease_token = NULL, lease_until = NULL, attempt_started = false,
        finished_at = CASE WHEN o.status = 'RETRY' THEN NULL ELSE now() END,
        run_at = CASE WHEN o.status = 'RETRY'
                      THEN now() + make_interval(secs => o.countdown) ELSE j.run_at END,
        retries = j.retries + (o.status = 'RETRY')::int,
        args = coalesce(o.args, j.args), kwargs = coalesce(o.kwargs, j.kwargs)
    FROM outcome AS o
    WHERE j.id = o.id AND j.lease_token = o.token AND NOT o.forget
    RETURNING j.id, j.status, j.queue
), wake AS (
    SELECT pg_notify('start_all_jobs', queue) FROM (
        SELECT DISTINCT queue FROM done WHERE status = 'RETRY') AS r
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM done), (SELECT count(*) FROM wake)
"""

# A batch with no forget, no retry and no new arguments (the usual one) skips FINISH's DELETE,
# NOTIFY and JSON rows: ids, lease tokens and statuses come as comma-separated texts, results as
# one JSON array, tracebacks as one (NULL when the batch has none).
FINISH_PLAIN = """
WITH o AS (
    SELECT * FROM unnest(
        string_to_array(%(ids)s, ',')::bigint[], string_to_array(%(tokens)s, ',')::uuid[],
        string_to_array(%(statuses)s, ','),
        ARRAY(SELECT v FROM jsonb_array_elements(%(results)s::jsonb) WITH ORDINALITY AS r(v, n)
              ORDER BY n),
        ARRAY(SELECT v FROM jsonb_array_elements_text(%(tracebacks)s::jsonb)
              WITH ORDINALITY AS t(v, n) ORDER BY n)) AS o(id, token, status, result, traceback)
), done AS (
    UPDATE start_all.jobs AS j
    SET status = o.status, result = o.result, traceback = o.traceback,
        lease_token = NULL, lease_until = NULL, attempt_started = false, finished_at = now()
    FROM o
    WHERE j.id = o.id AND j.lease_token = o.token
    RETURNING 1
)
SELECT count(*) FROM done
"""

# The same when every job of the batch came with one claim (one lease token) and ended the same
# way (same status and result, no traceback: tasks returning None, say): no join, constants.
# About a quarter less database time per job than FINISH.
FINISH_SAME = """
WITH done AS (
    UPDATE start_all.jobs
    SET status = %(status)s, result = %(result)s::jsonb, traceback = NULL,
        lease_token = NULL, lease_until = NULL, attempt_started = false, finished_at = now()
    WHERE id = ANY(string_to_array(%(ids)s, ',')::bigint[]) AND lease_token = %(token)s::uuid
    RETURNING 1
)
SELECT count(*) FROM done
"""


class FinishParams(list):
    """FINISH's parameters (one JSON text)."""

    statement = FINISH


class PlainFinish(dict):
    """FINISH_PLAIN's parameters."""

    statement = FINISH_PLAIN


class SameFinish(dict):
    """FINISH_SAME's parameters."""

    statement = FINISH_SAME


# Hand held-but-unfinished jobs back (graceful stop): they keep their retry count.
RELEASE = """
UPDATE start_all.jobs AS j
SET status = CASE WHEN j.retries > 0 THEN 'RETRY' ELSE 'PENDING' END,
    lease_token = NULL, lease_until = NULL, worker = NULL, started_at = NULL,
    attempt_started = false
FROM unnest(%s::bigint[], %s::uuid[]) AS o(id, token)
WHERE j.id = o.id AND j.lease_token = o.token AND j.status = 'RESERVED'
RETURNING j.id
"""

# The rows of one claim whose answer never arrived (the connection dropped): back, uncounted.
RELEASE_TOKEN = """
UPDATE start_all.jobs
SET status = CASE WHEN retries > 0 THEN 'RETRY' ELSE 'PENDING' END,
    lease_token = NULL, lease_until = NULL, worker = NULL, started_at = NULL,
    attempt_started = false
WHERE lease_token = %s AND status = 'RESERVED'
RETURNING id
"""

RENEW = """
UPDATE start_all.jobs
SET lease_until = now() + make_interval(secs => %s)
WHERE status = 'RESERVED' AND lease_token = ANY(%s::uuid[])
RETURNING id, task_id, revoke
"""

# Expired leases: the holder died or froze. A job whose execution durably started counts a
# recovery (past native_max_recoveries it fails as a poison pill); one only fetched, or run
# without a start mark, goes back uncounted as `orphaned` (it then runs with a start mark).
REAP = """
WITH expired AS (
    SELECT id FROM start_all.jobs
    WHERE status = 'RESERVED' AND lease_until < now()
    FOR UPDATE SKIP LOCKED
)
UPDATE start_all.jobs AS j
SET recoveries = j.recoveries + j.attempt_started::int,
    orphaned = j.orphaned + (NOT j.attempt_started)::int,
    status = CASE WHEN j.revoke IS NOT NULL THEN 'REVOKED'
                  WHEN j.attempt_started AND j.recoveries + 1 > %(max)s THEN 'FAILURE'
                  WHEN j.retries > 0 THEN 'RETRY' ELSE 'PENDING' END,
    result = CASE WHEN j.revoke IS NULL AND j.attempt_started AND j.recoveries + 1 > %(max)s
        THEN jsonb_build_object(
        'exc_type', 'WorkerLostError', 'exc_module', 'supervisor.native.exceptions',
        'exc_message', jsonb_build_array(format(
            'worker lost %%s times while running it (last %%s): given up as a poison pill',
            j.recoveries + 1, j.worker))) ELSE j.result END,
    finished_at = CASE WHEN j.revoke IS NOT NULL
                            OR (j.attempt_started AND j.recoveries + 1 > %(max)s)
                       THEN now() END,
    attempt_started = false, lease_token = NULL, lease_until = NULL, worker = NULL
FROM expired WHERE j.id = expired.id
RETURNING j.id, j.task_id, j.status
"""

REVOKE = """
WITH target AS (
    UPDATE start_all.jobs
    SET revoke = %(mode)s,
        status = CASE WHEN status IN ('PENDING', 'RETRY') THEN 'REVOKED' ELSE status END,
        finished_at = CASE WHEN status IN ('PENDING', 'RETRY') THEN now() ELSE finished_at END,
        lease_token = CASE WHEN status IN ('PENDING', 'RETRY') THEN NULL ELSE lease_token END
    WHERE task_id = ANY(%(ids)s) AND status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')
    RETURNING task_id, status
), unknown AS (
    -- an id never sent is REVOKED as Celery's revoke stores it (a send after it queues it anew)
    INSERT INTO start_all.jobs (task_id, name, status, revoke, finished_at)
    SELECT t, '', 'REVOKED', %(mode)s, now() FROM unnest(%(ids)s::text[]) AS t
    WHERE NOT EXISTS (SELECT 1 FROM start_all.jobs j WHERE j.task_id = t)
    ON CONFLICT (task_id) DO NOTHING
)
SELECT pg_notify('start_all_revoke', task_id) FROM target WHERE status = 'RESERVED'
"""

# backend.store_result: a row for an id never sent, or over a finished (or custom-state) one;
# rows waiting or held by a worker are left alone (no row back: the caller raises)
STORE_RESULT = """
INSERT INTO start_all.jobs AS j (task_id, name, status, result, traceback, finished_at)
VALUES (%(id)s, %(name)s, %(status)s, %(result)s::jsonb, %(traceback)s,
        CASE WHEN %(final)s THEN now() END)
ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, result = excluded.result,
    traceback = excluded.traceback, finished_at = excluded.finished_at
WHERE j.status NOT IN ('PENDING', 'RETRY', 'RESERVED', 'REPLACED')
RETURNING 1
"""

GET_META = """
SELECT status, result, traceback, retries, finished_at, name, args, kwargs
FROM start_all.jobs WHERE task_id = %s
"""

HEARTBEAT = """
INSERT INTO start_all.workers (id, hostname, pid, queues, concurrency, running, processed)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET last_seen = now(), running = excluded.running,
    processed = excluded.processed
"""

PRUNE = """
WITH ok AS (
    DELETE FROM start_all.jobs WHERE status = 'SUCCESS'
      AND finished_at < now() - make_interval(secs => %(ok)s) RETURNING 1
), bad AS (
    DELETE FROM start_all.jobs WHERE status IN ('FAILURE', 'REVOKED')
      AND finished_at < now() - make_interval(secs => %(bad)s) RETURNING 1
), slots AS (
    DELETE FROM start_all.cron_slots WHERE fired_at < now() - make_interval(secs => %(bad)s)
    RETURNING 1
), workers AS (
    DELETE FROM start_all.workers WHERE last_seen < now() - interval '1 day' RETURNING 1
)
SELECT (SELECT count(*) FROM ok), (SELECT count(*) FROM bad)
"""

CRON_SLOT = """
INSERT INTO start_all.cron_slots (name, slot, task_id) VALUES (%s, to_timestamp(%s), %s)
ON CONFLICT DO NOTHING RETURNING 1
"""


def job_params(jobs: list[Job]) -> list:
    return rows_param(jobs)


def is_pooler(url: str) -> bool:
    """A transaction-mode pooler (no LISTEN, no prepared statements), known by its port:
    Supabase's 6543, or the one START_ALL_TRANSACTION_POOLER_PORT names (a pgbouncer's)."""
    from psycopg.conninfo import conninfo_to_dict

    pooler_port = os.environ.get("START_ALL_TRANSACTION_POOLER_PORT", "").strip() or "6543"
    try:
        return str(conninfo_to_dict(url).get("port", "")) == pooler_port
    except Exception:
        return False


_TRIVIAL = {b"[]": list, b"{}": dict, b"null": lambda: None}
_PLAIN = json.JSONDecoder().decode  # built once: json.loads(bytes) costs twice as much


def _loads(data: bytes) -> Any:
    """serial.loads for the worker's rows (psycopg hands bytes): the common empty
    args/kwargs/options without a parser, JSON holding no typed envelope with the plain C
    parser (serial's object hook is Python, called for every object), the rest typed."""
    if len(data) <= 4:
        make = _TRIVIAL.get(data)
        if make is not None:
            return make()
    if b"__type__" not in data:  # every envelope of serial's carries this key
        return _PLAIN(data.decode())
    return loads(data)


CONNECT_TIMEOUT = 5  # seconds; a host that does not answer must not hang a caller forever


def connect(url: str, pooler: bool | None = None) -> Any:
    """An autocommit connection; no prepared statements through a transaction pooler.
    A URL libpq cannot parse is a ConfigError naming no part of it (it may hold a password)."""
    import psycopg
    from psycopg.types.json import set_json_loads

    from supervisor.kit.dburl import libpq_url

    url = libpq_url(url)  # an unescaped '@' in the password means what urllib reads
    if pooler is None:
        pooler = is_pooler(url)
    extra = {"prepare_threshold": None} if pooler else {}
    try:
        # a SQL_ASCII database would hand text back as bytes (task names, versions): say UTF-8
        conn = psycopg.connect(url, autocommit=True, client_encoding="utf8",
                               connect_timeout=CONNECT_TIMEOUT, **extra)
    except psycopg.ProgrammingError:
        from supervisor.native.exceptions import ConfigError

        raise ConfigError("the database URL is not a valid PostgreSQL URL (a password with "
                          "@, :, / or [ must be percent-encoded)") from None
    set_json_loads(_loads, conn)  # Celery's typed values (datetime, UUID, ...) come back typed
    return conn


def migrate(conn: Any) -> list[str]:
    """Apply the versioned .sql files not yet applied; concurrent starts serialise on a lock.

    A transaction-scoped advisory lock works through transaction poolers too.
    """
    applied_now = []
    files = sorted(
        (f for f in resources.files("supervisor.native").joinpath("sql").iterdir()
         if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS start_all")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS start_all.migrations "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM start_all.migrations")}
        for f in files:
            version = f.name.removesuffix(".sql")
            if version in done:
                continue
            conn.execute(f.read_text())
            conn.execute("INSERT INTO start_all.migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
    return applied_now


class PgStore(BackendMeta):  # get_task_meta, get_state (result.py)
    """Producer-side access (enqueue, results, revoke) over one shared connection."""

    def __init__(self, url: str, app: Any) -> None:
        self.url = url
        self.app = app
        self._conn: Any = None
        self._lock = threading.Lock()
        self._migrated = False
        # a forked child (gunicorn --preload, multiprocessing) must not share the socket
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: me() and me()._forget_connection())

    def _forget_connection(self) -> None:
        if self._conn is not None:
            # keep a reference: closing or collecting it here would end the parent's session
            _inherited.append(self._conn)
            self._conn = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = connect(self.url)
            if not self._migrated:
                migrate(conn)
                self._migrated = True
            self._conn = conn
        return self._conn

    def ensure_schema(self) -> None:
        with self._lock:
            self._connection()

    def execute(self, sql: str, params: Any = None, again: str | None = None) -> list:
        """Run one statement; reconnect once if the connection was lost (statements are
        idempotent: enqueue upserts by task_id; `again`, when given, is the statement for
        that second attempt)."""
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    cur = conn.execute(sql if attempt == 1 or again is None else again, params)
                    return cur.fetchall() if cur.description else []
                except psycopg.OperationalError:
                    if attempt == 2 or not conn.closed:
                        raise
                    self._conn = None
            return []

    def enqueue(self, jobs: list[Job]) -> None:
        from supervisor.native import dispatch, transactions

        dispatch.publishing(jobs)
        if len(jobs) == 1 and jobs[0].fresh:
            statement, params, again = ENQUEUE_ONE, one_params(jobs[0]), ENQUEUE_ONE_AGAIN
        else:
            statement, params, again = ENQUEUE, job_params(jobs), None
        if transactions.deferred(self, again or statement, params):
            return
        self.execute(statement, params, again=again)
        dispatch.publishing(jobs, after=True)

    def enqueue_batch(self, batch: JobBatch) -> None:
        """Calls of one task in one statement (see ENQUEUE_BATCH)."""
        from supervisor.native import dispatch, transactions

        signals = dispatch.before_task_publish.receivers or dispatch.after_task_publish.receivers
        jobs = batch.jobs() if signals else []
        dispatch.publishing(jobs)
        params = batch_params(batch)
        if transactions.deferred(self, ENQUEUE_BATCH_AGAIN, params):
            return
        self.execute(ENQUEUE_BATCH, params, again=ENQUEUE_BATCH_AGAIN)
        dispatch.publishing(jobs, after=True)

    # --- canvas (supervisor/native/canvas_store.py holds the statements) ----------------
    def _with_connection(self, action: Any) -> Any:
        with self._lock:
            return action(self._connection())

    def ensure_chords_allowed(self) -> None:
        """Celery's backend check: chords work here (their counters live in PostgreSQL)."""

    def submit(self, jobs: list[Job], chords: list) -> None:
        """A workflow: its chord counters and first jobs in one transaction."""
        from supervisor.native import canvas_store, dispatch

        dispatch.publishing(jobs)
        self._with_connection(lambda conn: canvas_store.submit(conn, jobs, chords))
        dispatch.publishing(jobs, after=True)

    def add_to_chord(self, chord_id: str, header_ids: list[str], jobs: list[Job],
                     chords: list) -> None:
        """Task.add_to_chord(): the chord waits for `header_ids` too; `jobs` start them."""
        from supervisor.native import canvas_store, dispatch

        dispatch.publishing(jobs)
        self._with_connection(lambda conn: canvas_store.grow_chord(
            conn, chord_id, header_ids, jobs, chords))
        dispatch.publishing(jobs, after=True)

    def in_flow_transaction(self, hook: Any) -> Any:
        """Run `hook(tx)` (a canvas_store.FlowTx) in one transaction of its own."""
        from supervisor.native import canvas_store

        return self._with_connection(lambda conn: canvas_store.in_transaction(conn, hook))

    def save_group(self, group_id: str, results: dict) -> None:
        from supervisor.native import canvas_store

        self._with_connection(lambda conn: canvas_store.save_group(conn, group_id, results))

    def restore_group(self, group_id: str) -> dict | None:
        from supervisor.native import canvas_store

        return self._with_connection(lambda conn: canvas_store.restore_group(conn, group_id))

    def delete_group(self, group_id: str) -> None:
        from supervisor.native import canvas_store

        self._with_connection(lambda conn: canvas_store.delete_group(conn, group_id))

    def get_meta(self, task_id: str) -> dict | None:
        rows = self.execute(GET_META, (task_id,))
        if not rows:
            return None
        status, result, traceback, retries, finished_at, name, args, kwargs = rows[0]
        return {"status": status, "result": result, "traceback": traceback, "retries": retries,
                "finished_at": finished_at, "name": name, "args": args, "kwargs": kwargs}

    def children_of(self, task_id: str) -> list[tuple[str, str]]:
        """(task id, name) of the rows whose parent is `task_id` (AsyncResult.children; no
        index on it: a scan, paid only by who asks)."""
        return [(t, n) for t, n in self.execute(
            "SELECT task_id, name FROM start_all.jobs WHERE options->>'parent_id' = %s "
            "ORDER BY id", (task_id,))]

    def revoke(self, task_ids: list[str], terminate: bool = False) -> None:
        mode = "terminate" if terminate else "revoke"
        self.execute(REVOKE, {"ids": task_ids, "mode": mode})

    def _store_result(self, task_id: str, name: str, state: str, encoded: str,
                      traceback: str | None, final: bool) -> bool:
        return bool(self.execute(STORE_RESULT, {
            "id": task_id, "name": name, "status": state, "result": encoded,
            "traceback": traceback, "final": final}))

    def forget(self, task_id: str) -> None:
        self.execute(
            "DELETE FROM start_all.jobs WHERE task_id = %s AND status = ANY(%s)",
            (task_id, list(FINISHED)),
        )

    def prune(self, success_seconds: float, failure_seconds: float) -> tuple[int, int]:
        rows = self.execute(PRUNE, {"ok": success_seconds, "bad": failure_seconds})
        return rows[0][0], rows[0][1]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def new_token() -> uuid.UUID:
    return uuid.uuid4()


class PgWorkerDb:
    """The worker loop's side: one connection for its statements, one for LISTEN."""

    dialect = "postgresql"

    def __init__(self, url: str, poll_only: bool) -> None:
        import psycopg

        self.url = url
        self.poll_only = poll_only
        self.explicit_poll_only = poll_only  # asked for: a pooler, so no prepared statements
        self.Error = psycopg.Error
        self.OperationalError = psycopg.OperationalError
        # a write refused for what it carries, not an outage (see Worker._write_singly): a
        # data error (class 22) or a limit (class 54: a jsonb string over 256 MB, say)
        self.Refused = (psycopg.DataError, psycopg.errors.ProgramLimitExceeded)
        self.conn: Any = None
        self.listener: Any = None
        self.finisher: Any = None  # the finishes' own connection (see exchange)
        self.pool: Any = None
        self.due: tuple | None = None  # (seconds or None,): what the last claim said of it
        self.early: list[tuple[str, str]] = []  # notifications read by listen() itself
        self.CONNECTION_OK = psycopg.pq.ConnStatus.OK

    def connect(self) -> list[str]:
        self.conn = connect(self.url, True if self.explicit_poll_only else None)
        applied = migrate(self.conn)
        # opened now, not at the first finish: that one waited for a new connection (13 ms
        # measured, under load), with the first jobs' results unwritten meanwhile
        self.finisher = connect(self.url, True if self.explicit_poll_only else None)
        if not self.poll_only:
            try:
                self.listen()
            except self.Error as error:
                if isinstance(error, self.OperationalError):
                    raise  # the database went away meanwhile: the worker retries
                # e.g. a transaction pooler refusing LISTEN
                log.warning("native: LISTEN unavailable (%s): switching to poll-only mode",
                            error)
                self.poll_only = True
        return applied

    def listen(self) -> None:
        """(Re)open the LISTEN connection; on failure there is none (the worker polls)."""
        self._close_listener()
        try:
            self.listener = connect(self.url)
            self.listener.execute(f"LISTEN {NOTIFY_JOBS}")
            self.listener.execute(f"LISTEN {NOTIFY_REVOKE}")
            self.listener.execute(f"LISTEN {NOTIFY_CONTROL}")
            # what psycopg kept of notifications that came with those answers (see notifications)
            self.early = [(n.channel, n.payload) for n in self.listener.notifies(timeout=0)]
        except Exception:
            self._close_listener()
            raise

    def _close_listener(self) -> None:
        if self.listener is not None:
            try:
                self.listener.close()
            except Exception:
                pass
        self.listener = None

    def fileno(self) -> int | None:
        return self.listener.fileno() if self.listener is not None else None

    def notifications(self) -> list[tuple[str, str]]:
        """Pending NOTIFYs. A lost LISTEN connection is dropped here (fileno() is then None)
        and reopened by the worker; the main connection carries on meanwhile."""
        if self.listener is None:
            return []
        # libpq's own calls: psycopg's notifies() generator took about 0.09 ms a wake-up (its
        # lock, generator and wait), on the pickup path; this connection runs no statement
        # after listen(), so nothing else reads it
        found, self.early = self.early, []
        try:
            pgconn = self.listener.pgconn
            pgconn.consume_input()  # raises once the connection is lost
            while (n := pgconn.notifies()) is not None:
                found.append((n.relname.decode(), n.extra.decode()))
            if pgconn.status != self.CONNECTION_OK:
                raise self.OperationalError("the LISTEN connection is closed")
            return found
        except self.Error as error:
            log.warning("native: LISTEN connection lost (%s): polling until it is back",
                        str(error).strip().splitlines()[0] if str(error).strip() else
                        type(error).__name__)
            self._close_listener()
            return []

    def exchange(self, finish: list[list] | None, claim: dict | None) -> tuple[int, list]:
        """Finish a batch and claim the next one. Both at once: the finish runs on its own
        connection in a helper thread while this one claims, so the database works on both
        in parallel (two backends) instead of one after the other."""
        if finish and claim:
            pending = self._helper().submit(self._finish, finish)
            try:
                rows = self._claim(claim)
            finally:
                written = pending.result()  # raises what the finish raised
            return written, rows
        return (self._finish(finish) if finish else 0), (self._claim(claim) if claim else [])

    def _helper(self) -> Any:
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(1, thread_name_prefix="native-finish")
        return self.pool

    def _finish(self, finish: list) -> int:
        if self.finisher is None:
            self.finisher = connect(self.url, True if self.explicit_poll_only else None)
        statement = getattr(finish, "statement", FINISH)
        return self.finisher.execute(statement, finish).fetchone()[0]

    def _claim(self, claim: dict) -> list:
        self.due = None
        one = len(claim["queues"]) == 1
        if one:
            claim = {**claim, "queue": claim["queues"][0]}
        if not claim.get("limited"):  # one statement: no pipeline (it costs ~0.1 ms a claim)
            if claim.get("due"):  # see CLAIM_DUE
                rows = self.conn.execute(CLAIM_DUE_ONE if one else CLAIM_DUE, claim).fetchall()
                if rows and rows[-1][0] is None:
                    self.due = (rows.pop()[-1],)
                return rows
            return self.conn.execute(CLAIM_ONE if one else CLAIM, claim).fetchall()
        statement = CLAIM_ONE if one else CLAIM
        with self.conn.pipeline():  # rate-limited names (see ratelimit.py): both at once
            from supervisor.native import ratelimit

            claimed = self.conn.execute(ratelimit.exclude_limited(statement), claim)
            limited = self.conn.execute(ratelimit.CLAIM_LIMITED, claim)
        return claimed.fetchall() + limited.fetchall()

    def claim_ids(self, claim: dict) -> list:
        """CLAIM_IDS: the rows `claim["ids"]` names, those still waiting and due."""
        return self.conn.execute(CLAIM_IDS, claim).fetchall()

    def finish_flow(self, finish: list[list], hook: Any) -> int:
        """Finish jobs that are part of a workflow: the finish and what follows it (canvas
        follow-ups, chord counters) commit in one transaction."""
        from supervisor.native import canvas_store

        return canvas_store.finish_flow(self.conn, FINISH, finish, hook)

    def release(self, ids: list[int], tokens: list) -> int:
        return len(self.conn.execute(RELEASE, (ids, tokens)).fetchall())

    @staticmethod
    def finish_params(rows: list[tuple], plain: bool = False) -> list | dict:
        """FINISH's one parameter from (id, token, status, result, traceback, countdown,
        args, kwargs, forget) rows (results as JSON texts); with `plain`, FINISH_SAME's or
        FINISH_PLAIN's where they do the same (see those). The statement to run goes with
        them (`.statement`)."""
        texts: dict = {}  # one token per claim: its text once, not once a job
        if plain and rows and all(
                status != "RETRY" and result is not None and not forget and args is None
                and kwargs is None for _i, _t, status, result, _tb, _c, args, kwargs, forget
                in rows):
            ids = ",".join([str(row[0]) for row in rows])
            _i, token, status, result, *_rest = rows[0]
            if all(row[1] == token and row[2] == status and row[3] == result
                   and row[4] is None for row in rows):
                return SameFinish(ids=ids, token=str(token), status=status, result=result)
            tracebacks = [row[4] for row in rows]
            return PlainFinish(
                ids=ids,
                tokens=",".join([texts.get(t) or texts.setdefault(t, str(t))
                                 for _i, t, *_rest in rows]),
                statuses=",".join([row[2] for row in rows]),
                results="[" + ",".join([row[3] for row in rows]) + "]",
                tracebacks=json.dumps(tracebacks) if any(tracebacks) else None)
        return FinishParams([json.dumps([
            (i, texts.get(t) or texts.setdefault(t, str(t)), *rest) for i, t, *rest in rows])])

    def mark_started(self, ids: list[int], tokens: list) -> set[int]:
        return {row[0] for row in self.conn.execute(MARK_STARTED, (ids, tokens)).fetchall()}

    def release_token(self, token: Any) -> int:
        return len(self.conn.execute(RELEASE_TOKEN, (token,)).fetchall())

    def renew(self, lease: float, tokens: list) -> list[tuple]:
        return self.conn.execute(RENEW, (lease, tokens)).fetchall()

    def reap(self, max_recoveries: int) -> list[tuple]:
        return self.conn.execute(REAP, {"max": max_recoveries}).fetchall()

    def heartbeat(self, row: tuple) -> None:
        self.conn.execute(HEARTBEAT, row)

    def unregister(self, worker_id: str) -> None:
        self.conn.execute("DELETE FROM start_all.workers WHERE id = %s", (worker_id,))

    def publish_state(self, worker_id: str, state: str) -> None:
        from supervisor.native.control import PUBLISH

        self.conn.execute(PUBLISH, (state, worker_id))

    def fire_cron(self, name: str, slot: float, job: Job) -> bool:
        """Claim the slot and enqueue its job in one transaction: both or neither."""
        with self.conn.transaction():
            won = self.conn.execute(CRON_SLOT, (name, slot, job.task_id)).fetchall()
            if won:
                self.conn.execute(ENQUEUE, job_params([job]))
        return bool(won)

    def prune(self, ok: float, bad: float) -> tuple[int, int]:
        from supervisor.native.canvas_store import PRUNE_FLOWS

        row = self.conn.execute(PRUNE, {"ok": ok, "bad": bad}).fetchone()
        self.conn.execute(PRUNE_FLOWS, {"bad": bad})  # fired chords, saved group results
        return row[0], row[1]

    def revoke_mode(self, task_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT revoke FROM start_all.jobs WHERE task_id = %s", (task_id,)
        ).fetchone()
        return row[0] if row else None

    def take_next_due(self) -> tuple[bool, float | None]:
        """(True, seconds until the next waiting job is due, None: none waits) when the last
        claim answered it (CLAIM_DUE, it claimed fewer than asked for), else (False, None)."""
        due, self.due = self.due, None
        return (True, due[0]) if due is not None else (False, None)

    def next_due(self, queues: list[str], limits: dict | None = None) -> float | None:
        if limits:  # the soonest of a plain job and a rate-limited job's next token
            from supervisor.native import ratelimit

            plain = self.conn.execute(NEXT_DUE.rstrip() + " AND NOT (name = ANY(%s))",
                                      (queues, limits["limited"])).fetchone()[0]
            rated = None
            if limits.get("idle", 1):  # no idle thread: a finishing task wakes the loop
                rated = self.conn.execute(ratelimit.NEXT_LIMITED,
                                          {**limits, "queues": queues}).fetchone()[0]
            known = [d for d in (plain, rated) if d is not None]
            return min(known) if known else None
        row = self.conn.execute(NEXT_DUE, (queues,)).fetchone()
        return row[0] if row else None

    def interrupt(self) -> None:
        """From another thread: make a call blocked on these connections fail now."""
        import socket

        for conn in (self.conn, self.listener, self.finisher):
            try:
                sock = socket.socket(fileno=os.dup(conn.fileno()))
            except Exception:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.close()

    def close(self) -> None:
        for conn in (self.conn, self.listener, self.finisher):
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
        self.conn = self.listener = self.finisher = None
