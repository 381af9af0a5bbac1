"""Probes and the memory watchdog, run by one thread beside the supervisor loop.

Every `interval` seconds the thread: pokes the loop (so /livez can tell a live loop from a
stuck one), measures each child's process tree, asks the loop for a graceful restart of a
worker whose tree crossed its memory threshold, and probes each process:
- web: a TCP connect to $PORT (or an HTTP GET of START_ALL_HEALTH_WEB_PATH) with a timeout;
- qcluster: its tree (main, sentinel, workers): a main left without children is the measured
  "hangs forever" state of a broken cluster;
- native worker: the heartbeat file's mtime, stale after 3 heartbeat intervals;
- anything else: alive.
The database (DATABASE_URL, optional) is checked in two ways:
- the full check, `SELECT 1` in a short-lived `python -m supervisor.probes database` child, so
  that psycopg (~20 MB and a C library) never enters PID 1 and a hung connect can be killed from
  outside. That child is reaped by the loop like any orphan (one owner of waitpid); this thread
  only reads its answer from a pipe and kills its process group when the answer is late, so a
  dead or slow database is reported as "timeout" within `db_timeout`, never as a hung endpoint.
  It runs every `db_interval` seconds while the database is fine, at once when the ping below
  comes back, and with a short, growing retry delay while it fails;
- the ping, every PING_INTERVAL seconds from this thread: a non-blocking TCP connect to the
  address the full check resolved, then PostgreSQL's 8-byte SSLRequest, which the server answers
  with one byte before any authentication (what pg_isready relies on). No driver, no DNS, no
  credentials, one deadline; a refused, reset or silent server is "degraded" within about a
  second, instead of at the next full check (measured: 2.5-22 s with a 30 s interval).

Results are plain dicts replaced whole (never mutated in place), so the health server thread
reads them without locks. Standard library only, except in the database child.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import threading
import time

from supervisor import resources

HEARTBEAT_STALE_AFTER = 3  # heartbeat intervals
PING_INTERVAL = 1.0  # seconds between database pings
PING_TIMEOUT = 1.0  # connect + the server's one-byte answer
DB_RETRY_FIRST = 1.0  # full check retry delay while failing, doubled up to db_interval
WORKER_HINT_AFTER = 5.0  # a worker reporting its database away re-runs a check this old
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # length 8, code 80877103
DB_UNREACHABLE = "database-unreachable"  # first word of a native worker's heartbeat file
WAKE_GAP = 5.0  # a tick this much later than due: the container was frozen (paused, asleep)
QCLUSTER_GRACE = 15.0  # seconds for a new qcluster to fork its sentinel and workers
WEB_TIMEOUT = 1.0
MB = 1024 * 1024
DB_CATEGORIES = (  # substrings of driver errors -> a fixed word; messages are never shown
    ("timeout", "timeout"),
    ("timed out", "timeout"),
    ("refused", "connection refused"),
    ("password", "authentication failed"),
    ("authentication", "authentication failed"),
    ("does not exist", "database does not exist"),
    ("starting up", "starting up"),
    ("too many", "too many connections"),
    ("could not translate", "unknown host"),
    ("name or service", "unknown host"),
    ("no route", "unreachable"),
    ("unreachable", "unreachable"),
)


def tcp_probe(port: int, host: str = "127.0.0.1", timeout: float = WEB_TIMEOUT) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"port {port} accepts connections"
    except TimeoutError:
        return False, f"port {port}: connect timed out"
    except OSError as error:
        return False, f"port {port}: {error.strerror or 'connect failed'}"


def http_status(port: int, path: str, timeout: float, host: str = "localhost"
                ) -> tuple[int | None, str]:
    """GET path on 127.0.0.1:port within `timeout` seconds in all: (status code, "") or
    (None, why not: "refused", "timeout", "not an HTTP answer", an OS error). Used by the web
    probe below and by the application check (webprobe.py)."""
    # X-Forwarded-Proto as the platform's proxy sends it: an app that redirects plain HTTP
    # (Django's SECURE_SSL_REDIRECT behind SECURE_PROXY_SSL_HEADER) shows its page, not a 301
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: start-all-probe\r\n"
               "X-Forwarded-Proto: https\r\nAccept: */*\r\nConnection: close\r\n\r\n")
    deadline = time.monotonic() + timeout
    head = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(request.encode())
            while b"\r\n" not in head and len(head) < 256:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = conn.recv(256)
                if not chunk:
                    break
                head += chunk
    except ConnectionRefusedError:
        return None, "refused"
    except TimeoutError:
        return None, "timeout"
    except OSError as error:
        return None, error.strerror or "failed"
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None, "not an HTTP answer"
    return int(parts[1]), ""


def http_probe(port: int, path: str, timeout: float = 2.0) -> tuple[bool, str]:
    """GET path on 127.0.0.1:port; any answer below 500 counts as up."""
    code, why = http_status(port, path, timeout)
    if code is None:
        return False, f"GET :{port}{path}: {why}"
    return code < 500, f"GET :{port}{path} answered {code}"


def heartbeat_probe(path: str, interval: float, started_wall: float | None,
                    now: float | None = None, woke_wall: float | None = None
                    ) -> tuple[bool | None, str]:
    """(ok, detail); ok is None while a fresh worker has not had time to beat yet, and, after
    the whole container was frozen (`woke_wall`), while the worker has not beaten since."""
    now = time.time() if now is None else now
    limit = HEARTBEAT_STALE_AFTER * interval

    try:
        age = now - os.stat(path).st_mtime
    except FileNotFoundError:
        if started_wall is not None and now - started_wall < limit:
            return None, "waiting for the first heartbeat"
        return False, f"no heartbeat for {limit:g} s"
    if started_wall is not None and now - started_wall < limit and age > now - started_wall:
        return None, "waiting for the first heartbeat"  # the file is from the previous run
    if age > limit and woke_wall is not None and now - woke_wall < limit:
        return None, "woke from a freeze: waiting for the worker's next heartbeat"
    if age > limit:
        return False, f"last heartbeat {age:.0f} s ago (stale after {limit:g} s)"
    if heartbeat_state(path) in (DB_UNREACHABLE, "db-unreachable"):  # (an early spelling)
        return True, f"database unreachable (last heartbeat {age:.1f} s ago)"
    return True, f"last heartbeat {age:.1f} s ago"


def heartbeat_state(path: str) -> str:
    """The first word the worker wrote into its heartbeat file ('' for an empty file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return ""
    words = head.decode("ascii", "replace").split(None, 1)
    return words[0] if words else ""


def qcluster_probe(memory: dict, uptime: float | None) -> tuple[bool | None, str]:
    count = memory.get("processes", 0)
    if count >= 3:
        return True, f"cluster tree has {count} processes"
    if uptime is not None and uptime < QCLUSTER_GRACE:
        return None, "cluster starting"
    return False, f"cluster tree has {count} process(es): sentinel or workers missing"


class Prober:
    def __init__(self, runtime, options: dict, port: int) -> None:
        self.runtime = runtime
        self.options = options
        self.port = port
        self.interval = float(options.get("interval", 2.0))
        self.results: dict[str, dict] = {}  # instance -> {"ok", "detail", "checked_at"}
        self.memory: dict[str, dict] = {}  # instance -> resources.tree_memory()
        self.memory_restarts: dict[str, int] = {}
        self.ready_since: dict[str, float] = {}  # instance -> started_at of the ready run
        self.database: dict | None = None
        self.supervisor_rss = 0
        self._watched: dict[str, int] = {}  # instance -> pid we already asked to restart
        self._db: tuple[int, int, float] | None = None  # (pid, read fd, deadline)
        self._db_due = 0.0
        self._db_started = 0.0
        self._db_retry = DB_RETRY_FIRST
        self.database_enabled = database_checkable(os.environ.get("DATABASE_URL", ""))
        self.database_down_since: float | None = None  # monotonic, while the check fails
        self.database_at = 0.0  # monotonic start of the check that gave `database`
        self._ping: _Ping | None = None
        self._ping_target: tuple | None = None  # (family, address, postgres) from the child
        self._ping_due = 0.0
        self._ping_failed = False  # the last ping failed: its next success runs the full check
        self.error: str | None = None  # a probe that raised (a bug): shown, never fatal
        self.wake: dict | None = None  # the last freeze seen: {"at": wall time, "frozen": s}
        self._last_tick: tuple[float, float] | None = None  # (monotonic, wall)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="start-all-probes", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    # ----- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                try:
                    self.tick()
                    self.error = None
                except Exception as error:  # a probe bug must not kill health reporting
                    self.error = f"probe error ({type(error).__name__})"  # no message: paths
                next_tick = now + self.interval
            due = [next_tick]
            if self.database_enabled:
                if self._db is None and now >= self._db_due:
                    self._start_db_probe()
                if self._ping is None and self._ping_target and now >= self._ping_due:
                    self._ping = _Ping(*self._ping_target)
                    self._ping_due = now + PING_INTERVAL
                due += [self._db[2] if self._db else self._db_due,
                        self._ping.deadline if self._ping else self._ping_due]
            wait = max(0.0, min(due) - time.monotonic())
            reads = [self._db[1]] if self._db else []
            writes = []
            if self._ping is not None:
                (writes if self._ping.connecting else reads).append(self._ping.sock)
            if not reads and not writes:
                self._stop.wait(wait)
                continue
            try:
                readable, writable, _ = select.select(reads, writes, [], wait)
            except (OSError, ValueError):
                readable = writable = []
            if self._db is not None:
                self._finish_db_probe(self._db[1] in readable)
            if self._ping is not None:
                self._step_ping(self._ping.sock in readable or self._ping.sock in writable)

    # ----- database state ----------------------------------------------------------------------

    def check_database_now(self) -> None:
        """From the loop: run the full check at the next turn (a crash loop wants to know)."""
        self._db_due = 0.0

    def _set_database(self, ok: bool, detail: str, started: float) -> None:
        was_ok = self.database is None or self.database["ok"]
        self.database = {"ok": ok, "detail": detail, "checked_at": time.time()}
        self.database_at = started
        if ok:
            self.database_down_since = None
            self._db_retry = DB_RETRY_FIRST
        elif self.database_down_since is None:
            self.database_down_since = time.monotonic()
        if ok != was_ok or self.runtime.awaiting_database:
            self.runtime.wake()  # the loop decides about workers waiting for this answer

    def _step_ping(self, ready: bool) -> None:
        ping = self._ping
        verdict = ping.step(ready)
        if verdict is None:
            return
        self._ping = None
        ok, detail = verdict
        came_back, self._ping_failed = self._ping_failed and ok, not ok
        if not ok:
            self._set_database(False, detail, ping.started)
        elif came_back and self._db is None:
            self._db_due = 0.0  # it answers again: the full check now, not at the next retry
            self._db_retry = DB_RETRY_FIRST

    def _check_freeze(self) -> None:
        """A tick far later than due, on either clock: every process here was frozen (a
        sleeping free instance is a paused VM; `podman pause`). Not a failure of theirs."""
        now_m, now_w = time.monotonic(), time.time()
        if self._last_tick is not None:
            late = max(now_m - self._last_tick[0], now_w - self._last_tick[1]) - self.interval
            if late > WAKE_GAP:
                self.wake = {"at": now_w, "frozen": round(late, 1)}
        self._last_tick = (now_m, now_w)

    def tick(self) -> None:
        self._check_freeze()
        self.runtime.wake()  # the loop stamps loop_beat when it wakes
        snapshot = self.runtime.snapshot
        self.supervisor_rss = _own_rss()
        results, memory = {}, {}
        for process in snapshot["processes"]:
            name, pid = process["name"], process["pid"]
            if pid is None or process["state"] != "running":
                results[name] = {"ok": None if process["state"] == "starting" else False,
                                 "detail": process["state"], "checked_at": time.time()}
                continue
            memory[name] = resources.tree_memory(pid)
            ok, detail = self._probe(process, memory[name])
            results[name] = {"ok": ok, "detail": detail, "checked_at": time.time()}
            if ok and detail.startswith("database unreachable"):
                results[name]["degraded"] = True  # alive, waiting for its dependency
            if ok and self.ready_since.get(name) != process["started_at"]:
                self.ready_since[name] = process["started_at"]
            self._watch(name, pid, memory[name])
        self.memory = memory
        self.results = results
        # A worker says its database is away while our last full check said fine: behind a
        # pooler the ping reaches only the pooler, so ask the database itself now.
        if (self.database_enabled and self.database and self.database["ok"]
                and any(r.get("degraded") for r in results.values())
                and time.monotonic() - self.database_at > WORKER_HINT_AFTER):
            self._db_due = 0.0

    def _probe(self, process: dict, memory: dict) -> tuple[bool | None, str]:
        if process["role"] == "web":
            path = self.options.get("web_path")
            return http_probe(self.port, path) if path else tcp_probe(self.port)
        if process["kind"] == "qcluster":
            return qcluster_probe(memory, time.time() - process["started_at"])
        heartbeat = self.options.get("heartbeats", {}).get(process["name"])
        if heartbeat:
            interval = float(self.options.get("heartbeat_interval", 5.0))
            woke = self.wake["at"] if self.wake else None
            return heartbeat_probe(heartbeat, interval, process["started_at"], woke_wall=woke)
        return True, f"running ({memory['processes']} processes)"

    def _watch(self, name: str, pid: int, memory: dict) -> None:
        """Ask for a graceful restart before the kernel's OOM killer takes the container."""
        threshold = self.options.get("watchdog", {}).get(name)
        if not threshold or memory["pss"] <= threshold or self._watched.get(name) == pid:
            return
        self._watched[name] = pid  # once per run of the process
        self.memory_restarts = {**self.memory_restarts,
                                name: self.memory_restarts.get(name, 0) + 1}
        self.runtime.request_restart(
            name,
            f"memory watchdog: tree PSS {memory['pss'] // MB} MiB over {threshold // MB} MiB",
        )

    # ----- the database child ------------------------------------------------------------------

    def _start_db_probe(self) -> None:
        timeout = float(self.options.get("db_timeout", 3.0))
        self._db_due = float("inf")  # set when its answer is in
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        env["START_ALL_DB_TIMEOUT"] = str(timeout)
        argv = [sys.executable, "-m", "supervisor.probes", "database"]
        try:
            pid = os.posix_spawn(
                sys.executable, argv, env,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, write_fd, 1),
                              (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)],
                setpgroup=0,
                setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGPIPE),
            )
        except OSError as error:
            os.close(read_fd)
            self._db_due = time.monotonic() + float(self.options.get("db_interval", 30.0))
            self._set_database(False, f"probe not started: {error.strerror}", time.monotonic())
            return
        finally:
            os.close(write_fd)
        self._db = (pid, read_fd, time.monotonic() + timeout)
        self._db_started = time.monotonic()

    def _finish_db_probe(self, readable: bool) -> None:
        pid, fd, deadline = self._db
        if not readable and time.monotonic() < deadline:
            return
        answer = b""
        if readable:
            try:
                answer = os.read(fd, 256)
            except OSError:
                pass
        else:
            try:
                os.killpg(pid, signal.SIGKILL)  # still holding its pipe, so still ours to kill
            except (ProcessLookupError, PermissionError):
                pass
        os.close(fd)
        self._db = None
        timeout = float(self.options.get("db_timeout", 3.0))
        lines = answer.decode("ascii", "replace").splitlines() or [""]
        words = lines[0].strip().split(" ", 1)
        for line in lines[1:]:
            self._ping_target = _parse_target(line) or self._ping_target
        if not readable:
            ok, detail = False, f"timeout: no answer within {timeout:g} s"
        elif words[0] == "ok":
            took = words[1] if len(words) > 1 else "?"
            ok, detail = True, took if "TCP" in took else f"SELECT 1 in {took}"
        else:
            ok, detail = False, words[1] if len(words) > 1 else "probe failed"
        interval = float(self.options.get("db_interval", 30.0))
        if ok:
            self._db_due = time.monotonic() + interval
        else:
            self._db_due = time.monotonic() + min(self._db_retry, interval)
            self._db_retry = min(self._db_retry * 2, interval)
        self._set_database(ok, detail, self._db_started)


