"""Probes and the memory watchdog, run by one thread beside the supervisor loop.

Every `interval` seconds the thread: pokes the loop (so /livez can tell a live loop from a
stuck one), measures each child's process tree, asks the loop for a graceful restart of a
worker whose tree crossed its memory threshold, and probes each process:
- web: a TCP connect to $PORT (or an HTTP GET of START_ALL_HEALTH_WEB_PATH) with a timeout;
- qcluster: its tree (main, sentinel, workers): a main left without children is the measured
  "hangs forever" state of a broken cluster;
- native worker: the heartbeat file's mtime, stale after 3 heartbeat intervals;
- anything else: alive.
The database (DATABASE_URL, optional) is checked every `db_interval` seconds by a short-lived
`python -m supervisor.probes database` child, so that psycopg (~20 MB and a C library) never
enters PID 1 and a hung connect can be killed from outside. That child is reaped by the loop
like any orphan (one owner of waitpid); this thread only reads its one-line answer from a pipe
and kills its process group when the answer is late, so a dead or slow database is reported as
"timeout" within `db_timeout`, never as a hung endpoint.

Results are plain dicts replaced whole (never mutated in place), so the health server thread
reads them without locks. Standard library only, except in the database child.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time

from supervisor import resources

HEARTBEAT_STALE_AFTER = 3  # heartbeat intervals
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


def http_probe(port: int, path: str, timeout: float = 2.0) -> tuple[bool, str]:
    """GET path on 127.0.0.1:port; any answer below 500 counts as up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            head = conn.recv(64)
    except TimeoutError:
        return False, f"GET :{port}{path}: timed out"
    except OSError as error:
        return False, f"GET :{port}{path}: {error.strerror or 'failed'}"
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"GET :{port}{path}: not an HTTP answer"
    code = int(parts[1])
    return code < 500, f"GET :{port}{path} answered {code}"


def heartbeat_probe(path: str, interval: float, started_wall: float | None,
                    now: float | None = None) -> tuple[bool | None, str]:
    """(ok, detail); ok is None while a fresh worker has not had time to beat yet."""
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
    if age > limit:
        return False, f"last heartbeat {age:.0f} s ago (stale after {limit:g} s)"
    return True, f"last heartbeat {age:.1f} s ago"


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
        self.database_enabled = database_checkable(os.environ.get("DATABASE_URL", ""))
        self.error: str | None = None  # a probe that raised (a bug): shown, never fatal
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
            if self.database_enabled and self._db is None and now >= self._db_due:
                self._start_db_probe()
            wait = max(0.0, next_tick - time.monotonic())
            if self._db is not None:
                wait = min(wait, max(0.0, self._db[2] - time.monotonic()))
                ready, _, _ = select.select([self._db[1]], [], [], wait)
                self._finish_db_probe(bool(ready))
            else:
                self._stop.wait(wait)

    def tick(self) -> None:
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
            if ok and self.ready_since.get(name) != process["started_at"]:
                self.ready_since[name] = process["started_at"]
            self._watch(name, pid, memory[name])
        self.memory = memory
        self.results = results

    def _probe(self, process: dict, memory: dict) -> tuple[bool | None, str]:
        if process["role"] == "web":
            path = self.options.get("web_path")
            return http_probe(self.port, path) if path else tcp_probe(self.port)
        if process["kind"] == "qcluster":
            return qcluster_probe(memory, time.time() - process["started_at"])
        heartbeat = self.options.get("heartbeats", {}).get(process["name"])
        if heartbeat:
            interval = float(self.options.get("heartbeat_interval", 5.0))
            return heartbeat_probe(heartbeat, interval, process["started_at"])
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
        self._db_due = time.monotonic() + float(self.options.get("db_interval", 30.0))
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
            self.database = {"ok": False, "detail": f"probe not started: {error.strerror}",
                             "checked_at": time.time()}
            return
        finally:
            os.close(write_fd)
        self._db = (pid, read_fd, time.monotonic() + timeout)

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
        words = answer.decode("ascii", "replace").strip().split(" ", 1)
        if not readable:
            result = {"ok": False, "detail": f"timeout: no answer within {timeout:g} s"}
        elif words[0] == "ok":
            took = words[1] if len(words) > 1 else "?"
            result = {"ok": True, "detail": took if "TCP" in took else f"SELECT 1 in {took}"}
        else:
            result = {"ok": False, "detail": words[1] if len(words) > 1 else "probe failed"}
        self.database = {**result, "checked_at": time.time()}


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


if __name__ == "__main__" and sys.argv[1:] == ["database"]:
    print(check_database(os.environ.get("DATABASE_URL", ""),
                         float(os.environ.get("START_ALL_DB_TIMEOUT", "3"))), flush=True)
