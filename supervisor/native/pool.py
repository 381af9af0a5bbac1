"""Where tasks run: `--pool threads` (the default) or `--pool prefork` (child processes).

The worker's loop and its executor threads are the same for both; a pool only decides what
an executor thread does with a job (`run`) and how a soft limit, a hard limit or a terminate
reaches the task.

threads: the task runs in the executor thread. Limits and terminate are raised in that thread
    with PyThreadState_SetAsyncExc, which only takes effect at the next Python bytecode. The
    worker makes time.sleep interruptible (see `install_interruptible_sleep`), so a soft limit
    or terminate also cuts a sleep short; a task blocked in C (a socket read, a C extension)
    is beyond reach: at the hard limit its result is written as FAILURE and the thread is
    abandoned (a fresh one takes its slot), but the call keeps running until it returns.
prefork: each executor thread drives one child process forked from the worker, sending it
    jobs over a pipe. A soft limit is SIGUSR1 (its handler raises SoftTimeLimitExceeded, which
    interrupts sleep and any Python code), a hard limit and a terminate are SIGKILL: the child
    dies wherever it is, the thread reports the job and forks a replacement. CPU-bound tasks
    run in parallel. Children ignore SIGTERM/SIGINT (the worker decides how to stop), die with
    the worker (PR_SET_PDEATHSIG), and recycle themselves after worker_max_tasks_per_child
    tasks or worker_max_memory_per_child KiB.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
import warnings
from multiprocessing.connection import Connection, Pipe
from typing import Any

from supervisor.native import dispatch
from supervisor.native.exceptions import (
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from supervisor.native.executor import (
    FAILURE,
    REVOKED,
    Held,
    Outcome,
    execute,
    raise_in_thread,
    request_of,
)
from supervisor.native.serial import exception_to_dict

log = logging.getLogger("supervisor.native")
POOLS = ("threads", "prefork")
PR_SET_PDEATHSIG = 1


# --- threads -------------------------------------------------------------------------------
_real_sleep = time.sleep
_wakers: dict[int, threading.Event] = {}  # executor thread ident -> its sleep's wake-up


def _interruptible_sleep(seconds: float) -> None:
    """time.sleep for executor threads: a wait another thread can cut short."""
    event = _wakers.get(threading.get_ident())
    if event is None:
        return _real_sleep(seconds)
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    event.clear()
    try:
        event.wait(seconds)
    except BaseException:  # the limit's exception may land inside Event.wait's own code:
        _wakers[threading.get_ident()] = threading.Event()  # never reuse that Event
        raise


def install_interruptible_sleep() -> None:
    """Replace time.sleep in this process (the thread-pool worker only) before the task
    modules are imported, so `from time import sleep` in them gets the interruptible one."""
    time.sleep = _interruptible_sleep


class ThreadPool:
    kind = "threads"

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        install_interruptible_sleep()  # the CLI does it earlier, before tasks are imported

    def run(self, job: Held) -> Outcome:
        ident = threading.get_ident()
        if ident not in _wakers:  # (setdefault would build an Event per job)
            _wakers[ident] = threading.Event()
        return execute(self.worker.app, job, self.worker.hostname, self.worker.lock)

    def _interrupt(self, job: Held, exc_type: type[BaseException]) -> bool:
        """Caller holds worker.lock. True when the exception was raised in the task."""
        if not (job.in_user_code and job.thread):
            return False
        raise_in_thread(job.thread, exc_type)
        event = _wakers.get(job.thread)
        if event is not None:
            event.set()  # a sleeping task wakes and meets the exception at once
        return True

    def soft_limit(self, job: Held) -> bool:
        return self._interrupt(job, SoftTimeLimitExceeded)

    def hard_limit(self, job: Held) -> bool:
        """False: the pool cannot end the task; the worker abandons the thread instead."""
        self._interrupt(job, TimeLimitExceeded)
        return False

    def terminate(self, job: Held) -> bool:
        return self._interrupt(job, TaskRevokedError)

    def pids(self) -> list[int]:
        return []

    def pid_of(self, job: Held) -> int:
        return os.getpid()

    def thread_exit(self) -> None:
        pass

    def abort(self) -> None:
        pass  # threads cannot be stopped; their late results are fenced out


# --- prefork -------------------------------------------------------------------------------
class _Child:
    """One forked child and the pipe to it, owned by one executor thread."""

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid, self.conn = pid, conn
        self.job: Held | None = None
        self.killed = False
        self.tasks = 0

    def kill(self) -> None:
        self.killed = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap(self) -> str:
        """Wait for the dead child; describe how it ended."""
        self.conn.close()
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return "exited"
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            return f"signal {signum} ({signal.Signals(signum).name})"
        return f"exitcode {os.waitstatus_to_exitcode(status)}"


class PreforkPool:
    kind = "prefork"

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.children: dict[int, _Child] = {}  # executor thread ident -> its child
        self.by_job: dict[int, _Child] = {}
        self.parent = os.getpid()
        self.aborting = False

    # runs in an executor thread
    def run(self, job: Held) -> Outcome:
        ident = threading.get_ident()
        child = self.children.get(ident)
        if child is not None and not child.killed and _exited(child.pid):
            # it died while idle (the OOM killer picks big processes): the job is not its
            log.warning("native: pool child %d died while idle: forking another", child.pid)
            child.conn.close()
            child.killed = True
        if child is None or child.killed:
            child = self.children[ident] = self._fork()
        try:
            child.conn.send(job)
        except OSError:  # it died while idle (OOM killer, a stray SIGKILL): a fresh one
            child.reap()
            child = self.children[ident] = self._fork()
            child.conn.send(job)
        with self.worker.lock:
            child.job = job
            self.by_job[job.id] = child
            if job.hard_sent or job.terminated:  # the limit came while it was being sent
                child.kill()
        try:
            reply = child.conn.recv()
        except (EOFError, OSError):
            reply = None
        with self.worker.lock:
            child.job = None
            self.by_job.pop(job.id, None)
        if reply is None:
            how = child.reap()
            child.killed = True
            if self.aborting:  # killed by a cold stop: the job is handed back, not failed
                job.abandoned = True
                return Outcome(job, FAILURE)
            if job.terminated:
                dispatch.task_revoked.send(
                    sender=self.worker.app.tasks.get(job.name),
                    request=request_of(job, self.worker.hostname), terminated=True,
                    signum=signal.SIGKILL, expired=False)
                return Outcome(job, REVOKED, exception_to_dict(TaskRevokedError("terminated")))
            if job.hard_sent:
                return Outcome(job, FAILURE, exception_to_dict(TimeLimitExceeded(
                    f"hard time limit exceeded: child killed ({how})")))
            log.error("native: pool child %d running %s[%s] died (%s)", child.pid, job.name,
                      job.task_id, how)
            return Outcome(job, FAILURE, exception_to_dict(
                WorkerLostError(f"Worker exited prematurely: {how}.")))
        status, result, traceback, countdown, args, kwargs, retire = reply
        if retire:  # the child is leaving (max tasks / memory): collect it now
            child.reap()
            child.killed = True
        outcome = Outcome(job, status, result, traceback, countdown, args, kwargs)
        return outcome

    def _fork(self) -> _Child:
        parent_end, child_end = Pipe(duplex=True)
        worker = self.worker
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork() in a threaded process. The child only runs
            # execute(): the locks it needs (logging, the producer store) are reset at fork.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                parent_end.close()
                code = _child_main(worker, child_end, self.parent)
            except BaseException:  # noqa: BLE001 - whatever happens, leave through _exit
                log.exception("native: pool child failed")
            finally:
                os._exit(code)
        child_end.close()
        log.debug("native: pool child %d started", pid)
        return _Child(pid, parent_end)

    # run in the loop thread, under worker.lock
    def soft_limit(self, job: Held) -> bool:
        child = self.by_job.get(job.id)
        if child is None:
            return False
        try:
            os.kill(child.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return False
        return True

    def hard_limit(self, job: Held) -> bool:
        """Always handled: the child is killed now, or by run() once the job reaches it;
        the executor thread sees the pipe close and reports the job."""
        child = self.by_job.get(job.id)
        if child is not None:
            child.kill()
        return True

    def terminate(self, job: Held) -> bool:
        return self.hard_limit(job)

    def pids(self) -> list[int]:
        return [c.pid for c in list(self.children.values()) if not c.killed]

    def pid_of(self, job: Held) -> int | None:
        child = self.by_job.get(job.id)
        return child.pid if child is not None else None

    def abort(self) -> None:
        """Cold stop (caller holds worker.lock): kill every child now, busy or not."""
        self.aborting = True
        for child in list(self.children.values()):
            child.kill()
        for child in list(self.children.values()):
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:
                pass

    def thread_exit(self) -> None:
        """An executor thread is leaving (graceful stop): its idle child leaves first, as
        PR_SET_PDEATHSIG would kill it the moment the thread that forked it ends."""
        child = self.children.pop(threading.get_ident(), None)
        if child is None or child.killed:
            return
        try:
            child.conn.send(None)
        except OSError:
            pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            _real_sleep(0.01)
        else:
            child.kill()
            os.waitpid(child.pid, 0)
        child.killed = True


def _exited(pid: int) -> bool:
    """True (and the zombie collected) when the child is gone."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def _child_main(worker: Any, conn: Connection, parent: int) -> int:
    """The loop of a pool child: receive a job, run it, send back how it ended."""
    try:  # die with the worker even if it is SIGKILLed (Linux)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        return 1
    signal.set_wakeup_fd(-1)  # the worker's wake-up pipe is the parent's business
    for fd in (worker.wake_r, worker.wake_w):
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    current: list[Held] = []

    def soft_limit(signum: int, frame: Any) -> None:
        if current and current[0].in_user_code and not current[0].soft_sent:
            current[0].soft_sent = True
            raise SoftTimeLimitExceeded()

    signal.signal(signal.SIGUSR1, soft_limit)
    dispatch.worker_process_init.send(sender=None)
    app, hostname, lock = worker.app, worker.hostname, threading.Lock()
    max_tasks = app.conf.worker_max_tasks_per_child
    max_kib = app.conf.worker_max_memory_per_child
    done = 0
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            job = None
        if job is None:
            dispatch.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
            return 0
        current[:] = [job]
        outcome = execute(app, job, hostname, lock)
        current.clear()
        done += 1
        retire = bool(max_tasks and done >= max_tasks) or bool(max_kib and _rss_kib() > max_kib)
        conn.send((outcome.status, outcome.result, outcome.traceback, outcome.countdown,
                   outcome.args, outcome.kwargs, retire))
        if retire:
            return 0


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return 0


def make_pool(kind: str, worker: Any) -> ThreadPool | PreforkPool:
    if kind == "prefork":
        return PreforkPool(worker)
    return ThreadPool(worker)
