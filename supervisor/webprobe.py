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

import threading
import time

from supervisor.probes import http_status


def get_status(port: int, path: str, host: str, timeout: float) -> tuple[bool | None, str]:
    """(ok, detail) for GET path on 127.0.0.1:port; ok None while nothing listens yet."""
    code, why = http_status(port, path, timeout, host)
    if why == "refused":
        return None, f"GET {path}: nothing listens on port {port} yet"
    if why == "timeout":
        return False, f"GET {path}: no answer within {timeout:g} s"
    if code is None:
        return False, f"GET {path}: {why}"
    return code < 500, f"GET {path} answered {code}"


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
