"""Health on $PORT: WSGI under gunicorn, ASGI under uvicorn, Django; with and without a
supervisor to ask."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading

import pytest

from tests.conftest import ROOT, VENV_ENV, free_port, port_open, wait_for
from tests.health.conftest import health, request, wait_health

SERVERS = {
    "wsgi": "gunicorn --bind 127.0.0.1:$PORT --workers 1 tests.health.apps:wsgi_app",
    "asgi": "uvicorn --host 127.0.0.1 --port $PORT tests.health.apps:asgi_app",
    "django": "gunicorn --bind 127.0.0.1:$PORT --workers 1 'tests.health.apps:django_app()'",
}
HEALTH_PATH = {"wsgi": "/healthz", "asgi": "/healthz", "django": "/-/health"}


@pytest.fixture
def garbage_socket(tmp_path):
    """A unix socket whose 'supervisor' answers nonsense and hangs up."""
    path = str(tmp_path / "garbage.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(1024)
            conn.sendall(b"\x00\x01 nonsense")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield path
    server.close()


def serve_alone(kind: str, env: dict) -> subprocess.Popen:
    port = env["PORT"]
    command = SERVERS[kind].replace("$PORT", port)
    proc = subprocess.Popen(command, shell=True, cwd=ROOT, env={**os.environ, **VENV_ENV, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(lambda: port_open(int(port)), 20, f"{kind} to listen")
    return proc


@pytest.mark.parametrize("kind", ["wsgi", "asgi", "django"])
def test_503_not_500_when_no_supervisor_answers(kind, tmp_path, garbage_socket):
    port = free_port()
    env = {"PORT": str(port), "START_ALL_HEALTH_SOCKET": str(tmp_path / "missing.sock")}
    proc = serve_alone(kind, env)
    try:
        for method in ("GET", "HEAD"):
            code, headers, body = request(port, HEALTH_PATH[kind], method)
            assert code == 503 and headers["content-type"] == "application/json"
            if method == "GET":
                assert json.loads(body) == {"status": "unknown",
                                            "error": "no supervisor reachable"}
        assert request(port, "/")[0] == 200  # the app itself is untouched
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    # a peer that answers garbage, or a closed TCP port: still a 503
    for extra in ({"START_ALL_HEALTH_SOCKET": garbage_socket},
                  {"START_ALL_HEALTH_URL": f"http://127.0.0.1:{free_port()}"}):
        port = free_port()
        proc = serve_alone(kind, {"PORT": str(port), **extra})
        try:
            assert request(port, HEALTH_PATH[kind])[0] == 503
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


@pytest.mark.parametrize("kind", ["wsgi", "asgi", "django"])
def test_the_supervisors_answer_on_the_app_port(kind, run_supervisor, henv):
    henv["START_ALL_HEALTH_TOKEN"] = "t0ken"
    sup = run_supervisor(f"web: {SERVERS[kind]}\n", env=henv)
    hport, port = int(henv["START_ALL_HEALTH_PORT"]), int(henv["PORT"])
    wait_health(hport, lambda c, r: c == 200 and r["ready"], what="healthy", token="t0ken")
    code, headers, body = request(port, HEALTH_PATH[kind])
    assert code == 200 and json.loads(body) == {"status": "ok", "ready": True}
    # the Authorization header is passed on: the supervisor decides about details
    code, _, body = request(port, HEALTH_PATH[kind], headers={"Authorization": "Bearer t0ken"})
    detailed = json.loads(body)
    assert code == 200 and detailed["processes"][0]["name"] == "web.1"
    assert detailed["processes"][0]["pid"] == health(hport, token="t0ken")[1]["processes"][0][
        "pid"]
    if kind == "django":
        code, _, body = request(port, "/view-healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"
    sup.signal(signal.SIGTERM)
    sup.wait()
