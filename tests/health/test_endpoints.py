"""The health server in a real supervisor (PID 1) with real gunicorn and a real worker."""

from __future__ import annotations

import os
import signal

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import port_open, wait_for
from tests.health.conftest import (
    GUNICORN,
    HERE,
    RECORDER,
    child_of,
    health,
    process,
    request,
    wait_health,
)

PROCFILE = f"web: {GUNICORN}\nworker: {RECORDER} worker\n"


def test_healthz_goes_503_when_the_worker_dies_and_200_after_its_restart(run_supervisor, henv):
    henv["START_ALL_BACKOFF_INITIAL"] = "5"  # the 2nd restart in a row waits: a visible gap
    sup = run_supervisor(PROCFILE, env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    code, report = wait_health(hport, lambda c, r: c == 200 and r["ready"], what="healthy")
    assert report["status"] == "ok"
    assert [p["name"] for p in report["processes"]] == ["web.1", "worker.1"]
    web = process(report, "web.1")
    assert web["state"] == "running" and web["healthy"] and web["restarts"] == 0
    assert "accepts connections" in web["probe"]["detail"]
    # gunicorn's master accepts connections before it forks its worker: wait for the worker to
    # be counted (master + worker) rather than expect it at the first healthy answer
    code, report = wait_health(
        hport, lambda c, r: process(r, "web.1")["memory"]["processes"] == 2,
        what="gunicorn's worker counted in web.1's memory")
    web = process(report, "web.1")
    assert web["memory"]["rss"] > 10 * 2**20
    assert report["supervisor"]["rss"] < 16 * 2**20

    child_of(sup, "recorder.py worker").kill()  # restarted at once (first restart)
    sup.wait_line("worker ready", count=2)
    child_of(sup, "recorder.py worker").kill()  # now the backoff leaves a gap
    code, report = wait_health(hport, lambda c, r: c == 503, what="503 while the worker is down")
    worker = process(report, "worker.1")
    assert report["status"] == "failing" and not report["ready"]
    assert worker["state"] == "backoff" and not worker["healthy"]
    assert worker["last_exit"]["signal"] == signal.SIGKILL and worker["last_exit"]["code"] is None
    assert request(hport, "/livez")[0] == 200  # the supervisor itself is fine
    assert request(hport, "/readyz")[0] == 503

    code, report = wait_health(hport, lambda c, r: c == 200 and r["ready"], what="back to 200")
    worker = process(report, "worker.1")
    assert worker["state"] == "running" and worker["restarts"] == 2 and worker["pid"]
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_readyz_waits_for_the_web_port_while_livez_answers_at_once(run_supervisor, henv):
    sup = run_supervisor(f"web: python3 {HERE}/slow_web.py 6\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_for(lambda: port_open(hport), 10, "the health port")
    assert request(hport, "/livez")[0] == 200
    code, report = health(hport, "/readyz")
    assert code == 503 and not report["ready"]
    assert not process(report, "web.1")["ready"]
    assert not port_open(int(henv["PORT"]))
    sup.wait_line("listening")
    code, report = wait_health(hport, lambda c, r: c == 200, path="/readyz", what="ready")
    assert process(report, "web.1")["ready"] and port_open(int(henv["PORT"]))
    sup.signal(signal.SIGTERM)
    sup.wait()


def test_head_and_unknown_paths_and_methods(run_supervisor, henv):
    sup = run_supervisor(PROCFILE, env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: c == 200 and r["ready"], what="healthy")
    for path in ("/livez", "/readyz", "/healthz", "/metrics"):
        get_code, get_headers, get_body = request(hport, path)
        head_code, head_headers, head_body = request(hport, path, method="HEAD")
        assert head_code == get_code == 200, path
        assert head_body == b"" and get_body
        assert head_headers["content-type"] == get_headers["content-type"]
        assert head_headers["cache-control"] == "no-store"
    assert request(hport, "/nope")[0] == 404
    code, headers, _ = request(hport, "/healthz", method="POST")
    assert code == 405 and headers["allow"] == "GET, HEAD"
    sup.signal(signal.SIGTERM)
    sup.wait()


def test_metrics_parse_as_prometheus_text(run_supervisor, henv):
    sup = run_supervisor(PROCFILE, env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: c == 200 and r["ready"], what="healthy")
    code, headers, body = request(hport, "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    up = {s.labels["process"]: s.value for s in families["start_all_process_up"].samples}
    assert up == {"web.1": 1.0, "worker.1": 1.0}
    assert families["start_all_healthy"].samples[0].value == 1.0
    assert families["start_all_process_restarts"].type == "counter"
    rss = {s.labels["process"]: s.value
           for s in families["start_all_process_memory_rss_bytes"].samples}
    assert rss["web.1"] > 10 * 2**20
    assert 0 < families["start_all_supervisor_rss_bytes"].samples[0].value < 16 * 2**20
    sup.signal(signal.SIGTERM)
    sup.wait()


def test_livez_fails_when_the_loop_stops_turning(tmp_path, monkeypatch):
    """A real Runtime whose loop never runs is exactly a stuck loop."""
    from dataclasses import asdict

    from supervisor import config, runner
    from supervisor.health import HealthView
    from supervisor.runtime import Runtime

    (tmp_path / "Procfile").write_text("web: sleep 100\n")
    monkeypatch.chdir(tmp_path)
    environ = {"PATH": os.environ["PATH"], "START_ALL_CHECK_PORT": "false"}
    plan = config.build_plan(config.load_settings(environ), environ)
    with open(os.devnull, "w") as devnull:
        runtime = Runtime(runner.plan_from(asdict(plan)), devnull.fileno())
        runtime._publish()
        view = HealthView(runtime, None, {"interval": 0.1})
        assert view.answer("/livez", True)[0] == 200
        code, _, body = wait_for(lambda: (a := view.answer("/livez", True))[0] == 503 and a,
                                 15, "/livez to notice")
        assert body == b'{"status":"stuck"}'