class _Ping:
    """One non-blocking ping: connect, (PostgreSQL) SSLRequest, one byte back; a deadline."""

    def __init__(self, family: int, address: object, postgres: bool) -> None:
        self.postgres = postgres
        self.started = time.monotonic()
        self.deadline = self.started + PING_TIMEOUT
        self.connecting = True
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.error: str | None = None
        try:
            self.sock.connect(address)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:
            self.error = _os_error_word(error.errno)

    def step(self, ready: bool) -> tuple[bool, str] | None:
        """None while under way; else (ok, detail). Closes the socket when done."""
        verdict = self._step(ready)
        if verdict is not None:
            self.sock.close()
        return verdict

    def _step(self, ready: bool) -> tuple[bool, str] | None:
        if self.error:
            return False, self.error
        if not ready:
            if time.monotonic() < self.deadline:
                return None
            return False, f"timeout: no answer within {PING_TIMEOUT:g} s"
        if self.connecting:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                return False, _os_error_word(code)
            if not self.postgres:
                return True, "port accepts connections"
            self.connecting = False
            try:
                self.sock.send(SSL_REQUEST)
            except OSError as error:
                return False, _os_error_word(error.errno)
            return None
        try:
            byte = self.sock.recv(1)
        except BlockingIOError:
            return None
        except OSError as error:
            return False, _os_error_word(error.errno)
        if byte in (b"S", b"N", b"E"):
            return True, "server answers"
        return False, "connection closed by the server"


