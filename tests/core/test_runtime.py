"""The supervisor loop with real processes, real signals, as PID 1 of its own PID namespace."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from tests.conftest import free_port, http_get, pids_alive, port_open, wait_for

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
RECORDER = f"python3 {FIXTURES}/recorder.py"
GUNICORN = f"gunicorn --chdir {FIXTURES} --bind 127.0.0.1:$PORT --workers 2 wsgiapp:app"


@pytest.fixture
def env(tmp_path):
    return {"RECORD_DIR": str(tmp_path), "PORT": str(free_port())}


def signals_of(tmp_path, name) -> list[str]:
    path = tmp_path / f"{name}.signals"
    return path.read_text().split("\n") if path.exists() else []


def supervisor_time(output: str, line: str) -> float:
    """The supervisor's timestamp of its JSON log line starting with `line`."""
    for text in output.splitlines():
        if text.startswith("{"):
            record = json.loads(text)
            if record["process"] == "start-all" and record["line"].startswith(line):
                return record["ts"]
    raise AssertionError(f"no supervisor line {line!r} in:\n{output[-3000:]}")


def tree_pids(pid: int) -> list[int]:
    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def child_running(sup, marker: str) -> psutil.Process:
    """The host-side process of a supervised child whose command line contains `marker`."""

    def find():
        for child in psutil.Process(sup.host_pid).children():
            try:
                if marker in " ".join(child.cmdline()) and child.status() != "zombie":
                    return child
            except psutil.NoSuchProcess:
                pass
        return None

    return wait_for(find, 10, f"child {marker!r}")


def test_orphans_of_children_are_reaped(run_supervisor, tmp_path, env):
    sup = run_supervisor(f"web: {RECORDER} web --orphans 20\n", env=env)
    sup.wait_line("web ready")
    web = child_running(sup, "recorder.py web")
    # the grandchildren (alive for 1 s) now belong to PID 1 ...
    assert len(psutil.Process(sup.host_pid).children()) > 1
    # ... and once they exit, PID 1 must reap them, or they stay zombies forever
    wait_for(
        lambda: [c.pid for c in psutil.Process(sup.host_pid).children()] == [web.pid],
        10,
        "orphans to be reaped",
    )
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_killed_worker_is_replaced_while_web_keeps_serving(run_supervisor, tmp_path, env):
    sup = run_supervisor(f"web: {GUNICORN}\nworker: {RECORDER} worker\n", env=env)
    port = int(env["PORT"])
    wait_for(lambda: port_open(port), 15, "gunicorn to listen")
    sup.wait_line("worker ready")
    web = child_running(sup, "gunicorn")
    worker = child_running(sup, "recorder.py worker")
    worker.kill()
    sup.wait_line(r"worker\.1 killed by SIGKILL")
    sup.wait_line(r"worker\.1 restarting")
    sup.wait_line("worker ready", count=2)
    assert child_running(sup, "recorder.py worker").pid != worker.pid
    assert http_get(port) == (200, b"hello from web\n")
    assert web.is_running() and child_running(sup, "gunicorn").pid == web.pid
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_crash_looping_worker_stops_the_container_non_zero(run_supervisor, tmp_path, env):
    env |= {"START_ALL_CRASH_LOOP_COUNT": "3", "START_ALL_BACKOFF_INITIAL": "0.05"}
    sup = run_supervisor(
        f"web: {RECORDER} web\nworker: {RECORDER} worker --exit-after 0 3\n", env=env
    )
    assert sup.wait() == 3
    out = sup.output
    assert out.count("worker.1 exited with code 3") == 3
    assert "giving up, stopping all" in out
    assert "SIGTERM" in signals_of(tmp_path, "web")  # the web was stopped, not abandoned


@pytest.mark.parametrize("pid1", [True, False], ids=["pid1", "shell"])
def test_sigterm_stops_everything_within_budget(run_supervisor, tmp_path, env, pid1):
    budget = 2.0
    # JSON lines carry the supervisor's own clock: the budget is timed where it is kept, not
    # from here (a loaded machine delays this process's view, not the supervisor's deadline)
    env |= {"START_ALL_STOP_TIMEOUT": str(budget), "START_ALL_LOG_FORMAT": "json"}
    sup = run_supervisor(
        f"web: {GUNICORN}\nstubborn: {RECORDER} stubborn --ignore-term\n", env=env, pid1=pid1
    )
    wait_for(lambda: port_open(int(env["PORT"])), 15, "gunicorn to listen")
    sup.wait_line("stubborn ready")
    # gunicorn master + 2 workers + stubborn
    everything = wait_for(lambda: len(tree_pids(sup.host_pid)) >= 5 and tree_pids(sup.host_pid))[1:]
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    out = sup.output
    stopping = supervisor_time(out, "stopping (received SIGTERM)")
    killing = supervisor_time(out, "stubborn.1: did not stop within the budget, sending SIGKILL")
    assert budget - 0.05 <= killing - stopping <= budget + 0.5, (stopping, killing)
    assert supervisor_time(out, "exit 0") - stopping <= budget + 0.5 + 0.5
    assert "Handling signal: term" in out  # gunicorn got its graceful signal
    assert "web.1 exited with code 0" in out  # ... and finished by itself
    assert signals_of(tmp_path, "stubborn")[1] == "SIGTERM"
    assert "stubborn.1: did not stop within the budget, sending SIGKILL" in out
    assert pids_alive(everything) == []


