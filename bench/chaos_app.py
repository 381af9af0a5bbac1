"""The app the chaos suite runs under start-all: a WSGI web and a native task that leaves
marks (chaos_marks.py)."""

import os

from chaos_marks import record

from supervisor.native import Celery

app = Celery("chaos_app", broker=os.environ.get("CHAOS_DB_URL") or os.environ.get("DATABASE_URL"))
app.conf.native_lease_seconds = float(os.environ.get("CHAOS_LEASE", "3"))
app.conf.native_heartbeat_interval = float(os.environ.get("CHAOS_HEARTBEAT", "1"))
app.conf.native_max_recoveries = int(os.environ.get("CHAOS_MAX_RECOVERIES", "3"))


@app.task
def work(i: int, seconds: float = 0.0) -> int:
    return record(i, seconds)


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
