"""Sizing from measurement: an adaptive gunicorn starts with one worker, its workers' PSS is
measured, and SIGTTIN/SIGTTOU keep the count where the measured workers fit the real memory
limit (a cgroup) and the CPU cap. Real gunicorn, real cgroups, the supervisor as PID 1."""

from __future__ import annotations

import json
import signal
import subprocess

from supervisor import resources, sizing
from tests.conftest import START_ALL, wait_for
from tests.health.conftest import HERE, wait_health

MIB = 2**20
HEAVY = (f"gunicorn --chdir {HERE} --bind 127.0.0.1:$PORT --graceful-timeout 2 heavy_app:app")


def sizing_state(hport: int) -> dict:
    return wait_health(hport, lambda c, r: r["resources"]["sizing"], 10,
                       "sizing state")[1]["resources"]["sizing"]


def steady(hport: int, timeout: float, what: str) -> dict:
    def check(code, report):
        state = report["resources"]["sizing"]
        return state and state["state"].startswith("steady")

    return wait_health(hport, check, timeout, what)[1]["resources"]["sizing"]


def fits(state: dict) -> bool:
    """The count is the largest that fits, or the CPU cap."""
    per, budget, wanted = state["per_worker_pss"], state["budget"], state["wanted"]
    return wanted * per <= budget and (
        wanted == state["max"] or (wanted + 1) * per * sizing.GROW_MARGIN > budget)


def oom_kills(cgroup: str) -> int:
    with open(f"{cgroup}/memory.oom_control") as f:
        fields = dict(line.split() for line in f)
    return int(fields.get("oom_kill", 0))


