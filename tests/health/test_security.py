"""Nothing secret in any response; the bearer token guards the details, not the status code."""

from __future__ import annotations

import signal
import socket

from tests.conftest import free_port
from tests.health.conftest import GUNICORN, health, request, wait_health

TOKEN = "tok-s3cret-0"
SECRETS = ["env-s3cret-1", "argv-s3cret-2", "db-s3cret-3", "dbuser-s3cret", TOKEN]


def all_responses(port: int, token: str | None) -> list[bytes]:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    out = []
    for path in ("/livez", "/readyz", "/healthz", "/metrics", "/nope", "/healthz?x=1"):
        for method in ("GET", "HEAD", "POST"):
            code, headers, body = request(port, path, method, auth)
            out.append(repr(headers).encode() + body)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(b"garbage\r\n\r\n")
        out.append(conn.recv(65536))
    return out


def test_no_environment_argv_or_paths_in_any_response(run_supervisor, henv, tmp_path):
    closed = free_port()
    henv |= {
        "SECRET_SETTING": SECRETS[0],
        "DATABASE_URL": f"postgresql://dbuser-s3cret:{SECRETS[2]}@127.0.0.1:{closed}/app",
        "START_ALL_HEALTH_TOKEN": TOKEN,
    }
    sup = run_supervisor(
        f"web: {GUNICORN}\n"
        f"worker: python3 -c 'import time; time.sleep(1000)' {SECRETS[1]} {tmp_path}/key.pem\n",
        env=henv,
    )
    hport = int(henv["START_ALL_HEALTH_PORT"])
    code, report = wait_health(
        hport, lambda c, r: "database" in r.get("checks", {}) and r["checks"]["database"]["ok"]
        is False, token=TOKEN, what="the database check")
    assert report["checks"]["database"]["detail"] == "connection refused"
    responses = all_responses(hport, TOKEN) + all_responses(hport, None)
    for body in responses:
        for secret in [*SECRETS, str(tmp_path), "key.pem", "Procfile", "/tmp/start-all-"]:
            assert secret.encode() not in body, (secret, body[:300])
    sup.signal(signal.SIGTERM)
    sup.wait()


def test_bearer_token_guards_details_but_not_the_status_code(run_supervisor, henv):
    henv["START_ALL_HEALTH_TOKEN"] = TOKEN
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: c == 200 and r["ready"], what="healthy")
    assert health(hport) == (200, {"status": "ok", "ready": True})  # public: status only
    assert health(hport, token="wrong") == (200, {"status": "ok", "ready": True})
    code, detailed = health(hport, token=TOKEN)
    assert code == 200 and detailed["processes"][0]["name"] == "web.1"
    code, headers, _ = request(hport, "/metrics")
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    code, _, body = request(hport, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and b"start_all_process_up" in body
    assert request(hport, "/livez")[0] == 200
    sup.signal(signal.SIGTERM)
    sup.wait()