def test_sigint_is_a_graceful_stop_and_sighup_reloads_gunicorn(run_supervisor, tmp_path, env):
    sup = run_supervisor(f"web: {GUNICORN}\nworker: {RECORDER} worker\n", env=env)
    wait_for(lambda: port_open(int(env["PORT"])), 15, "gunicorn to listen")
    sup.wait_line("worker ready")
    sup.signal(signal.SIGHUP)
    sup.wait_line("Handling signal: hup")
    sup.wait_line(r"Booting worker", count=3)  # gunicorn reloaded its workers
    assert "SIGHUP" not in signals_of(tmp_path, "worker")  # the recorder has no reload signal
    sup.signal(signal.SIGINT)  # Fly.io's default stop signal
    assert sup.wait() == 0
    assert "Handling signal: term" in sup.output and "Handling signal: int" not in sup.output
    assert signals_of(tmp_path, "worker")[1:] == ["SIGTERM", ""]


def test_exit_code_of_a_dead_required_process(run_supervisor, tmp_path, env):
    sup = run_supervisor(
        f"web: {RECORDER} web --exit-after 0.3 7\nworker: {RECORDER} worker\n", env=env
    )
    assert sup.wait() == 7
    assert "web.1 is required and will not be restarted" in sup.output
    assert signals_of(tmp_path, "worker")[1] == "SIGTERM"


def test_exit_code_128_plus_signal(run_supervisor, tmp_path, env):
    sup = run_supervisor(f"web: {RECORDER} web\n", env=env)
    sup.wait_line("web ready")
    child_running(sup, "recorder.py web").send_signal(signal.SIGKILL)
    assert sup.wait() == 128 + signal.SIGKILL


def test_release_runs_first_and_its_failure_aborts(run_supervisor, tmp_path, env):
    sup = run_supervisor(
        f"release: sleep 0.3 && touch released\nweb: {RECORDER} web\n", env=env
    )
    sup.wait_line("web ready")
    out = sup.output
    assert out.index("release.1 exited with code 0") < out.index("web.1 started")
    assert (tmp_path / "released").exists()
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0

    failing = tmp_path / "failing"
    failing.mkdir()
    sup = run_supervisor(
        f"release: sh -c 'exit 4'\nweb: {RECORDER} web\n", env=env, cwd=failing
    )
    assert sup.wait() == 4
    assert "release failed (exit 4)" in sup.output and "web.1 started" not in sup.output


def test_stop_during_release_stops_it_and_starts_nothing(run_supervisor, tmp_path, env):
    sup = run_supervisor(f"release: {RECORDER} release\nweb: {RECORDER} web\n", env=env)
    sup.wait_line("release ready")
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    assert signals_of(tmp_path, "release")[1] == "SIGTERM"
    assert "web.1 started" not in sup.output


def test_restart_policies(run_supervisor, tmp_path, env):
    env |= {
        "START_ALL_PROCESSES__ONCE__RESTART": "on-failure",
        "START_ALL_PROCESSES__ONCE__REQUIRED": "false",
        "START_ALL_PROCESSES__FLAKY__RESTART": "on-failure",
    }
    sup = run_supervisor(
        f"web: {RECORDER} web\n"
        f"once: {RECORDER} once --exit-after 0.1 0\n"
        f"flaky: {RECORDER} flaky --exit-after 0.1 1\n",
        env=env,
    )
    sup.wait_line(r"flaky\.1 restarting", count=2)
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    out = sup.output
    assert out.count("once.1 started") == 1  # exit 0 with on-failure: not restarted
    assert "flaky.1 restarting in 1 s" in out  # second restart in a row waits (backoff)


def test_qcluster_stops_cleanly(run_supervisor, tmp_path, env):
    app = os.path.join(FIXTURES, "djangoapp")
    env |= {"TEST_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "proj.settings"}
    sup = run_supervisor(
        f"release: python3 {app}/manage.py migrate --no-input\n"
        f"web: gunicorn --chdir {app} --bind 127.0.0.1:$PORT proj.wsgi\n"
        f"worker: cd {app} && python3 manage.py qcluster\n",
        env=env,
    )
    sup.wait_line(r"Q Cluster .* running", timeout=30)
    wait_for(lambda: port_open(int(env["PORT"])), 15, "gunicorn to listen")
    assert http_get(int(env["PORT"])) == (200, b"hello from django\n")
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    out = sup.output
    assert "worker.1: sending SIGTERM to pid" in out  # the main pid only, never the group
    # inside the default 8 s budget: past it the supervisor would have sent SIGKILL
    assert "worker.1 exited with code 0" in out and "SIGKILL" not in out


def test_leftovers_of_a_killed_worker_die_with_it(run_supervisor, tmp_path, env):
    sup = run_supervisor(f"web: {RECORDER} web\nworker: {RECORDER} worker --helpers 2\n", env=env)
    sup.wait_line("worker ready")
    worker = child_running(sup, "recorder.py worker")
    helpers = wait_for(lambda: len(worker.children()) == 2 and worker.children(), 5, "helpers")
    worker.kill()
    sup.wait_line(r"worker\.1: killed what was left of its process group")
    sup.wait_line("worker ready", count=2)
    # like a qcluster's sentinel and workers: they must not run on beside the new worker
    wait_for(lambda: pids_alive([h.pid for h in helpers]) == [], 5, "the old helpers to be gone")
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
