"""The memory watchdog restarts a growing worker gracefully, before the OOM killer strikes."""

from __future__ import annotations

import signal

from tests.conftest import wait_for
from tests.health.conftest import HERE, process, wait_health

MIB = 2**20
WEB = f"web: python3 {HERE}/slow_web.py 0\n"


def runs(tmp_path) -> list[str]:
    path = tmp_path / "hog.runs"
    return path.read_text().splitlines() if path.exists() else []


def test_watchdog_restarts_a_worker_past_its_share_of_a_real_cgroup_limit(
    memory_cgroup, run_supervisor, henv, tmp_path
):
    prefix, cgroup = memory_cgroup(256 * MIB)
    # 400 MiB would be far past the limit: without the watchdog the kernel kills it (below)
    sup = run_supervisor(f"{WEB}worker: python3 {HERE}/hog.py 400 4\n", env=henv, prefix=prefix)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    sup.wait_line(r"memory watchdog: tree PSS \d+ MiB over 128 MiB")  # 50% of 256 MiB
    sup.wait_line(r"worker\.1 restarting now \(memory watchdog")
    code, report = wait_health(
        hport, lambda c, r: c == 200 and process(r, "worker.1")["state"] == "running"
        and process(r, "worker.1")["restarts"] == 1, what="the worker back")
    worker = process(report, "worker.1")
    assert worker["memory_restarts"] == 1 and worker["memory_threshold"] == 128 * MIB
    assert report["resources"]["memory_limit"] == 256 * MIB  # read from the real cgroup
    assert worker["last_exit"] == {**worker["last_exit"], "code": 0, "signal": None}  # graceful
    lines = wait_for(lambda: len(runs(tmp_path)) >= 3 and runs(tmp_path), 10, "the second run")
    assert lines[1].startswith("SIGTERM at ")  # graceful: the hog heard SIGTERM
    assert int(lines[1].split()[2]) >= 100  # MiB it held (+ the interpreter: over 128)
    assert lines[2].startswith("run ")
    with open(f"{cgroup}/memory.oom_control") as f:
        assert "oom_kill 0" in f.read()  # the kernel never had to kill anything
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_without_the_watchdog_the_kernel_kills_it(memory_cgroup, run_supervisor, henv,
                                                  tmp_path):
    """The control experiment: the same hog with the watchdog off ends in an OOM kill."""
    prefix, cgroup = memory_cgroup(256 * MIB)
    henv["START_ALL_WATCHDOG_SHARE"] = "0"
    sup = run_supervisor(f"{WEB}worker: python3 {HERE}/hog.py 400 4\n", env=henv, prefix=prefix)
    sup.wait_line(r"worker\.1 killed by SIGKILL")
    with open(f"{cgroup}/memory.oom_control") as f:
        assert "oom_kill 0" not in f.read()
    assert not any(line.startswith("SIGTERM") for line in runs(tmp_path))
    sup.signal(signal.SIGTERM)
    sup.wait()


def test_watchdog_with_an_absolute_threshold_on_the_host(run_supervisor, henv, tmp_path):
    henv["START_ALL_WATCHDOG_MB"] = "64"
    sup = run_supervisor(f"{WEB}worker: python3 {HERE}/hog.py 120 2 1.5\n", env=henv)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    sup.wait_line(r"graceful restart requested \(memory watchdog: tree PSS \d+ MiB over 64 MiB")
    # while it drains (1.5 s here), a restart we asked for is "degraded", not a 503
    code, report = wait_health(
        hport, lambda c, r: process(r, "worker.1")["state"] == "stopping", what="draining")
    assert code == 200 and report["status"] == "degraded"
    code, report = wait_health(
        hport, lambda c, r: process(r, "worker.1")["memory_restarts"] == 1
        and process(r, "worker.1")["state"] == "running", what="restarted worker")
    assert process(report, "worker.1")["restarts"] == 1
    assert runs(tmp_path)[1].startswith("SIGTERM at ")
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
