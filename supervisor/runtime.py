"""The supervisor loop: spawn, reap, restart, stop. Runs as PID 1; standard library only.

One thread does all the work. Signal handlers do nothing but let Python write the signal
number to a wake-up pipe (`signal.set_wakeup_fd`); the loop reads that pipe together with the
children's output pipes in one selector, so a signal is handled at the next loop turn and
never in the middle of one. The loop is the only caller of `waitpid`, and it reaps every
child, including orphans that the kernel re-parents to PID 1.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import time
from collections import deque

from supervisor.logs import LogMux

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs PID 1 2 MB
if TYPE_CHECKING:  # the runner hands us the same fields as light namespaces (see runner.py)
    from supervisor.plan import Plan, ProcessSpec

READ_CHUNK = 64 * 1024
KILL_GRACE = 0.4  # after the deadline's SIGKILL, how long we wait for the reaping
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)
# Restored to default in children: Python ignores SIGPIPE/SIGXFSZ and the child would inherit it.
CHILD_DEFAULT_SIGNALS = (*HANDLED, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGUSR1, signal.SIGUSR2)
WAKE_REQUEST = b"\0"  # written to the wake-up pipe by other threads (not a signal number)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
# The same stop signal again this soon is one stop, not "stop now": GNU `timeout` sends SIGTERM
# to its child and then to its whole group, and a platform may signal both the pid and the group.
REPEAT_WINDOW = 0.1


def exit_code_of(status: int) -> int:
    """Shell convention: the exit code, or 128 + the signal that killed it."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Child:
    """One supervised process and its history across restarts."""

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.name = f"{spec.name}.1"
        self.pid: int | None = None
        self.state = "starting"
        self.started_at: float | None = None  # monotonic
        self.started_wall: float | None = None
        self.restarts = 0
        self.exits: deque[float] = deque()  # monotonic times of recent exits (crash loop)
        self.backoff_level = 0
        self.next_start: float | None = None  # monotonic, when waiting to restart
        self.last_exit: dict | None = None
        self.restart_requested: str | None = None
        self.escalations: list[tuple[float, str]] = []  # (monotonic time, signal name)
        self.kill_at: float | None = None
        self.waiting_for: str | None = None  # "database": in backoff until the database is back
        self.verify_since = 0.0  # "database-check": monotonic time we asked for a fresh check

    @property
    def alive(self) -> bool:
        return self.pid is not None


