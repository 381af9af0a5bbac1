"""WSGI middleware: `app = HealthMiddleware(app, path="/healthz")` answers health on $PORT."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from supervisor.contrib import client


class HealthMiddleware:
    def __init__(self, app: Callable, path: str = "/healthz") -> None:
        self.app = app
        self.path = path

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path:
            return self.app(environ, start_response)
        try:
            code, body = client.ask("/healthz", environ.get("HTTP_AUTHORIZATION"))
        except Exception:  # unreachable, or anything else: a 503, never a 500
            code, body = 503, client.UNREACHABLE
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        start_response(f"{code} {client.reason(code)}", headers)
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