def _os_error_word(code: int | None) -> str:
    if code in (errno.ECONNREFUSED, errno.ENOENT):
        return "connection refused"
    if code == errno.ECONNRESET:
        return "connection reset"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if code == errno.ETIMEDOUT:
        return "timeout"
    return "connect failed"


def _parse_target(line: str) -> tuple | None:
    """'target inet 10.0.0.5 5432 pg' -> (AF_INET, ('10.0.0.5', 5432), True)."""
    parts = line.split()
    try:
        if len(parts) == 5 and parts[0] == "target" and parts[1] in ("inet", "inet6"):
            family = socket.AF_INET if parts[1] == "inet" else socket.AF_INET6
            return family, (parts[2], int(parts[3])), parts[4] == "pg"
        if len(parts) == 4 and parts[0] == "target" and parts[1] == "unix":
            return socket.AF_UNIX, parts[2], parts[3] == "pg"
    except ValueError:
        pass
    return None


def database_checkable(url: str) -> bool:
    """A server to check: PostgreSQL by driver, others (mysql://...) by TCP; not SQLite."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return bool(scheme) and not scheme.startswith("sqlite")


def _own_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# ----- the database child (its own short-lived process; may import a driver) --------------------


def _category(error: BaseException) -> str:
    text = str(error).lower()
    for needle, word in DB_CATEGORIES:
        if needle in text:
            return word
    return f"error ({type(error).__name__})"


def check_database(url: str, timeout: float) -> str:
    """One line: 'ok <ms>' or 'fail <category>'. Never the URL, host, user or message."""
    from urllib.parse import urlsplit

    from supervisor.kit.dburl import libpq_url, validate

    if validate(url):
        return "fail malformed URL"
    url = libpq_url(url)
    scheme, _, rest = url.partition("://")
    postgres = scheme.split("+")[0].lower() in ("postgres", "postgresql", "pgsql")
    try:
        import psycopg
    except ImportError:
        psycopg = None
    started = time.monotonic()  # after the import: time the database, not the driver
    try:
        if postgres and psycopg is not None:
            # libpq's connect_timeout has a 2 s floor; the parent kills us at `timeout` anyway
            with psycopg.connect(f"postgresql://{rest}", autocommit=True,
                                 connect_timeout=max(2, int(timeout + 0.999))) as conn:
                conn.execute("SELECT 1").fetchone()
        else:  # no driver here, or another database: is its server at least listening?
            parts = urlsplit(url)
            default = 5432 if postgres else {"mysql": 3306, "redis": 6379}.get(scheme, 0)
            if not parts.hostname or not (parts.port or default):
                return "fail error (no host:port in the URL)"
            socket.create_connection((parts.hostname, parts.port or default),
                                     timeout=timeout).close()
            return f"ok {(time.monotonic() - started) * 1000:.0f} ms (TCP connect only)"
    except Exception as error:
        return f"fail {_category(error)}"
    return f"ok {(time.monotonic() - started) * 1000:.0f} ms"


def ping_target(url: str) -> str:
    """'target inet 127.0.0.1 5432 pg': where PID 1 may ping (resolved here, not in PID 1)."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.split("+")[0].lower()
        postgres = scheme in ("postgres", "postgresql", "pgsql")
        host = unquote(parts.hostname or "")
        port = parts.port or (5432 if postgres else {"mysql": 3306, "redis": 6379}.get(scheme))
        if not host or not port or "," in host:
            return ""  # libpq's default socket, or several hosts: the full check only
        kind = "pg" if postgres else "tcp"
        if host.startswith("/"):
            return f"target unix {host}/.s.PGSQL.{port} {kind}"
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (ValueError, OSError):
        return ""
    name = "inet" if family == socket.AF_INET else "inet6"
    return f"target {name} {address[0]} {address[1]} {kind}"


if __name__ == "__main__" and sys.argv[1:] == ["database"]:
    _url = os.environ.get("DATABASE_URL", "")
    _answer = check_database(_url, float(os.environ.get("START_ALL_DB_TIMEOUT", "3")))
    print(_answer + "\n" + ping_target(_url), flush=True)
