"""The application check: a GET of a real page on $PORT (START_ALL_WEB_PROBE_PATH).

A web server can accept connections, and its workers be alive, while every page answers 500
(a missing collectstatic manifest, a read-only directory the app writes to, a broken
migration). The process probes cannot see that; this check asks the application itself.
An answer of 500 or more, or none within the timeout, makes the check fail: /readyz answers
503 (stop sending traffic here) and /healthz says "degraded" but stays 200 (restarting the
container would not fix a broken page, and would take the healthy parts down too).

Until the page has answered below 500 once since the web process started, a failure counts
like a web process still starting: /healthz 503 too. A platform with one health check for
both (Koyeb) then never promotes a release whose pages fail, and keeps the previous one.

Runs in its own thread beside the supervisor loop and the probes, so that a page that takes
the whole timeout delays nothing else. Standard library only: it runs inside PID 1.
"""

from __future__ import annotations

import socket
import threading
import time

USER_AGENT = "start-all-web-probe"


def get_status(port: int, path: str, host: str, timeout: float) -> tuple[bool | None, str]:
    """(ok, detail) for GET path on 127.0.0.1:port; ok None while nothing listens yet."""
    where = f"GET {path}"
    # X-Forwarded-Proto as the platform's proxy sends it: an app that redirects plain HTTP
    # (Django's SECURE_SSL_REDIRECT behind SECURE_PROXY_SSL_HEADER) shows its page, not a 301
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
               "X-Forwarded-Proto: https\r\nAccept: */*\r\nConnection: close\r\n\r\n"
               ).encode()
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(request)
            head = b""
            while b"\r\n" not in head and len(head) < 256:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = conn.recv(256)
                if not chunk:
                    break
                head += chunk
    except ConnectionRefusedError:
        return None, f"{where}: nothing listens on port {port} yet"
    except TimeoutError:
        return False, f"{where}: no answer within {timeout:g} s"
    except OSError as error:
        return False, f"{where}: {error.strerror or 'failed'}"
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"{where}: not an HTTP answer"
    code = int(parts[1])
    return code < 500, f"{where} answered {code}"


class WebProbe:
    """Checks the page every `interval` seconds while a web process runs; `result` is replaced
    whole on each check (the health server reads it without a lock)."""

    def __init__(self, runtime, options: dict, port: int, interval: float) -> None:
        self.runtime = runtime
        self.port = port
        self.path = options["path"]
        self.host = options.get("host") or "localhost"
        self.timeout = float(options.get("timeout", 2.0))
        self.interval = interval
        self.result: dict = {"ok": None, "detail": f"GET {self.path}: first check pending"}
        self.passed_for: float | None = None  # started_at of the web run the page passed in
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="start-all-web-probe",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _web_started_at(self) -> float | None:
        """When the running web process started; None when none runs."""
        for p in self.runtime.snapshot["processes"]:
            if p["role"] == "web" and p["state"] == "running":
                return p["started_at"]
        return None

    def passed_once(self, snapshot: dict) -> bool:
        """Has the page answered below 500 since the web process of `snapshot` started?"""
        return any(p["role"] == "web" and p["started_at"] == self.passed_for
                   for p in snapshot["processes"]) and self.passed_for is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            web_started = self._web_started_at()
            if web_started is not None:
                ok, detail = get_status(self.port, self.path, self.host, self.timeout)
                if ok:
                    self.passed_for = web_started
                self.result = {"ok": ok, "detail": detail, "checked_at": time.time()}
            elif self.result["ok"] is not None:
                self.result = {"ok": None, "detail": f"GET {self.path}: web not running"}
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
