"""scripts/demo.sh, the README's one command: fresh venv, install, run the demo, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

from tests.conftest import ROOT, free_port, http_get, port_open, wait_for


def test_demo_from_a_fresh_venv_serves_runs_tasks_and_stops_on_ctrl_c(tmp_path):
    port, health_port = free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "VENV": str(tmp_path / "venv"),  # a machine where nothing is installed yet
        "PORT": str(port),
        "START_ALL_HEALTH_PORT": str(health_port),
        "DATA_DIR": str(tmp_path / "data"),
        "CACHE_DIR": str(tmp_path / "cache"),
    }
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "demo.sh")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready():
            code, body = http_get(port, "/healthz") if port_open(port) else (0, b"")
            return code == 200 and json.loads(body)["ready"]

        wait_for(ready, 240, f"the demo to be ready:\n{log.read_text()[-3000:]}")
        text = log.read_text()
        assert f"http://127.0.0.1:{port}/" in text
        assert "start-all migrate: no PostgreSQL DATABASE_URL" in text  # SQLite, release: ran

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/bookings",
            data=json.dumps({"name": "Dee", "email": "dee@example.com"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            booking = json.loads(response.read())
        wait_for(
            lambda: json.loads(http_get(port, f"/bookings/{booking['id']}")[1])["confirmed_at"],
            60,
            "the worker to confirm the booking",
        )
        assert "Booking #1 confirmed" in log.read_text()

        demo.send_signal(signal.SIGINT)  # Ctrl-C reaches start-all (the script exec'd it)
        assert demo.wait(30) == 0, log.read_text()[-3000:]
        assert "start-all | exit 0" in log.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
