"""Slow clients and a request flood cannot stall the supervisor loop or lock out a probe."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading

import psutil

from tests.conftest import START_ALL, wait_for
from tests.health.conftest import GUNICORN, RECORDER, child_of, request, wait_health


def test_slowloris_and_flood_while_the_loop_reaps_and_restarts(run_supervisor, henv):
    sup = run_supervisor(f"web: {GUNICORN}\nworker: {RECORDER} worker --orphans 10\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: c == 200 and r["ready"], what="healthy")

    # 150 slow clients: a request line, one header, then silence (more than the 64 allowed)
    slow = []
    for _ in range(150):
        conn = socket.create_connection(("127.0.0.1", hport), timeout=10)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        slow.append(conn)
    stop, flood_count, flood_errors = threading.Event(), [0], []

    def flood():
        while not stop.is_set():
            try:
                request(hport, "/healthz", timeout=5)
                flood_count[0] += 1
            except OSError as error:
                flood_errors.append(error)

    flooders = [threading.Thread(target=flood) for _ in range(4)]
    for thread in flooders:
        thread.start()
    try:
        # a platform probe with Kubernetes' default 1 s timeout still gets its answer: a
        # process of its own, as a probe is (timing it here would time this process's GIL,
        # which the flood threads hold)
        probe = subprocess.run([*START_ALL, "status", "--quiet", "--timeout", "1", "--url",
                                f"http://127.0.0.1:{hport}"], capture_output=True, timeout=60)
        assert probe.returncode == 0, probe.stderr
        # the loop keeps turning: it reaps, restarts, and its orphans get reaped
        child_of(sup, "recorder.py worker").kill()
        sup.wait_line(r"worker\.1 killed by SIGKILL", timeout=10)
        sup.wait_line(r"worker\.1 restarting", timeout=10)
        sup.wait_line("worker ready", count=2, timeout=15)
        code, report = wait_health(hport, lambda c, r: c == 200 and r["ready"], what="back")
        assert report["supervisor"]["loop_age"] < 2.0
        assert request(hport, "/livez")[0] == 200

        def no_zombies():
            try:
                kids = psutil.Process(sup.host_pid).children()
                return all(k.status() != psutil.STATUS_ZOMBIE for k in kids) and len(kids) == 2
            except psutil.NoSuchProcess:  # an orphan reaped while we looked: look again
                return False

        wait_for(no_zombies, 10, "orphans reaped during the flood")
    finally:
        stop.set()
        for thread in flooders:
            thread.join(10)
    assert flood_count[0] > 50 and not flood_errors

    # the slow clients were cut off (evicted for newcomers, or timed out), none is served
    def closed(conn):
        try:
            return conn.recv(1024) == b""
        except OSError:
            return True

    assert all(closed(conn) for conn in slow)
    for conn in slow:
        conn.close()
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_oversized_and_malformed_requests_are_refused(run_supervisor, henv):
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: c == 200, what="up")
    with socket.create_connection(("127.0.0.1", hport), timeout=5) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000)
        assert conn.recv(1024).startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", hport), timeout=5) as conn:
        conn.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert conn.recv(1024).startswith(b"HTTP/1.1 400 ")
    # keep-alive: several requests on one connection
    with socket.create_connection(("127.0.0.1", hport), timeout=5) as conn:
        for _ in range(3):
            conn.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"alive"}')
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
