"""gunicorn settings for one web process beside a worker in a 512 MB container (start-all).

`gunicorn -c gunicorn.conf.py` with no app argument: the app is WSGI_APP, else
<project>.wsgi from DJANGO_SETTINGS_MODULE, else the one manage.py names.
"""

import os
import re
from pathlib import Path


def _django_wsgi_app() -> str | None:
    settings = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings and Path("manage.py").is_file():
        found = re.search(
            r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", Path("manage.py").read_text()
        )
        settings = found and found.group(1)
    package = settings.rpartition(".")[0] if settings else ""
    return f"{package}.wsgi" if package else None


wsgi_app = os.environ.get("WSGI_APP") or _django_wsgi_app()
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Processes cost ~50 MB each, threads almost nothing: one process, a few threads.
# (gunicorn's docs suggest 2 x cpu_count() + 1, which is the HOST's count in a container.)
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
# start-all gives all processes one stop budget (START_ALL_STOP_TIMEOUT, 8 s): finish within it.
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "7"))
timeout = 30
keepalive = 5
max_requests = 2000  # recycle the worker now and then (slow leaks)
max_requests_jitter = 200
worker_tmp_dir = "/dev/shm"  # heartbeat file off the (possibly slow) container disk
accesslog = "-"
