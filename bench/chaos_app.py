"""The app the chaos suite runs under start-all: a WSGI web and native tasks that leave marks.

Every execution appends `S <id> <pid> <time>` when it starts and `E <id> <pid> <time>` when it
ends to $CHAOS_MARKS (one O_APPEND write each, so lines never interleave and survive SIGKILL).
"""

import os
import time

from supervisor.native import Celery

app = Celery("chaos_app", broker=os.environ.get("CHAOS_DB_URL") or os.environ.get("DATABASE_URL"))
app.conf.native_lease_seconds = float(os.environ.get("CHAOS_LEASE", "3"))
app.conf.native_heartbeat_interval = float(os.environ.get("CHAOS_HEARTBEAT", "0.5"))
app.conf.native_max_recoveries = int(os.environ.get("CHAOS_MAX_RECOVERIES", "3"))
MARKS = os.environ.get("CHAOS_MARKS", "/dev/null")


def _mark(kind: str, i: int) -> None:
    fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {i} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


@app.task
def work(i: int, seconds: float = 0.0) -> int:
    _mark("S", i)
    if seconds:
        time.sleep(seconds)
    _mark("E", i)
    return i


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
