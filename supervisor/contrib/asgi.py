"""ASGI middleware: `app = HealthMiddleware(app, path="/healthz")` answers health on $PORT."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from supervisor.contrib import client


class HealthMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], path: str = "/healthz") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                authorization = value.decode("latin-1")
        try:
            code, body = await client.ask_async("/healthz", authorization)
        except Exception:  # unreachable, or anything else: a 503, never a 500
            code, body = 503, client.UNREACHABLE
        await send({
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        })
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else body})
