"""The worker process: one claim loop (main thread) feeding a pool of executor threads.

Only the main thread talks to the database. Executors (executor.py) run tasks and hand
outcomes back through a deque plus a wake-up pipe; the loop writes a batch of them with one
fenced statement and claims the next batch in the same round trip. That is what lets one
connection move thousands of jobs per second. Signal handlers only set flags (and Python
writes the signal number to the same pipe via signal.set_wakeup_fd), so all the work happens
in the loop.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import select
import signal
import socket
import threading
import time
import uuid
from collections import Counter, deque
from datetime import timedelta
from typing import Any

from supervisor.native import control, dispatch, flow, ratelimit, worker_state
from supervisor.native import store as sql
from supervisor.native.backends import backend_for
from supervisor.native.canvas import FLOW_KEYS
from supervisor.native.cron import Cron, parse
from supervisor.native.exceptions import (
    ConfigError,
    DecodeError,
    EncodeError,
    TimeLimitExceeded,
)
from supervisor.native.executor import (
    FAILURE,
    FORGET,
    REPLACED,
    SUCCESS,
    Held,
    Outcome,
    request_of,
)
from supervisor.native.pool import make_pool
from supervisor.native.serial import dumps, exception_to_dict, storable_text

log = logging.getLogger("supervisor.native")
_STOP = object()
WAKE_GAP = 5.0  # a wait this much longer than asked for: the process was frozen (see _woke)
PREFETCH_BUDGET = 0.2  # seconds of queued work a thread may hold (adaptive prefetch)
# jobs per thread at most: a claim's round trip (a few ms for a few hundred rows) must not
# outlast the jobs still waiting, or the threads idle (no-op drain, c=1: 6.7k/s at 128, 9k/s at 512)
PREFETCH_CAP = 512
RUNTIME_KEEP = 0.8  # the moving average of runtimes keeps this much of itself per job
REFILL = 0.5  # claim again once the jobs waiting for a thread fall below this share of it
RETRY_FIRST = 0.05  # first reconnect delay after a failed attempt (seconds), doubling ...
RETRY_CAP = 0.5  # ... up to this: processing resumes within about this of the database's return
OUTAGE_LOG_EVERY = 30.0  # seconds between "still unreachable" lines
DB_UNREACHABLE = "database-unreachable"  # heartbeat file state (supervisor/probes.py reads it)
STALL_AFTER = 2.0  # a database call unanswered this long: the heartbeat says database-unreachable


class ReadyQueue:
    """The jobs waiting for a thread, best first: queue.PriorityQueue without its task
    accounting, filled a whole claim at a time (one lock round per claim, not per job)."""

    def __init__(self) -> None:
        self._heap: list = []
        self._cond = threading.Condition(threading.Lock())

    def put_many(self, items: list) -> None:
        if not items:
            return
        with self._cond:
            for item in items:
                heapq.heappush(self._heap, item)
            self._cond.notify(len(items))

    def put(self, item: Any) -> None:
        self.put_many([item])

    def get(self) -> Any:
        with self._cond:
            while not self._heap:
                self._cond.wait()
            return heapq.heappop(self._heap)

    def get_nowait(self) -> Any:
        with self._cond:
            if not self._heap:
                raise queue.Empty
            return heapq.heappop(self._heap)

    def qsize(self) -> int:
        return len(self._heap)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _needs_hook(o: Outcome) -> bool:
    """flow.needs_hook, with options naming no workflow key answered in C (most jobs)."""
    options = o.job.options
    if o.status != REPLACED and (not options or options.keys().isdisjoint(FLOW_KEYS)):
        return False
    return flow.needs_hook(options, o.status)


def _seconds(value: Any) -> float:
    """Celery accepts durations as seconds or as timedelta."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _category(error: BaseException) -> str:
    """A few words for the heartbeat file and the log, never a host, user or URL."""
    try:
        from supervisor.probes import _category as probe_category

        return probe_category(error)
    except (ImportError, AttributeError):
        return type(error).__name__


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return 0


