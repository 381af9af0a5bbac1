"""Ask the running supervisor's health server; shared by the middlewares and `start-all status`.

A few lines of HTTP/1.0 over a unix or TCP socket instead of http.client/urllib: the unix
socket is the normal way for children, and neither library speaks it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from urllib.parse import urlsplit

TIMEOUT = 2.0
UNREACHABLE = b'{"status":"unknown","error":"no supervisor reachable"}'
REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}


class Unreachable(OSError):
    """No supervisor answered (not running, wrong address, or too slow)."""


def reason(code: int) -> str:
    return REASONS.get(code, "Unknown")


def address(url: str | None = None) -> tuple[str, str | tuple[str, int]]:
    """("unix", path) or ("tcp", (host, port)): --url, else what the supervisor told us."""
    if url is None:
        path = os.environ.get("START_ALL_HEALTH_SOCKET")
        if path:
            return "unix", path
        url = os.environ.get("START_ALL_HEALTH_URL") or (
            f"http://127.0.0.1:{os.environ.get('START_ALL_HEALTH_PORT') or 8081}"
        )
    if url.startswith("unix:"):
        return "unix", url[5:]
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// or unix: address: {url!r}")
    return "tcp", (parts.hostname, parts.port or 80)


def _request(path: str, authorization: str | None, method: str = "GET") -> bytes:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return f"{method} {path} HTTP/1.0\r\nHost: start-all\r\n{auth}\r\n".encode("latin-1")


def _parse(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise Unreachable("not an HTTP answer")
    return int(parts[1]), body


def ask(path: str = "/healthz", authorization: str | None = None, url: str | None = None,
        timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """(status, body) from the supervisor; raises Unreachable."""
    kind, where = address(url)
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    try:
        if kind == "tcp":
            sock = socket.create_connection(where, timeout=timeout)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(where)
        with sock:
            sock.sendall(_request(path, authorization))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as error:
        raise Unreachable(str(error)) from None
    return _parse(b"".join(chunks))


async def ask_async(path: str = "/healthz", authorization: str | None = None,
                    url: str | None = None, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """`ask` for an event loop: never blocks it, even when the supervisor is slow."""
    kind, where = address(url)

    async def exchange() -> bytes:
        if kind == "unix":
            reader, writer = await asyncio.open_unix_connection(where)
        else:
            reader, writer = await asyncio.open_connection(*where)
        try:
            writer.write(_request(path, authorization))
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()

    try:
        raw = await asyncio.wait_for(exchange(), timeout)
    except (OSError, TimeoutError) as error:
        raise Unreachable(str(error)) from None
    return _parse(raw)
