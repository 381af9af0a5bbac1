"""The application check (START_ALL_WEB_PROBE_PATH): a real page answering 5xx, or not in time,
makes /readyz 503 and /healthz degraded (200), and recovers when the page does. Real gunicorn,
a real supervisor as PID 1."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading

from tests.conftest import ROOT, START_ALL, VENV_ENV, free_port
from tests.health.conftest import HERE, process, wait_health

GUNICORN = (f"gunicorn --chdir {HERE} --bind 127.0.0.1:$PORT --workers 2 --timeout 60 "
            "flaky_app:app")


def test_a_broken_page_makes_readyz_503_and_healthz_degraded(run_supervisor, henv, tmp_path):
    flag = tmp_path / "broken"
    henv |= {"BROKEN_FLAG": str(flag), "START_ALL_WEB_PROBE_PATH": "/"}
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    code, report = wait_health(hport, lambda c, r: c == 200 and r["ready"], 30,
                               "ready with the page answering 200")
    assert report["checks"]["app"]["ok"] is True
    assert report["checks"]["app"]["detail"] == "GET / answered 200"

    flag.touch()  # every page now answers 500, while gunicorn itself is fine
    code, report = wait_health(hport, lambda c, r: c == 503, 20, "/readyz 503",
                               path="/readyz")
    code, report = wait_health(hport, lambda c, r: r["status"] == "degraded", 20,
                               "/healthz degraded")
    assert code == 200  # a restart would not fix the page: not a liveness failure
    assert report["checks"]["app"] == {**report["checks"]["app"], "ok": False,
                                       "detail": "GET / answered 500"}
    web = process(report, "web.1")
    assert web["healthy"] and web["state"] == "running" and web["restarts"] == 0

    flag.unlink()
    wait_health(hport, lambda c, r: c == 200 and r["ready"], 20, "ready again",
                path="/readyz")
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_a_page_that_does_not_answer_in_time_counts_as_broken(run_supervisor, henv, tmp_path):
    slow = tmp_path / "slow"
    henv |= {"BROKEN_FLAG": str(tmp_path / "never"), "SLOW_FLAG": str(slow),
             "START_ALL_WEB_PROBE_PATH": "/", "START_ALL_WEB_PROBE_TIMEOUT": "0.5"}
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    wait_health(hport, lambda c, r: c == 200 and r["ready"], 30, "ready")
    slow.touch()
    code, report = wait_health(hport, lambda c, r: r["checks"]["app"]["ok"] is False,
                               30, "the slow page reported")
    assert report["checks"]["app"]["detail"] == "GET /: no answer within 0.5 s"
    assert code == 200 and report["status"] == "degraded" and not report["ready"]
    # the check has its own thread: the loop and the other probes go on meanwhile
    assert wait_health(hport, lambda c, r: c == 200, 5, "/livez", path="/livez")
    slow.unlink()
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_a_release_whose_page_never_worked_is_not_healthy(run_supervisor, henv, tmp_path):
    """Before the page has worked once, a broken page is a broken release: /healthz 503, so a
    platform with a single health check (Koyeb) keeps the previous deployment."""
    flag = tmp_path / "broken"
    flag.touch()
    henv |= {"BROKEN_FLAG": str(flag), "START_ALL_WEB_PROBE_PATH": "/"}
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    # gunicorn itself is fine (its own probe passes), only the page is broken
    code, report = wait_health(hport, lambda c, r: r["checks"]["app"]["ok"] is False
                               and process(r, "web.1")["healthy"], 30, "the broken page reported")
    assert code == 503 and report["status"] == "failing"
    flag.unlink()
    wait_health(hport, lambda c, r: c == 200 and r["status"] == "ok", 20, "healthy once it works")
    flag.touch()  # from now on a broken page is a fault to route around, not a broken release
    code, report = wait_health(hport, lambda c, r: r["checks"]["app"]["ok"] is False, 20,
                               "broken again")
    assert code == 200 and report["status"] == "degraded"
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_a_bad_probe_path_is_refused_in_one_line(tmp_path):
    (tmp_path / "Procfile").write_text("web: gunicorn app:app\n")
    env = {**VENV_ENV, "PATH": VENV_ENV["PATH"], "PORT": str(free_port()),
           "START_ALL_WEB_PROBE_PATH": "/ HTTP/1.1\r\nX: y"}
    result = subprocess.run([*START_ALL, "--dry-run"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("start-all: START_ALL_WEB_PROBE_PATH: Value error, a path "
                                    "must be non-empty, without spaces")
    assert len(result.stderr.splitlines()) == 1


def test_a_django_site_behind_https_redirect_and_allowed_hosts(run_supervisor, henv, tmp_path):
    """The Koyeb guide's recipe on real Django: START_ALL_WEB_PROBE_HOST in ALLOWED_HOSTS and
    X-Forwarded-Proto get the page's real answer, not a 400 (host) or a 301 (HTTPS)."""
    flag = tmp_path / "broken"
    henv |= {"BROKEN_FLAG": str(flag), "DJANGO_SETTINGS_MODULE": "tests.health.djsite_secure",
             "START_ALL_WEB_PROBE_PATH": "/", "START_ALL_WEB_PROBE_HOST": "app.example"}
    sup = run_supervisor(f"web: gunicorn --chdir {ROOT} --bind 127.0.0.1:$PORT "
                         "'django.core.wsgi:get_wsgi_application()'\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    code, report = wait_health(hport, lambda c, r: r["checks"]["app"]["ok"] is True, 30,
                               "the page answering")
    assert report["checks"]["app"]["detail"] == "GET / answered 200"
    flag.touch()
    code, report = wait_health(hport, lambda c, r: r["checks"]["app"]["ok"] is False, 20,
                               "the 500 seen")
    assert report["checks"]["app"]["detail"] == "GET / answered 500"
    assert code == 200 and report["status"] == "degraded"
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_the_web_process_probe_by_http_uses_the_same_get(run_supervisor, henv, tmp_path):
    """START_ALL_HEALTH_WEB_PATH: the web process's own probe is an HTTP GET (probes.http_status,
    the application check's too); a 5xx there makes the web unhealthy, not just "degraded"."""
    flag = tmp_path / "broken"
    henv |= {"BROKEN_FLAG": str(flag), "START_ALL_HEALTH_WEB_PATH": "/"}
    sup = run_supervisor(f"web: {GUNICORN}\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    code, report = wait_health(hport, lambda c, r: c == 200 and r["ready"], 30, "ready")
    assert process(report, "web.1")["probe"]["detail"] == f"GET :{henv['PORT']}/ answered 200"
    flag.touch()
    code, report = wait_health(hport, lambda c, r: c == 503, 20, "web unhealthy")
    assert report["status"] == "failing" and not process(report, "web.1")["healthy"]
    assert process(report, "web.1")["probe"]["detail"] == f"GET :{henv['PORT']}/ answered 500"
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_http_status_names_why_there_is_no_code():
    from supervisor.probes import http_status

    assert http_status(free_port(), "/", 1.0) == (None, "refused")
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert http_status(silent.getsockname()[1], "/", 0.3) == (None, "timeout")
    with socket.socket() as talker:  # answers something that is not HTTP
        talker.bind(("127.0.0.1", 0))
        talker.listen()

        def answer():
            conn, _ = talker.accept()
            conn.recv(1024)
            conn.sendall(b"SSH-2.0-OpenSSH\r\n")
            conn.close()

        thread = threading.Thread(target=answer)
        thread.start()
        assert http_status(talker.getsockname()[1], "/", 5.0) == (None, "not an HTTP answer")
        thread.join(10)