class Worker:
    def __init__(self, app: Any, concurrency: int = 4, queues: list[str] | None = None,
                 poll_only: bool | None = None, beat: bool | None = None,
                 stop_timeout: float | None = None, hostname: str | None = None,
                 pool: str = "threads") -> None:
        conf = app.conf
        self.app = app
        self.concurrency = max(1, int(concurrency))
        self.queues = queues or [conf.task_default_queue]
        self.fixed_prefetch = conf.worker_prefetch_multiplier
        self.avg_runtime = 0.05  # seconds per task, a moving average; starts at prefetch 4
        self.capacity = 0
        self.adapt()
        self.last_claimed = 0
        self.last_limit = 1  # with last_claimed: the last claim came back short (idle queue)
        self.url = app.database_url
        if poll_only is None:
            poll_only = conf.native_poll_only
        self.db = backend_for(self.url).WorkerDb(self.url, bool(poll_only))
        if poll_only is None:
            self.db.poll_only = self.db.dialect == "sqlite" or sql.is_pooler(self.url)
        self.lease = float(conf.native_lease_seconds)
        self.beat_interval = float(conf.native_heartbeat_interval)
        self.stop_timeout = float(stop_timeout if stop_timeout is not None
                                  else conf.native_stop_timeout)
        self.hostname = hostname or socket.gethostname()
        # Celery's node name: -n name@host as given, else celery@host
        self.nodename = self.hostname if "@" in self.hostname else f"celery@{self.hostname}"
        self.started_mono = time.monotonic()
        self.totals: Counter[str] = Counter()  # tasks finished, by name (inspect().stats())
        self.id = f"{self.hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.heartbeat_file = os.environ.get("START_ALL_HEARTBEAT_FILE") or None
        use_beat = conf.native_beat if beat is None else beat
        self.cron = Cron(parse(conf.beat_schedule) if use_beat else [], conf.timezone)

        self.held: dict[int, Held] = {}
        self.to_mark: list[Held] = []  # held, to run one by one with a durable start mark
        self.sleeping = False  # the loop waits in select(): an executor must wake it
        self.by_task_id: dict[str, Held] = {}
        self.ready = ReadyQueue()
        self.seq = itertools.count()
        self.done: deque[Outcome] = deque()
        self.lock = threading.Lock()
        self.running: dict[int, Held] = {}
        self.draining = False
        self.unstarted: list[Held] = []
        self.threads: list[threading.Thread] = []
        self.processed = 0
        self.stop_requests = 0
        self.abort = False
        # the database connection's state: away is a state, not an error (see run)
        self.online = False
        self.announced = False
        self.next_connect = 0.0
        self.next_listen = 0.0
        self.attempts = 0
        self.offline_since: float | None = None
        self.offline_wall = 0.0
        self.offline_category = ""
        self.next_outage_log = 0.0
        self.reap_after = 0.0
        self.online_since = 0.0
        self.claim_in_doubt: uuid.UUID | None = None  # a claim whose answer was lost
        self.finish_in_doubt: set[int] = set()  # jobs whose result write lost its answer
        self.busy_since = 0.0  # when the loop's current turn began (0: waiting in select)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.pool = make_pool(pool, self)
        self.limits: dict | None = None

    def adapt(self) -> None:
        """Size the prefetch: jobs held but not started wait, so hold about PREFETCH_BUDGET
        seconds of work per thread (at least 1, at most PREFETCH_CAP jobs). Short tasks then
        move in big batches; long ones are not hoarded away from other workers.
        worker_prefetch_multiplier, when set, fixes it instead (as in Celery)."""
        if self.fixed_prefetch:
            multiplier = max(1, int(self.fixed_prefetch))
        else:
            multiplier = max(1, min(PREFETCH_CAP,
                                    int(PREFETCH_BUDGET / max(self.avg_runtime, 1e-6))))
        self.capacity = self.concurrency * multiplier

    def learn_runtime(self, batch: list[Outcome]) -> None:
        """Fold a batch's runtimes into the moving average, each job weighing as one step
        (a batch of n jobs moves it as n batches of one did): with one step per batch, a
        drain of quick tasks took about 20 claims to grow from 4 jobs to PREFETCH_CAP, half
        of a 5,000-task drain with 1 thread spent in round trips for small claims (measured:
        17 claims, 200 of 415 ms). A slow task still moves it by a fifth, as before."""
        keep = RUNTIME_KEEP ** len(batch)
        runtime = sum(o.runtime for o in batch) / len(batch)
        self.avg_runtime = keep * self.avg_runtime + (1 - keep) * runtime
        self.adapt()

    # --- signals ----------------------------------------------------------------------------
    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stop_requests += 1  # the loop sees it; a second request aborts

    def _on_abort(self, signum: int, frame: Any) -> None:
        self.abort = True

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGQUIT, self._on_abort)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    # --- executor threads -------------------------------------------------------------------
    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._executor, name="native-executor", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    def _executor(self) -> None:
        while True:
            job = self.ready.get()[-1]
            if job is _STOP:
                self.pool.thread_exit()
                return
            with self.lock:
                if self.draining:
                    self.unstarted.append(job)
                    continue
                job.thread = threading.get_ident()
                job.started = time.monotonic()
                self.running[job.id] = job
            outcome = self.pool.run(job)
            outcome.runtime = time.monotonic() - job.started
            with self.lock:
                self.running.pop(job.id, None)
                abandoned = job.abandoned
            if not abandoned:
                self.done.append(outcome)
            # an outcome is written as soon as the loop is free (group commit: what finishes
            # during one round trip goes in the next), so a kill finds few results unwritten
            if self.sleeping:
                self._wake()
            if abandoned:
                return  # a replacement thread took this one's place at the hard time limit

    # --- database steps ---------------------------------------------------------------------
    @property
    def poll_only(self) -> bool:
        return self.db.poll_only

    def _connect(self) -> None:
        applied = self.db.connect()
        if applied:
            log.info("native: schema migrations applied: %s", ", ".join(applied))

    def _exchange(self, flush: bool, limit: int) -> int:
        """Write finished outcomes and claim up to `limit` new jobs in one round trip
        (pipeline mode); returns how many jobs were claimed."""
        batch: list[Outcome] = []
        while flush and self.done:
            batch.append(self.done.popleft())
        token = uuid.uuid4()
        try:
            # workflow jobs finish with their follow-ups in their own transaction first;
            # plain jobs take the usual one-round-trip path (nothing added for them)
            flows = [o for o in batch if _needs_hook(o)]
            plain = [o for o in batch if not _needs_hook(o)] if flows else batch
            try:
                flow_written = self._finish_flows(flows) if flows else 0
            except self.db.Refused as error:
                flow_written = self._write_singly(batch, flows, error)
            try:
                written, rows = self.db.exchange(
                    self._finish_params(plain, fast=True) if plain else None,
                    {"queues": self.queues, "limit": limit, "token": token, "worker": self.id,
                     "lease": self.lease, "due": self.last_claimed < self.last_limit,
                     **self._limit_params()} if limit > 0 else None,
                )
            except self.db.Refused as error:
                if not plain:
                    raise
                if limit > 0:  # the claim ran beside the finish and may have committed
                    self.db.release_token(token)
                written, rows = self._write_singly(batch, plain, error), []
            written += flow_written
            if limit > 0:
                self.last_claimed, self.last_limit = len(rows), limit
        except Exception:
            self.done.extendleft(reversed(batch))  # kept for the next attempt (still fenced)
            self.finish_in_doubt.update(o.job.id for o in batch)  # it may have committed
            if limit > 0:
                self.claim_in_doubt = token  # it may have committed: returned on reconnect
            raise
        if written < len(batch):
            self._report_unwritten(batch, len(batch) - written)
        if self.finish_in_doubt:
            self.finish_in_doubt.difference_update(o.job.id for o in batch)
        for o in batch:
            self.held.pop(o.job.id, None)
            self.by_task_id.pop(o.job.task_id, None)
            self.totals[o.job.name] += 1
        # after the write, so whoever sees an id finds its result; FORGET with a value is an
        # ignore_result success (FORGET without one is Ignore, not a success)
        worker_state.successful_requests.update(
            o.job.task_id for o in batch
            if o.status == SUCCESS or (o.status == FORGET and o.result is not None))
        self.processed += len(batch)
        if batch:
            self.learn_runtime(batch)
        self._hold(rows, token)
        return len(rows)

    def _write_singly(self, batch: list[Outcome], outcomes: list[Outcome],
                      error: Exception) -> int:
        """A finish the database refused for its data (a value out of range: a data error,
        not an outage): write each outcome alone, and store one that is refused again as a
        FAILURE saying why, so that one task's outcome never holds up the others' (nor
        reads as the database being away, retried for ever)."""
        log.warning("native: a write of %d result(s) was refused (%s): writing them one by one",
                    len(outcomes), _first_line(error))
        written = 0
        for o in outcomes:
            try:
                written += self._write_one(o)
                continue
            except self.db.Refused as refused:
                reason = _first_line(refused)
            log.error("native: the %s of %s[%s] cannot be stored (%s): stored as a failure "
                      "instead", o.status, o.job.name, o.job.task_id, reason)
            failed = Outcome(o.job, FAILURE, exception_to_dict(EncodeError(
                f"the task's {o.status.lower()} could not be stored: {reason}")))
            failed.runtime = o.runtime
            batch[batch.index(o)] = failed  # what the bookkeeping after the write sees
            written += self._write_one(failed)
        return written

    def _write_one(self, o: Outcome) -> int:
        if _needs_hook(o):
            return self._finish_flows([o])
        return self.db.exchange(self._finish_params([o], fast=True), None)[0]

    def _report_unwritten(self, batch: list[Outcome], unwritten: int) -> None:
        """Results the fence refused. After a write whose answer was lost (the connection
        dropped), the fence also refuses what that write had already stored: not a loss."""
        doubtful = min(unwritten, sum(o.job.id in self.finish_in_doubt for o in batch))
        if unwritten > doubtful:
            log.warning("native: %d finished job(s) were no longer ours (lease lost): "
                        "their results were discarded", unwritten - doubtful)
        if doubtful:
            log.warning("native: %d result(s) not written again: the attempt cut off with the "
                        "connection had stored them, or their lease ran out meanwhile (then "
                        "the job runs again)", doubtful)

    def _hold(self, rows: list, token: uuid.UUID) -> None:
        """Take the claimed rows: held under `token`, queued for the executor threads."""
        ready = []
        for row in rows:
            try:
                job = Held(row, token)
            except Exception as error:  # noqa: BLE001 - that job fails, not the worker
                self._undecodable(row, token, error)
                continue
            self.held[job.id] = job
            self.by_task_id[job.task_id] = job
            if dispatch.task_received.receivers:
                dispatch.task_received.send(sender=self, request=request_of(job, self.hostname))
            if job.strict:
                self.to_mark.append(job)  # see _start_strict
                continue
            # higher priority first, then the order the queue had them in
            ready.append((-job.priority, row[-1], next(self.seq), job))
        self.ready.put_many(ready)

    def _undecodable(self, row: tuple, token: uuid.UUID, error: Exception) -> None:
        """A claimed row whose arguments or options cannot be decoded (nested deeper than
        Python's JSON parser goes, say): it ends FAILURE, written with the next finish."""
        job = Held((*row[:5], "[]", "{}", None, *row[8:]), token)
        log.error("native: the arguments of %s[%s] cannot be decoded (%s): it fails",
                  job.name, job.task_id, _first_line(error))
        self.held[job.id] = job
        self.by_task_id[job.task_id] = job
        self.done.append(Outcome(job, FAILURE, exception_to_dict(DecodeError(
            f"its stored arguments could not be decoded: {_first_line(error)}"))))

    def _claim_named(self, ids: list[int]) -> bool:
        """Claim the rows that notifications named (store.ENQUEUE_ONE) by primary key: the
        pickup of a job sent while this worker waited. Rows past the free slots are left to
        the usual claim: True when some were."""
        free = self.capacity - len(self.held)
        if free <= 0:
            return True
        token = uuid.uuid4()
        try:
            rows = self.db.claim_ids({"ids": ids[:free], "queues": self.queues, "token": token,
                                      "worker": self.id, "lease": self.lease})
        except Exception:
            self.claim_in_doubt = token  # it may have committed: returned on reconnect
            raise
        self._hold(rows, token)
        return len(ids) > free

    def _start_strict(self) -> None:
        """Jobs held by a worker that died may have been running when it died: each runs
        only once its start is durable (MARK_STARTED), and only as many as there are idle
        threads, so that dying on one of them again counts as a recovery while jobs merely
        fetched never do (see store.REAP)."""
        with self.lock:
            idle = self.concurrency - len(self.running) - self.ready.qsize()
        if idle <= 0:
            return
        batch, self.to_mark = self.to_mark[:idle], self.to_mark[idle:]
        try:
            marked = self.db.mark_started([j.id for j in batch], [j.token for j in batch])
        except Exception:
            self.to_mark[:0] = batch
            raise
        for job in batch:
            if job.id in marked:
                self.ready.put((-job.priority, 0.0, next(self.seq), job))
            else:  # no longer ours (lease lost while held): not ours to run
                self.held.pop(job.id, None)
                self.by_task_id.pop(job.task_id, None)

    def _finish_flows(self, flows: list[Outcome]) -> int:
        """The completion hook of chains, chords and links: flow.after_finish() runs in
        the transaction that records these finishes, so both commit or neither does."""

        def hook(tx: Any, written: set) -> None:
            flow.after_finish(self.app, tx,
                                [flow.Finished.of(o) for o in flows if o.job.id in written])

        return self.db.finish_flow(self._finish_params(flows), hook)

    def _limit_params(self) -> dict:
        """Rate-limited jobs are claimed only for threads free to start them at once, so
        the limit spaces their starts, not just their claims."""
        if not self.limits:
            return {}
        with self.lock:
            busy = len(self.running)
        return {**self.limits, "idle": max(0, self.concurrency - busy - self.ready.qsize())}

    def _finish_params(self, batch: list[Outcome], fast: bool = False) -> Any:
        """The finish statement's parameters; `fast`: FINISH_PLAIN's where it applies (not
        for workflow jobs, whose finish runs FINISH with their hook)."""
        return self.db.finish_params([
            (o.job.id, o.job.token, o.status if o.status != FORGET else SUCCESS,
             dumps(o.result) if isinstance(o.result, dict) else o.result,
             storable_text(o.traceback), o.countdown, o.args, o.kwargs, o.status == FORGET)
            for o in batch], fast)

    def _flush(self) -> None:
        if self.done:
            self._exchange(True, 0)

    def _release(self, jobs: list[Held]) -> None:
        if not jobs:
            return
        released = self.db.release([j.id for j in jobs], [j.token for j in jobs])
        for j in jobs:
            self.held.pop(j.id, None)
            self.by_task_id.pop(j.task_id, None)
        log.info("native: returned %d job(s) to the queue", released)

    def _heartbeat(self) -> None:
        # Each statement holds the loop for its round trip (the reap up to ~30 ms under
        # load), and a result not yet written makes its task run again after a SIGKILL: so
        # what finished before or during one statement is written before the next.
        self._flush()
        tokens = list({j.token for j in self.held.values()})
        if tokens:
            for _id, task_id, revoke in self.db.renew(self.lease, tokens):
                if revoke:
                    self._revoke_local(task_id, revoke)
            self._flush()
        if time.monotonic() >= self.reap_after:
            reaped = self.db.reap(int(self.app.conf.native_max_recoveries))
            for _id, task_id, status in reaped:
                log.warning("native: lease of %s expired: now %s", task_id, status)
            self._flush()
        self.db.heartbeat((
            self.id, self.hostname, os.getpid(), self.queues, self.concurrency,
            len(self.running), self.processed,
        ))
        self.db.publish_state(self.id, control.worker_state(self))

    def _register(self) -> None:
        """The worker's row and its first published state (inspect() reads them)."""
        try:
            self.db.heartbeat((self.id, self.hostname, os.getpid(), self.queues,
                               self.concurrency, 0, self.processed))
            self.db.publish_state(self.id, control.worker_state(self))
        except self.db.Error as error:
            log.warning("native: could not register the worker yet (%s)", error)

    def _fire_cron(self) -> None:
        for entry, slot in self.cron.due():
            task = self.app.tasks.get(entry.task)
            if task is None:
                log.error("native: beat entry %r: task %r is not registered", entry.name,
                          entry.task)
                continue
            job = task.build_job(entry.args, entry.kwargs, **entry.options)
            if self.db.fire_cron(entry.name, slot, job):
                log.info("native: beat %s fired %s (%s)", entry.name, entry.task, job.task_id)

    def _prune(self) -> None:
        self._flush()  # a long DELETE must not hold back finished results (see _heartbeat)
        ok, bad = self._prune_rows()
        if ok or bad:
            log.info("native: retention pruned %d succeeded and %d failed/revoked row(s)", ok, bad)

    def _prune_rows(self) -> tuple[int, int]:
        return self.db.prune(_seconds(self.app.conf.result_expires),
                             _seconds(self.app.conf.native_failure_expires))

    # --- revocation and time limits ---------------------------------------------------------
    def _revoke_local(self, task_id: str, mode: str) -> None:
        job = self.by_task_id.get(task_id)
        if job is None:
            return  # not ours; a waiting job was already marked REVOKED by revoke() itself
        job.revoke = job.revoke or mode  # a job not started yet will not start
        if mode != "terminate":
            return
        with self.lock:
            if job.id in self.running and not job.terminated:
                job.terminated = self.pool.terminate(job)
                if job.terminated:
                    log.info("native: terminating %s (%s)", job.name, task_id)

    def _limits(self, job: Held) -> tuple[float | None, float | None]:
        task = self.app.tasks.get(job.name)
        options = job.options or {}
        soft = options.get("soft_time_limit") or getattr(task, "soft_time_limit", None) \
            or self.app.conf.task_soft_time_limit
        hard = options.get("time_limit") or getattr(task, "time_limit", None) \
            or self.app.conf.task_time_limit
        return soft, hard

    def _enforce_time_limits(self) -> float:
        """Raise soft limits in the task's thread; at the hard limit record FAILURE and give
        the thread's slot to a fresh thread. Returns seconds until the next limit."""
        now = time.monotonic()
        next_in = float("inf")
        with self.lock:
            running = list(self.running.values())
        for job in running:
            soft, hard = self._limits(job)
            elapsed = now - job.started
            if soft and not job.soft_sent:
                if elapsed >= soft:
                    with self.lock:
                        job.soft_sent = self.pool.soft_limit(job)
                    if not job.soft_sent:  # not in the task's code yet (or any more)
                        next_in = min(next_in, 0.02)
                else:
                    next_in = min(next_in, soft - elapsed)
            if hard and not job.hard_sent:
                if elapsed >= hard:
                    with self.lock:
                        job.hard_sent = True
                        if self.pool.hard_limit(job):
                            log.error("native: %s[%s] exceeded its hard time limit: killed",
                                      job.name, job.task_id)
                            continue  # the child is killed; its thread reports the job
                        job.abandoned = True
                        self.running.pop(job.id, None)
                    error = TimeLimitExceeded(f"hard time limit ({hard}s) exceeded")
                    self.done.append(Outcome(job, FAILURE, exception_to_dict(error)))
                    log.error("native: %s[%s] exceeded its hard time limit", job.name,
                              job.task_id)
                    self._start_thread()
                else:
                    next_in = min(next_in, hard - elapsed)
        return next_in

    # --- the loop ---------------------------------------------------------------------------
    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _notifications(self) -> tuple[bool, list[int]]:
        """Read pending NOTIFYs: whether jobs no notification named may be waiting, and the
        rows notifications named (due jobs sent one by one, see store.ENQUEUE_ONE)."""
        jobs = control_asked = False
        named: list[int] = []
        for channel, payload in self.db.notifications():
            if channel == sql.NOTIFY_JOBS:
                queue_name, _, row = payload.partition(sql.ID_MARK)
                if queue_name in self.queues:
                    if row.isdigit():
                        named.append(int(row))
                    else:
                        jobs = True
            elif channel == sql.NOTIFY_CONTROL:
                control_asked = True
            elif payload in self.by_task_id:
                self._revoke_local(payload, self.db.revoke_mode(payload) or "revoke")
        if control_asked:  # inspect() is waiting for a fresh state
            self.db.publish_state(self.id, control.worker_state(self))
        return jobs, named

    def _begin_stop(self) -> None:
        log.info("native: stopping: no new claims, finishing running tasks (budget %.1fs)",
                 self.stop_timeout)
        dispatch.worker_shutting_down.send(sender=self.nodename, sig="SIGTERM", how="Warm",
                                           exitcode=0)
        with self.lock:
            self.draining = True
        while True:
            try:
                item = self.ready.get_nowait()
            except queue.Empty:
                break
            if item[-1] is not _STOP:
                self.unstarted.append(item[-1])
        self.unstarted.extend(self.to_mark)
        self.to_mark = []
        for _ in self.threads:
            self.ready.put((float("inf"), 0.0, next(self.seq), _STOP))
        # self.unstarted is handed back by the loop (once the database is there)

    def stop(self) -> None:
        """Ask for a graceful stop from another thread (as SIGTERM does)."""
        self.stop_requests += 1
        self._wake()

    def run(self) -> int:
        """Run until stopped; returns the process exit code. A database that is away (at
        start or later, for any time) is a state of this loop, never an exit. Off the main
        thread (a test's in-process worker, see testing.py) no signal handlers are installed:
        use stop()."""
        if threading.current_thread() is threading.main_thread():
            self.install_signals()
        self.app.import_pending()
        self.limits = ratelimit.limits_of(self.app)  # None: plain claims only
        if self.limits and self.db.dialect != "postgresql":
            raise ConfigError(f"rate_limit ({', '.join(self.limits['limited'])}) needs "
                              "PostgreSQL; the SQLite development queue cannot honour it")
        for _ in range(self.concurrency):
            self._start_thread()
        threading.Thread(target=self._guard, name="native-db-guard", daemon=True).start()
        poll = self.app.conf.native_poll_interval or (0.5 if self.poll_only else 2.0)
        now = time.monotonic()
        next_beat = now
        next_prune = now
        next_poll = now
        next_cron = 0.0 if self.cron.entries else float("inf")
        maybe_more = True
        due_at = float("inf")  # when the next delayed (or rate-limited) job becomes due
        stop_deadline = None
        # with processes each child recycles itself; with threads the worker does
        per_child = self.pool.kind == "prefork"
        max_tasks = None if per_child else self.app.conf.worker_max_tasks_per_child
        max_kib = None if per_child else self.app.conf.worker_max_memory_per_child
        while True:
            try:
                now = self.busy_since = time.monotonic()
                if not self.online and now >= self.next_connect:
                    if self._try_connect(poll):
                        next_beat = next_poll = now  # renew leases, write kept results, claim
                        maybe_more = True
                if self.stop_requests and stop_deadline is None:
                    stop_deadline = time.monotonic() + self.stop_timeout
                    self._begin_stop()
                if self.stop_requests > 1 or self.abort:
                    return self._abort("second stop signal" if not self.abort else "SIGQUIT")
                now = time.monotonic()
                if stop_deadline is not None:
                    with self.lock:
                        busy = bool(self.running) or bool(self.unstarted)
                    if self.online:
                        self._flush()
                        with self.lock:
                            unstarted, self.unstarted = self.unstarted, []
                        self._release(unstarted)
                    if not busy and not self.done:
                        return self._finish_stop()
                    if now >= stop_deadline:
                        return self._abort("stop budget spent")
                if now >= next_beat:
                    if self.online:
                        self._heartbeat()
                    self._beat_file()
                    next_beat = now + self.beat_interval
                    if max_kib and _rss_kib() > max_kib and stop_deadline is None:
                        log.info("native: memory above worker_max_memory_per_child: recycling")
                        self.stop_requests += 1
                        continue
                if self.online and now >= next_prune:
                    self._prune()
                    next_prune = now + float(self.app.conf.native_prune_interval)
                if (self.online and stop_deadline is None and self.cron.entries
                        and time.time() >= next_cron):
                    self._fire_cron()  # wall clock: cron slots are calendar times
                    next_cron = time.time() + self.cron.seconds_to_next()
                if max_tasks and self.processed >= max_tasks and stop_deadline is None:
                    log.info("native: %d tasks processed: recycling", self.processed)
                    self.stop_requests += 1
                    continue
                if self.online and not self.poll_only and self.db.fileno() is None \
                        and now >= self.next_listen:
                    self._relisten()
                    maybe_more = True  # notifications may have been missed meanwhile
                if now >= next_poll:
                    maybe_more = True
                    next_poll = now + (poll if self.db.fileno() is not None or self.poll_only
                                       else min(poll, RETRY_CAP))
                if self.to_mark and self.online and stop_deadline is None:
                    self._start_strict()
                # a claim frees nothing until the finishes are written, so do both together
                ready_n = self.ready.qsize()
                free = self.capacity - len(self.held) + len(self.done)
                want_claim = (self.online and stop_deadline is None and maybe_more and free > 0
                              and ready_n < max(self.concurrency, self.capacity * REFILL)
                              and not self.to_mark)
                if self.online and self.done:
                    self._exchange(True, free if want_claim else 0)
                elif want_claim:
                    self._exchange(False, free)
                # a wake-up for another reason (a task finished) keeps the known due time
                due_in = min(poll, max(0.0, due_at - now))
                if want_claim:
                    maybe_more = self.last_claimed == free
                    if not maybe_more:
                        known, next_due = self.db.take_next_due()  # an idle claim says
                        if not known:
                            next_due = (self.db.next_due(self.queues, self._limit_params())
                                        if self.limits else self.db.next_due(self.queues))
                        if next_due is not None:
                            due_in = max(0.0, next_due)
                            due_at = now + due_in
                    elif self.ready.qsize() < self.concurrency:
                        continue  # the queue is not empty and threads are free: go round
                timeout = min(due_in, max(0.0, next_poll - now), max(0.0, next_beat - now),
                              self._enforce_time_limits(),
                              max(0.0, next_cron - time.time()) + 0.001)
                if not self.online:
                    timeout = min(timeout, max(0.0, self.next_connect - now))
                elif not self.poll_only and self.db.fileno() is None:
                    timeout = min(timeout, max(0.0, self.next_listen - now))
                if stop_deadline is not None:
                    timeout = min(timeout, max(0.0, stop_deadline - now), 0.5)
                if self.to_mark and self.online:
                    timeout = min(timeout, 0.05)  # threads free up without waking the loop
                if self.stop_requests and stop_deadline is None:
                    timeout = 0
                self.sleeping = True
                if self.done and self.online:
                    timeout = 0  # outcomes arrived meanwhile: write them now
                waited_m, waited_w = time.monotonic(), time.time()
                self.busy_since = 0.0
                readable, _, _ = select.select(self._fds(), [], [], timeout)
                self.sleeping = False
                self.busy_since = time.monotonic()
                frozen = max(time.monotonic() - waited_m, time.time() - waited_w) - timeout
                if frozen > WAKE_GAP:
                    self._woke(frozen)
                    next_beat = next_cron = 0.0  # renew leases and look at the beat now
                    continue
                if self.wake_r in readable:
                    self._drain_wake()
                if self.online:
                    unnamed, named = self._notifications()
                    if unnamed:
                        maybe_more = True
                    if named:
                        # idle (nothing known to wait, nothing to write): claim just those
                        # rows now; otherwise the usual claim takes them with the rest
                        if (maybe_more or self.done or self.limits or self.to_mark
                                or self.stop_requests or stop_deadline is not None):
                            maybe_more = True
                        else:
                            maybe_more = self._claim_named(named)
                if due_in <= timeout:
                    maybe_more = True
                    due_at = float("inf")
            except Exception as error:
                if not isinstance(error, self.db.Error):
                    raise
                self._went_offline(error)

    # --- the database being away ------------------------------------------------------------
    def _try_connect(self, poll: float) -> bool:
        """One connection attempt; on failure the next one is scheduled with capped backoff."""
        try:
            self._connect()
        except Exception as error:
            if not isinstance(error, self.db.Error):
                raise
            self._close()
            self._note_unreachable(error)
            return False
        since = self.offline_since
        self.online = True
        self.online_since = time.monotonic()
        self.offline_since = None
        # others' leases may have run out during the outage too: give their workers one
        # heartbeat to renew them before this one reaps anything
        self.reap_after = time.monotonic() + self.beat_interval
        if self.claim_in_doubt is not None:
            self._return_in_doubt()
        if not self.announced:
            self.announced = True
            self._register()  # inspect().ping() finds it from the moment it says ready
            log.info("native: worker %s ready: %d %s, queues %s, %s", self.id,
                     self.concurrency, "processes" if self.pool.kind == "prefork" else "threads",
                     ",".join(self.queues), "poll-only" if self.poll_only else "LISTEN/NOTIFY")
            dispatch.worker_ready.send(sender=self)
        if since is not None:
            log.warning("native: database reachable again after %.1f s; %d kept result(s) to "
                        "write", time.monotonic() - since, len(self.done))
        self._beat_file()
        return True

    def _note_unreachable(self, error: Exception) -> None:
        now = time.monotonic()
        self.attempts += 1
        self.next_connect = now + min(RETRY_CAP, RETRY_FIRST * 2 ** (self.attempts - 1))
        category = _category(error)
        if self.offline_since is None:
            self.offline_since = now
            self.offline_wall = time.time()
            self.offline_category = category
            self.next_outage_log = now + OUTAGE_LOG_EVERY
            log.error("native: database unreachable (%s): retrying every %.1f s at most; "
                      "running tasks go on and their results are kept until it is back",
                      category, RETRY_CAP)
            self._beat_file()
        elif now >= self.next_outage_log:
            self.next_outage_log = now + OUTAGE_LOG_EVERY
            self.offline_category = category
            log.error("native: database still unreachable after %.0f s (%s); %d result(s) "
                      "kept", now - self.offline_since, category, len(self.done))

    def _went_offline(self, error: Exception) -> None:
        """A statement failed: drop the connections and go on without them."""
        self.online = False
        self._close()
        if time.monotonic() - self.online_since > RETRY_CAP:
            self.attempts = 0  # it had been working: a dropped connection, retry at once
        self._note_unreachable(error)
        if self.attempts == 1:
            self.next_connect = time.monotonic()

    def _relisten(self) -> None:
        """Only the LISTEN connection was lost: claims go on (polling) while it is redone."""
        try:
            self.db.listen()
            log.info("native: LISTEN connection restored")
        except Exception as error:
            if not isinstance(error, self.db.Error):
                raise
            # if the whole database is away, the next statement on the main connection says so
            self.next_listen = time.monotonic() + RETRY_CAP

    def _return_in_doubt(self) -> None:
        """A claim whose answer was lost with the connection may have committed: hand those
        rows back at once instead of waiting for their lease to run out."""
        returned = self.db.release_token(self.claim_in_doubt)
        self.claim_in_doubt = None
        if returned:
            log.info("native: returned %d job(s) claimed as the connection dropped", returned)

    def _guard(self) -> None:
        """A database call that never answers (a pooler queueing it while the server is
        down, a frozen host) must not look like a dead worker: after STALL_AFTER seconds this
        thread keeps the heartbeat file fresh with the database-unreachable state, and after a lease
        it cuts the connections so that the loop's call fails and it reconnects."""
        cut_for = 0.0
        next_beat = 0.0
        while True:
            time.sleep(0.25)
            since = self.busy_since
            now = time.monotonic()
            if not since or now - since < STALL_AFTER:
                continue
            if now >= next_beat:
                next_beat = now + min(self.beat_interval, 1.0)
                self._beat_file(f"{DB_UNREACHABLE} {int(time.time() - (now - since))} no answer")
            if now - since >= self.lease and cut_for != since:
                cut_for = since
                log.error("native: no answer from the database for %.0f s: cutting the "
                          "connection", now - since)
                self.db.interrupt()

    def _beat_file(self, line: str | None = None) -> None:
        """The supervisor's probe reads this file: its mtime says the loop is alive, its one
        line what state it is in (see docs/native-worker.md)."""
        if not self.heartbeat_file:
            return
        if line is not None:
            line += "\n"
        elif self.online:
            line = "ok\n"
        else:
            line = f"{DB_UNREACHABLE} {int(self.offline_wall)} {self.offline_category}\n"
        tmp = f"{self.heartbeat_file}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(line)
            os.replace(tmp, self.heartbeat_file)
        except OSError as error:
            log.warning("native: cannot write the heartbeat file: %s", error.strerror)

    def _woke(self, frozen: float) -> None:
        """The process was frozen (a sleeping free instance, `podman pause`, a VM suspended):
        both clocks or either may have jumped. Connections may have died silently meanwhile,
        and a query on a dead TCP connection can hang for minutes: open fresh ones now, then
        renew our leases at once (the loop's next step) before anyone reaps them."""
        log.warning("native: woke after about %.0f s frozen (clock jump): reconnecting and "
                    "renewing %d lease(s)", frozen, len(self.held))
        self._close()
        self.online = False  # the loop reconnects at once (and renews before it reaps)
        self.next_connect = 0.0

    def _fds(self) -> list[int]:
        listen = self.db.fileno() if self.online else None
        return [self.wake_r] if listen is None else [self.wake_r, listen]

    def _finish_stop(self) -> int:
        log.info("native: stopped cleanly after %d task(s)", self.processed)
        dispatch.worker_shutdown.send(sender=self)
        self._unregister()
        self._close()
        return 0

    def _abort(self, why: str) -> int:
        """Requeue everything still held; their threads' later results will be fenced out."""
        log.warning("native: aborting (%s): returning running and unstarted jobs to the queue",
                    why)
        with self.lock:
            self.draining = True
            self.pool.abort()  # child processes stop before their jobs are handed back
        if not self.online:
            log.error("native: the database is unreachable: %d held job(s) go back when their "
                      "leases expire, %d unwritten result(s) are lost and those tasks will run "
                      "again", len(self.held) - len(self.done), len(self.done))
            dispatch.worker_shutdown.send(sender=self)
            self._close()
            return 0
        try:
            self._flush()
            self._release(list(self.held.values()))
            self._unregister()
        except Exception as error:
            log.error("native: could not return jobs (%s): their leases will expire and the "
                      "reaper will requeue them", error)
        dispatch.worker_shutdown.send(sender=self)
        self._close()
        return 0

    def _unregister(self) -> None:
        try:
            self.db.unregister(self.id)
        except Exception:
            pass

    def _close(self) -> None:
        self.db.close()
