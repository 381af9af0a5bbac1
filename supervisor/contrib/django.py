"""Django: health on $PORT, and the supervisor's sizing for django-q2.

    MIDDLEWARE = ["supervisor.contrib.django.HealthMiddleware", ...]   # first: before
                                                                       # sessions, auth, DB
    urlpatterns = [path("healthz", supervisor.contrib.django.healthz)]  # or a plain view

    # at the END of settings.py: your DATABASES, CACHES and Q_CLUSTER kept, sized and tuned
    start_all_settings(globals())     # see supervisor.contrib.django_settings

The middleware answers START_ALL_HEALTH_PATH (a Django setting, default "/healthz") before any
other middleware runs, so a health check touches neither sessions nor the database.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from supervisor.contrib import client


def _response(request):
    from django.http import HttpResponse

    try:
        code, body = client.ask("/healthz", request.META.get("HTTP_AUTHORIZATION"))
    except Exception:  # unreachable, or anything else: a 503, never a 500
        code, body = 503, client.UNREACHABLE
    response = HttpResponse(body, status=code, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def healthz(request):
    """A plain view serving the supervisor's /healthz answer."""
    return _response(request)


class HealthMiddleware:
    def __init__(self, get_response: Callable) -> None:
        from django.conf import settings

        self.get_response = get_response
        self.path = getattr(settings, "START_ALL_HEALTH_PATH", "/healthz")

    def __call__(self, request):
        if request.path == self.path:
            return _response(request)
        return self.get_response(request)


def start_all_settings(namespace: dict, **options) -> list[str]:
    """Merge start-all's settings into settings.py's globals(); see django_settings."""
    from supervisor.contrib.django_settings import start_all_settings as merge

    return merge(namespace, **options)


def q_cluster_sizing(default_workers: int = 2) -> dict:
    """django-q2 knobs from the supervisor's sizing (START_ALL_WORKER_CONCURRENCY and
    START_ALL_WORKER_MAX_RSS_MB, exported to the qcluster process): workers, a queue_limit
    that does not prefetch more than the stop budget can drain, and max_rss (KiB)."""
    workers = int(os.environ.get("START_ALL_WORKER_CONCURRENCY") or default_workers)
    sizing = {"workers": workers, "queue_limit": workers * 2}
    max_rss_mb = os.environ.get("START_ALL_WORKER_MAX_RSS_MB")
    if max_rss_mb:
        sizing["max_rss"] = int(max_rss_mb) * 1024
    return sizing