def test_heavy_workers_grow_only_while_they_fit_512_mib(memory_cgroup, run_supervisor, henv):
    """~120 MiB workers in 512 MiB: the estimate (90 MiB) would have started 4 of them, past
    the limit; measured, the count stops at what fits."""
    prefix, cgroup = memory_cgroup(512 * MIB)
    henv |= {"APP_MIB": "110", "START_ALL_HEALTH_INTERVAL": "0.5"}
    sup = run_supervisor(f"web: {HEAVY}\n", env=henv, prefix=prefix)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    sup.wait_line(r"web\.1: SIGTTIN \(sizing: 1 -> 2 web workers", 60)  # it started with 1
    state = steady(hport, 60, "a steady count")
    assert state["per_worker_pss"] > 100 * MIB
    assert fits(state), state
    assert 1 < state["wanted"] < 4 and state["workers"] == state["wanted"]
    assert oom_kills(cgroup) == 0
    status = subprocess.run([*START_ALL, "status", "--url", f"http://127.0.0.1:{hport}"],
                            capture_output=True, text=True, timeout=30, env=sup_env(henv))
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("sizing:"))
    assert line.startswith(f"sizing: web.1 {state['wanted']} workers (CPU cap {state['max']}); ")
    assert "MiB each measured" in line and "steady" in line
    from tests.health.conftest import request

    code, _, body = request(hport, "/metrics")
    assert code == 200
    assert f'start_all_web_workers{{process="web.1"}} {state["workers"]}' in body.decode()
    # a reload (SIGHUP, forwarded) resets gunicorn to WEB_CONCURRENCY=1: the sizing follows
    sup.signal(signal.SIGHUP)
    sup.wait_line("Handling signal: hup", 20)
    wait_health(hport, lambda c, r: r["resources"]["sizing"]["workers"] == 1, 30,
                "gunicorn back at 1 worker")
    again = wait_health(hport, lambda c, r: (s := r["resources"]["sizing"])["state"].startswith(
        "steady") and s["workers"] == state["wanted"], 60, "grown again")[1]
    assert fits(again["resources"]["sizing"])
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_workers_shrink_when_another_process_takes_the_memory(memory_cgroup, run_supervisor,
                                                              henv, tmp_path):
    prefix, cgroup = memory_cgroup(1024 * MIB)
    flag = tmp_path / "eat"
    henv |= {"APP_MIB": "110", "START_ALL_HEALTH_INTERVAL": "0.5", "EAT_FLAG": str(flag),
             "EAT_MIB": "360"}
    sup = run_supervisor(f"web: {HEAVY}\nother: python3 {HERE}/eater.py\n", env=henv,
                         prefix=prefix)
    hport = int(henv["START_ALL_HEALTH_PORT"])
    before = steady(hport, 90, "a steady count")
    assert fits(before) and before["wanted"] >= 3, before
    flag.touch()  # the other process now holds 360 MiB more: the workers no longer all fit
    sup.wait_line(r"web\.1: SIGTTOU \(sizing: ", 60)
    after = wait_health(hport, lambda c, r: (s := r["resources"]["sizing"])["state"].startswith(
        "steady") and s["wanted"] < before["wanted"], 60, "fewer workers")[1]
    after = after["resources"]["sizing"]
    assert fits(after) and after["others_pss"] > 250 * MIB, after
    wait_for(lambda: sizing_state(hport)["workers"] == after["wanted"], 30, "gunicorn at it")
    assert oom_kills(cgroup) == 0
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_adaptive_plan_starts_low_and_caps_by_cpu(tmp_path):
    (tmp_path / "Procfile").write_text("web: gunicorn app:app\n")
    plan = json.loads(subprocess.run(
        [*START_ALL, "--dry-run", "--json"], cwd=tmp_path, capture_output=True, text=True,
        env=sup_env({}), timeout=30).stdout)
    cpus, _ = resources.cpu_limit()
    bounded = resources.memory_limit()[1].startswith("cgroup")
    adaptive = plan["health"]["adaptive"]
    assert plan["processes"][0]["env"]["WEB_CONCURRENCY"] == "1"
    assert adaptive["start"] == 1 and adaptive["max"] == sizing.cpu_caps(cpus, bounded)[0]
    # the user's count is theirs: nothing adapts
    (tmp_path / "Procfile").write_text("web: gunicorn -w 2 app:app\n")
    plan = json.loads(subprocess.run(
        [*START_ALL, "--dry-run", "--json"], cwd=tmp_path, capture_output=True, text=True,
        env=sup_env({}), timeout=30).stdout)
    assert plan["health"]["adaptive"] is None
    assert "WEB_CONCURRENCY" not in plan["processes"][0]["env"]
    # behind a pipe the pid is a shell's, for which SIGTTIN means "stop": sized, not adapted
    (tmp_path / "Procfile").write_text("web: gunicorn app:app 2>&1 | cat\n")
    plan = json.loads(subprocess.run(
        [*START_ALL, "--dry-run", "--json"], cwd=tmp_path, capture_output=True, text=True,
        env=sup_env({}), timeout=30).stdout)
    assert plan["health"]["adaptive"] is None
    assert int(plan["processes"][0]["env"]["WEB_CONCURRENCY"]) >= 1


def sup_env(extra: dict) -> dict:
    import os

    from tests.conftest import VENV_ENV

    base = {k: v for k, v in os.environ.items()
            if not k.startswith("START_ALL_") and k != "WEB_CONCURRENCY"}
    return {**base, **VENV_ENV, **extra}


def test_a_native_prefork_pool_is_sized_with_its_child_cost(tmp_path):
    (tmp_path / "Procfile").write_text(
        "web: gunicorn app:app\nworker: python3 -m supervisor.native worker -A app:queue\n")

    def worker_reason(**env: str) -> str:
        result = subprocess.run([*START_ALL, "--dry-run"], cwd=tmp_path, capture_output=True,
                                text=True, env=sup_env(env), timeout=30)
        assert result.returncode == 0, result.stderr
        return next(line for line in result.stdout.splitlines() if "worker: concurrency" in line)

    per_unit = sizing.ESTIMATES
    assert f" x {per_unit['native_per_unit']} + " in worker_reason()  # threads: a slot is cheap
    prefork = worker_reason(START_ALL_WORKER_POOL="prefork")  # read by the native worker
    assert f" x {per_unit['native_prefork_per_unit']} + " in prefork