class Runtime:
    def __init__(self, plan: Plan, out_fd: int = 1) -> None:
        self.plan = plan
        names = [f"{p.name}.1" for p in (*plan.processes, plan.release) if p]
        self.log = LogMux(
            names, out_fd, prefix=plan.logs.prefix, fmt=plan.logs.format, color=plan.logs.color
        )
        self.children = [Child(spec) for spec in plan.processes]
        self.by_pid: dict[int, Child] = {}
        self.pipes: dict[int, str] = {}  # read fd -> process instance name
        self.groups: set[int] = set()  # process groups we created, cleaned up at the end
        self.selector = selectors.DefaultSelector()
        self.state = "starting"
        self.stop_deadline: float | None = None
        self.stop_signal: tuple[int, float] | None = None  # (signum, monotonic) of the first
        self.exit_code = 0
        self.requests: deque[tuple[str, str]] = deque()
        self.signal_requests: deque[tuple[str, int, str, str]] = deque()
        self.started_wall = time.time()
        self.loop_beat = time.monotonic()
        self._base_snapshot: dict = {}
        self._wake_w = -1
        self.release: Child | None = None
        self.health = None  # supervisor.health.HealthServer, when enabled
        self.prober = None
        self.awaiting_database = False  # a crash-looping worker waits for a fresh database check

    # ----- public, thread-safe -------------------------------------------------------------

    @property
    def snapshot(self) -> dict:
        """A read-only view of the state, safe to read from any thread."""
        base = self._base_snapshot
        return {**base, "supervisor": {**base["supervisor"], "loop_beat": self.loop_beat}}

    def wake(self) -> None:
        """Make the loop turn once (the probes do it every interval, so /livez sees it turn)."""
        try:
            os.write(self._wake_w, WAKE_REQUEST)
        except OSError:
            pass

    def request_signal(self, name: str, pid: int, signame: str, reason: str) -> None:
        """Ask the loop to send `signame` to the main pid of `name`, if `pid` still runs it
        (sizing: SIGTTIN/SIGTTOU to gunicorn's master)."""
        self.signal_requests.append((name, pid, signame, reason))
        self.wake()

    def request_restart(self, name: str, reason: str) -> None:
        """Ask the loop to restart a process gracefully (e.g. from the memory watchdog)."""
        self.requests.append((name, reason))
        try:
            os.write(self._wake_w, WAKE_REQUEST)
        except OSError:
            pass  # the loop is gone, or its pipe is full and it will wake anyway

    # ----- set-up --------------------------------------------------------------------------

    def _install_signals(self) -> int:
        """Handlers before any child exists: a PID 1 without one ignores SIGTERM."""
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_w = write_fd
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in HANDLED:
            signal.signal(signum, _noop_handler)
        # Keep system calls going when a signal arrives; the wake-up pipe reports it.
        for signum in HANDLED:
            signal.siginterrupt(signum, False)
        self.selector.register(read_fd, selectors.EVENT_READ, None)
        # `start-all` held these from its first instruction (cli.HELD_SIGNALS); one that came
        # while it was validating is delivered now, to the handler above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        return read_fd

    # ----- process control -----------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        env = dict(os.environ)
        env.update(child.spec.env)
        try:
            pid = os.posix_spawn(
                child.spec.argv[0],
                list(child.spec.argv),
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_fd, 1),
                    (os.POSIX_SPAWN_DUP2, write_fd, 2),
                ],
                setpgroup=0,  # its own process group, so we can signal (or kill) it as a whole
                setsigdef=CHILD_DEFAULT_SIGNALS,
                setsigmask=(),
            )
        except OSError as error:
            os.close(read_fd)
            os.close(write_fd)
            self.log.say(f"{child.name} could not start: {error.strerror}")
            self._on_exit(child, 127 << 8)
            return
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.selector.register(read_fd, selectors.EVENT_READ, child.name)
        self.pipes[read_fd] = child.name
        child.pid = pid
        self.groups.add(pid)
        self.by_pid[pid] = child
        child.state = "running"
        child.started_at = time.monotonic()
        child.started_wall = time.time()
        child.next_start = None
        child.waiting_for = None
        self.log.say(f"{child.name} started (pid {pid}): {child.spec.command}")
        self._publish()

    def _send(self, child: Child, signame: str, whole_group: bool = False) -> None:
        if child.pid is None:
            return
        signum = signal.Signals[signame]
        try:
            if whole_group or child.spec.signal_target == "group":
                os.killpg(child.pid, signum)
            else:
                os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    def _stop_child(self, child: Child, quick: bool, deadline: float) -> None:
        """Send the graceful (or quick) stop signal; escalate on schedule; KILL at the deadline."""
        if child.pid is None:
            return
        signame = child.spec.quick_signal if quick else child.spec.stop_signal
        target = "group" if child.spec.signal_target == "group" else f"pid {child.pid}"
        self.log.say(f"{child.name}: sending {signame} to {target}")
        self._send(child, signame)
        child.state = "stopping"
        now = time.monotonic()
        budget = max(0.0, deadline - now)
        child.escalations = [(now + e.after * budget, e.signal) for e in child.spec.escalations]
        child.kill_at = deadline
        self._publish()

    def _kill_group(self, child: Child, why: str) -> None:
        if child.pid is None:
            return
        self.log.say(f"{child.name}: {why}, sending SIGKILL to its process group")
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _kill_leftovers(self, child: Child) -> None:
        """The main process is gone: the rest of its group goes too, before any restart.

        Its helpers are orphans nobody will stop (a SIGKILLed qcluster's sentinel and workers
        keep taking tasks, a second cluster beside the restarted one)."""
        if child.pid is None:
            return
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            return  # the group is empty: the usual case
        self.log.say(f"{child.name}: killed what was left of its process group")

    # ----- events ----------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.by_pid.pop(pid, None)
            if child is not None:
                self._on_exit(child, status)
            # else: an orphan re-parented to us, now reaped; nothing else to do

    def _on_exit(self, child: Child, status: int) -> None:
        now = time.monotonic()
        ran = now - child.started_at if child.started_at else 0.0
        self._kill_leftovers(child)
        child.pid = None
        code = exit_code_of(status)
        raw = os.waitstatus_to_exitcode(status)
        child.last_exit = {
            "code": raw if raw >= 0 else None,
            "signal": -raw if raw < 0 else None,
            "at": time.time(),
        }
        child.escalations = []
        child.kill_at = None
        self.log.say(f"{child.name} {describe_exit(status)} after {ran:.1f} s")

        if self.state == "stopping":
            child.state = "exited"
        elif child.restart_requested:
            reason, child.restart_requested = child.restart_requested, None
            child.restarts += 1
            self.log.say(f"{child.name} restarting now ({reason})")
            self._spawn(child)
        elif child.spec.role == "release":
            child.state = "exited"
        elif self._wants_restart(child, code):
            self._schedule_restart(child, code, ran, now)
        else:
            child.state = "exited"
            if child.spec.required:
                self.log.say(f"{child.name} is required and will not be restarted: stopping all")
                self._fatal(code)
        self._publish()

    def _wants_restart(self, child: Child, code: int) -> bool:
        policy = child.spec.restart
        return policy == "always" or (policy == "on-failure" and code != 0)

    def database_down(self) -> bool:
        """The database check fails now: a worker's exit is its dependency's fault."""
        prober = self.prober
        database = prober.database if prober is not None else None
        return bool(database) and database["ok"] is False

    def _ask_database(self, child: Child, now: float) -> bool:
        """Before a give-up: a worker often notices an outage before the check does. Ask for a
        fresh check and decide on its answer (in _timers); False when there is nothing to ask."""
        prober = self.prober
        if prober is None or not prober.database_enabled or child.spec.role == "web":
            return False
        child.state = "backoff"
        child.waiting_for = "database-check"
        child.verify_since = now
        child.next_start = now + float(self.plan.health.get("db_timeout", 3.0)) + 3.0
        self.awaiting_database = True
        prober.check_database_now()
        self.log.say(f"{child.name} exited {len(child.exits)} times in "
                     f"{self.plan.restart.crash_loop_window:g} s: checking the database "
                     "before giving up")
        return True

    def _database_verdict(self, child: Child, now: float) -> None:
        """A crash-looping worker waits for a database check newer than its last exit."""
        prober = self.prober
        fresh = prober.database_at >= child.verify_since and prober.database is not None
        if not fresh and now < child.next_start:
            return
        self.awaiting_database = any(c.waiting_for == "database-check" and c is not child
                                     for c in self.children)
        child.waiting_for = None
        if fresh and prober.database["ok"] is False:
            child.exits.clear()  # those exits were the outage's, not the worker's
            child.next_start = None
            self._schedule_restart(child, 1, 0.0, now)
            return
        child.state = "fatal"
        child.next_start = None
        self.log.say(f"{child.name} exited {len(child.exits)} times in "
                     f"{self.plan.restart.crash_loop_window:g} s and the database is fine: "
                     "giving up, stopping all")
        code = child.last_exit["code"] if child.last_exit else 1
        self._fatal(code or 1)

    def _schedule_restart(self, child: Child, code: int, ran: float, now: float) -> None:
        policy = self.plan.restart
        if ran >= policy.stable_after:
            child.backoff_level = 0
        if child.spec.role != "web" and self.database_down():
            # "My dependency is down", not "I am broken": no crash-loop count and no give-up,
            # capped backoff, and a restart as soon as the database check passes again.
            level = child.backoff_level
            delay = min(policy.backoff_max, policy.backoff_initial * 2 ** level)
            child.backoff_level += 1
            child.restarts += 1
            child.state = "backoff"
            child.waiting_for = "database"
            child.next_start = now + delay
            self.log.say(f"{child.name} exited while the database check fails: restarting "
                         f"in {delay:g} s or when the database is back (restart "
                         f"#{child.restarts}, not counted as a crash)")
            return
        child.exits.append(now)
        while child.exits and now - child.exits[0] > policy.crash_loop_window:
            child.exits.popleft()
        if len(child.exits) >= policy.crash_loop_count and self._ask_database(child, now):
            return
        if len(child.exits) >= policy.crash_loop_count:
            child.state = "fatal"
            self.log.say(
                f"{child.name} exited {len(child.exits)} times in "
                f"{policy.crash_loop_window:g} s: giving up, stopping all"
            )
            self._fatal(code or 1)
            return
        # First restart immediately; then exponential backoff up to the cap.
        level = child.backoff_level
        delay = 0.0
        if level:
            delay = min(policy.backoff_max, policy.backoff_initial * 2 ** (level - 1))
        child.backoff_level += 1
        child.restarts += 1
        if delay == 0:
            self.log.say(f"{child.name} restarting (restart #{child.restarts})")
            self._spawn(child)
        else:
            child.state = "backoff"
            child.next_start = now + delay
            self.log.say(f"{child.name} restarting in {delay:g} s (restart #{child.restarts})")

    def _fatal(self, code: int) -> None:
        if self.state != "stopping":
            self.exit_code = code
            self._begin_stop("a required process ended", quick=False)

    def _begin_stop(self, reason: str, quick: bool) -> None:
        if self.state == "stopping":
            return
        self.state = "stopping"
        self.stop_deadline = time.monotonic() + self.plan.stop_timeout
        self.log.say(f"stopping ({reason}); budget {self.plan.stop_timeout:g} s")
        for child in self.children + self._release_list():
            if child.state == "backoff":
                child.state = "exited"
                child.next_start = None
            # all children at once: the budget is shared, not per child
            self._stop_child(child, quick, self.stop_deadline)
        self._publish()

    def _release_list(self) -> list[Child]:
        return [self.release] if self.release else []

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # reaping happens every turn
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            for child in self.children:
                if child.spec.reload_signal and child.alive:
                    self.log.say(f"SIGHUP: forwarding {child.spec.reload_signal} to {child.name}")
                    self._send(child, child.spec.reload_signal)
            return
        now = time.monotonic()
        if self.state == "stopping":
            first = self.stop_signal
            if first and first[0] == signum and now - first[1] < REPEAT_WINDOW:
                self.log.say(f"{name} repeated within {REPEAT_WINDOW:g} s: counted once")
                return
            if signum in STOP_SIGNALS:
                self.log.say(f"{name} again while stopping: killing everything now")
                for child in self.children + self._release_list():
                    self._kill_group(child, "second stop signal")
            return
        if signum in STOP_SIGNALS:
            self.stop_signal = (signum, now)
        # SIGINT (Fly's default, Ctrl-C) is a graceful stop too, not gunicorn's quick one.
        self._begin_stop(f"received {name}", quick=signum == signal.SIGQUIT)

    def _handle_requests(self) -> None:
        while self.signal_requests:
            name, pid, signame, reason = self.signal_requests.popleft()
            child = next((c for c in self.children if c.name == name), None)
            if child is None or child.pid != pid or self.state != "running":
                continue  # it restarted or is stopping meanwhile: the request is stale
            self.log.say(f"{child.name}: {signame} ({reason})")
            try:
                os.kill(pid, signal.Signals[signame])  # the master only, never its group
            except ProcessLookupError:
                pass
        while self.requests:
            name, reason = self.requests.popleft()
            child = next((c for c in self.children if c.name in (name, c.spec.name)), None)
            if child is None or not child.alive or self.state == "stopping":
                continue
            self.log.say(f"{child.name}: graceful restart requested ({reason})")
            child.restart_requested = reason
            self._stop_child(child, quick=False, deadline=time.monotonic() + self.plan.stop_timeout)

    def _read_output(self, fd: int, name: str) -> None:
        try:
            data = os.read(fd, READ_CHUNK)  # one read per turn: a flood cannot starve others
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno != errno.EIO:
                raise
            data = b""
        if data:
            self.log.feed(name, data)
        else:
            self._close_pipe(fd)

    def _close_pipe(self, fd: int) -> None:
        name = self.pipes.pop(fd)
        self.selector.unregister(fd)
        os.close(fd)
        self.log.close(name)

    def _drain_pipes(self) -> None:
        """At exit: take what is already in the pipes, without waiting for more."""
        for fd in list(self.pipes):
            for _ in range(16):
                try:
                    data = os.read(fd, READ_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    break
                self.log.feed(self.pipes[fd], data)
            self._close_pipe(fd)

    def _timers(self, now: float) -> float | None:
        """Run what is due; return the time of the next due item."""
        upcoming: list[float] = []
        for child in self.children + self._release_list():
            if child.waiting_for == "database-check" and self.state != "stopping":
                self._database_verdict(child, now)
            if child.next_start is not None and self.state != "stopping":
                if child.waiting_for == "database" and not self.database_down():
                    child.next_start = now  # it is back: no need to wait out the backoff
                if now >= child.next_start:
                    self._spawn(child)
                else:
                    upcoming.append(child.next_start)
            if child.alive:
                for when, signame in list(child.escalations):
                    if now >= when:
                        child.escalations.remove((when, signame))
                        self.log.say(f"{child.name} still running: sending {signame}")
                        self._send(child, signame)
                    else:
                        upcoming.append(when)
                if child.kill_at is not None:
                    if now >= child.kill_at:
                        child.kill_at = None
                        self._kill_group(child, "did not stop within the budget")
                    else:
                        upcoming.append(child.kill_at)
        return min(upcoming) if upcoming else None

    # ----- the loop --------------------------------------------------------------------------

    def _turn(self, timeout: float | None) -> None:
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                try:
                    signals = os.read(key.fd, 256)
                except BlockingIOError:
                    signals = b""
                for signum in signals:
                    if signum:
                        self._on_signal(signum)
                self._handle_requests()
            else:
                self._read_output(key.fd, key.data)
        self._reap()
        self.loop_beat = time.monotonic()

    def _start_health(self) -> None:
        """Health server and probes in their own threads (imported only when enabled)."""
        options = getattr(self.plan, "health", None)
        if not options:
            return
        try:
            from supervisor import health

            self.health, self.prober, messages = health.start(self, options, self.plan.port)
        except Exception as error:  # health is an extra: supervising goes on without it
            messages = [f"health server not started: {error}"]
        for message in messages:
            self.log.say(message)

    def run(self) -> int:
        """Supervise until a stop; returns the container's exit code."""
        self._install_signals()
        self._publish()
        self._turn(0)  # a stop signal held while `start-all` validated: nothing starts at all
        if self.state == "stopping":
            return self._finish()
        self._start_health()
        for message in getattr(self.plan, "role", {}).get("messages", ()):
            self.log.say(message)  # --only: what this container runs, and where release runs
        self.release = Child(self.plan.release) if self.plan.release else None
        if self.release is not None and not self._run_release():
            return self._finish()
        self.release = None
        self.state = "running"
        for child in self.children:
            self._spawn(child)
        while True:
            now = time.monotonic()
            due = self._timers(now)
            self.log.flush()
            if self.state == "stopping":
                if not any(c.alive for c in self.children):
                    break
                hard_stop = self.stop_deadline + KILL_GRACE
                if now >= hard_stop:
                    self.log.say("processes still not reaped after SIGKILL; exiting anyway")
                    break
                due = min(due or hard_stop, hard_stop)
            elif not any(c.alive or c.next_start is not None for c in self.children):
                self.log.say("no process left to run")
                break
            self._turn(None if due is None else max(0.0, due - time.monotonic()))
        return self._finish()

    def _run_release(self) -> bool:
        """Run the release command to completion; False when the start must not go on."""
        child = self.release
        self.log.say("running release before the other processes")
        self._spawn(child)
        while child.alive or (self.state == "stopping" and child.kill_at):
            due = self._timers(time.monotonic())
            self.log.flush()
            self._turn(None if due is None else max(0.0, due - time.monotonic()))
        if self.state == "stopping":
            return False
        code = child.last_exit["code"] if child.last_exit else 1
        if code != 0:
            status = child.last_exit
            self.exit_code = code if code is not None else 128 + status["signal"]
            self.log.say(f"release failed (exit {self.exit_code}): not starting the others")
            return False
        return True

    def _finish(self) -> int:
        # Whatever is left in our groups (e.g. workers orphaned by their master) goes now.
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._reap()
        self._drain_pipes()
        self.state = "stopped"
        self._publish()
        if self.health is not None:
            from supervisor import health

            health.stop(self.health, self.prober, self.plan.health)
        self.log.say(f"exit {self.exit_code}")
        self.log.flush()
        return self.exit_code

    def _publish(self) -> None:
        now = time.monotonic()
        processes = []
        for child in self.children + self._release_list():
            processes.append(
                {
                    "name": child.name,
                    "role": child.spec.role,
                    "kind": child.spec.kind,
                    "state": child.state,
                    "pid": child.pid,
                    "pgid": child.pid,
                    "started_at": child.started_wall if child.alive else None,
                    "uptime": round(now - child.started_at, 3)
                    if child.alive and child.started_at
                    else None,
                    "restarts": child.restarts,
                    "last_exit": child.last_exit,
                    "required": child.spec.required,
                    "restarting": child.restart_requested is not None,  # asked, e.g. watchdog
                    "waiting": child.waiting_for,  # "database": an outage, not a crash
                }
            )
        self._base_snapshot = {
            "supervisor": {
                "pid": os.getpid(),
                "state": self.state,
                "started_at": self.started_wall,
                "loop_beat": self.loop_beat,
            },
            "processes": processes,
        }


def _noop_handler(signum: int, frame: object) -> None:
    """The work is done by the loop; this only makes Python write to the wake-up pipe."""
