"""Memory/CPU limits from cgroup v1 and v2 layouts and the host, sizing, and the knobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from supervisor import resources, sizing
from tests.conftest import ROOT, VENV_ENV

MIB = 2**20


def write(root, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture
def host(tmp_path):
    """A fake /proc/meminfo and /proc/self/cgroup next to a fake /sys/fs/cgroup."""
    write(tmp_path, "proc/meminfo", "MemTotal:        2048000 kB\nMemFree:  1000 kB")
    return tmp_path


def limits(root):
    cg = str(root / "sys/fs/cgroup")
    proc = str(root / "proc/self/cgroup")
    return (resources.memory_limit(cg, proc, str(root / "proc/meminfo")),
            resources.cpu_limit(cg, proc))


def test_cgroup_v2_nested_limits_smallest_ancestor_wins(host):
    write(host, "proc/self/cgroup", "0::/kubepods/pod1/ctr")
    write(host, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids")
    write(host, "sys/fs/cgroup/kubepods/memory.max", "max")
    write(host, "sys/fs/cgroup/kubepods/pod1/memory.max", str(512 * MIB))
    write(host, "sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max")
    write(host, "sys/fs/cgroup/kubepods/pod1/cpu.max", "max 100000")
    write(host, "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "10000 100000")
    assert limits(host) == ((512 * MIB, "cgroup v2 memory.max"), (0.1, "cgroup v2 cpu.max"))


def test_cgroup_v2_inside_a_container_namespace(host):
    write(host, "proc/self/cgroup", "0::/")
    write(host, "sys/fs/cgroup/cgroup.controllers", "cpu memory pids")
    write(host, "sys/fs/cgroup/memory.max", str(256 * MIB))
    write(host, "sys/fs/cgroup/cpu.max", "max 100000")
    (mem, _), (cpus, cpu_source) = limits(host)
    assert mem == 256 * MIB and cpu_source.startswith("host CPUs") and cpus >= 1


def test_cgroup_v1_hybrid_like_this_machine(host):
    # v2 mounted at unified/ without the memory controller; v1 memory and cpu,cpuacct
    write(host, "proc/self/cgroup",
          "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/")
    write(host, "sys/fs/cgroup/unified/cgroup.controllers", "")
    write(host, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712")
    write(host, "sys/fs/cgroup/memory/docker/memory.limit_in_bytes", str(1024 * MIB))
    write(host, "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712")
    write(host, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000")
    write(host, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000")
    assert limits(host) == ((1024 * MIB, "cgroup v1 memory.limit_in_bytes"),
                            (0.5, "cgroup v1 cpu.cfs_quota_us"))


def test_no_limit_anywhere_falls_back_to_the_host(host):
    write(host, "proc/self/cgroup", "4:memory:/\n1:cpu:/\n0::/")
    write(host, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712")
    write(host, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1")
    write(host, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000")
    (mem, source), (cpus, cpu_source) = limits(host)
    assert (mem, source) == (2048000 * 1024, "host RAM (no cgroup memory limit)")
    assert cpus == len(os.sched_getaffinity(0)) and cpu_source.startswith("host CPUs")


# limit MiB, CPUs, user's web, user's worker, has web, worker kind -> (web, worker) or refusal
SIZING = [
    (512, 0.1, None, None, True, "qcluster", (2, 2)),  # Koyeb free: 430 of 445 MiB
    (1024, 1, None, None, True, "qcluster", (3, 2)),  # capped by CPU, not memory
    (2048, 2, None, None, True, "native", (5, 4)),  # native slots are cheap
    (512, 0.1, None, None, True, None, (3, 0)),  # web alone
    (512, 0.1, 1, None, True, "celery-worker", (1, 2)),  # the user's web count is kept
    (256, 0.1, None, None, True, "qcluster", None),  # 260 MiB minimum > 215 available
    (512, 0.1, 4, None, True, "qcluster", None),  # the user's 4 web workers cannot fit
]


@pytest.mark.parametrize(("mib", "cpus", "web", "worker", "has_web", "kind", "expected"), SIZING)
def test_sizing_table(mib, cpus, web, worker, has_web, kind, expected):
    result = sizing.size(mib * MIB, cpus, web, worker, has_web, kind)
    if expected is None:
        assert not result["fits"] and "only" in result["error"]
        return
    assert result["fits"] and (result["web"], result["worker"]) == expected
    total = int(result["reasons"][-1].split()[2])
    assert total <= mib - 16 - int(mib * 0.1)


def start_all(tmp_path, procfile: str, env: dict, *args: str, prefix=()):
    (tmp_path / "Procfile").write_text(procfile)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("START_ALL_", "WEB_CONC"))}
    return subprocess.run([*prefix, sys.executable, "-m", "supervisor", "--dry-run", *args],
                          cwd=tmp_path, env={**base, **VENV_ENV, **env}, capture_output=True,
                          text=True, timeout=30)


def test_dry_run_shows_the_reasoning_and_passes_each_tools_knob(tmp_path):
    procfile = ("web: gunicorn app:app\nworker: celery -A proj worker -c 3\n"
                "jobs: python3 manage.py qcluster\n")
    (tmp_path / "manage.py").write_text("")
    result = start_all(tmp_path, procfile, {"START_ALL_PROCESSES__JOBS__ROLE": "worker"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sizing (estimates in MiB" in out and "MiB for the processes" in out
    assert "web.1 gets WEB_CONCURRENCY=" in out
    assert "memory watchdog: worker.1 restarted gracefully above" in out
    assert "health: http 0.0.0.0:8081" in out
    plan = json.loads(start_all(tmp_path, procfile, {}, "--json").stdout)
    web, worker, jobs = plan["processes"]
    assert web["env"]["WEB_CONCURRENCY"].isdigit()
    # celery: the user's -c 3 stays, only the per-child memory cap is added
    assert worker["argv"][-1].endswith("worker -c 3 --max-memory-per-child 143360")
    assert "START_ALL_WORKER_CONCURRENCY" not in worker["env"]
    assert "START_ALL_WORKER_MAX_RSS_MB" not in jobs["env"]  # only the first worker is sized
    assert web["env"]["START_ALL_HEALTH_SOCKET"].endswith("/health.sock")


def test_start_all_worker_concurrency_reaches_celery(tmp_path):
    procfile = "web: gunicorn app:app\nworker: celery -A proj worker\n"
    env = {"START_ALL_WORKER_CONCURRENCY": "1"}
    plan = json.loads(start_all(tmp_path, procfile, env, "--json").stdout)
    # celery does not read START_ALL_WORKER_CONCURRENCY: without the flag it forks cpu_count()
    assert plan["processes"][1]["argv"][-1].endswith("worker --concurrency 1 "
                                                     "--max-memory-per-child 143360")


def test_explicit_settings_are_never_overridden(tmp_path):
    procfile = "web: gunicorn app:app\nworker: python3 manage.py qcluster\n"
    (tmp_path / "manage.py").write_text("")
    env = {"WEB_CONCURRENCY": "1", "START_ALL_WORKER_CONCURRENCY": "1",
           "START_ALL_WORKER_MAX_RSS_MB": "200"}
    plan = json.loads(start_all(tmp_path, procfile, env, "--json").stdout)
    web, worker = plan["processes"]
    assert "WEB_CONCURRENCY" not in web["env"]  # the child inherits the user's 1
    assert "START_ALL_WORKER_CONCURRENCY" not in worker["env"]
    assert worker["env"].get("START_ALL_WORKER_MAX_RSS_MB", "200") == "200"
    plan = json.loads(start_all(tmp_path, procfile, {}, "--json").stdout)
    assert plan["processes"][1]["env"]["START_ALL_WORKER_CONCURRENCY"].isdigit()
    assert plan["processes"][1]["env"]["START_ALL_WORKER_MAX_RSS_MB"] == "140"
    off = json.loads(start_all(tmp_path, procfile, {"START_ALL_SIZING": "off"}, "--json").stdout)
    assert "WEB_CONCURRENCY" not in off["processes"][0]["env"]


def test_a_plan_that_cannot_fit_a_real_cgroup_is_refused(memory_cgroup, tmp_path):
    prefix, _ = memory_cgroup(256 * MIB)
    (tmp_path / "manage.py").write_text("")
    result = start_all(tmp_path, "web: gunicorn app:app\nworker: python3 manage.py qcluster\n",
                       {}, prefix=prefix)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("start-all: the processes do not fit in memory (cgroup v1")
    assert "needs 260 MiB" in line and "START_ALL_SIZING=off" in line


def test_new_settings_are_accepted_and_unknown_ones_still_rejected(tmp_path):
    procfile = "web: gunicorn app:app\n"
    env = {"START_ALL_HEARTBEAT_FILE": "/tmp/x", "START_ALL_HEARTBEAT_INTERVAL": "2",
           "START_ALL_WORKER_CONCURRENCY": "2", "START_ALL_HEALTH_SOCKET": "/tmp/y.sock",
           "START_ALL_HEALTH_URL": "http://127.0.0.1:1"}
    assert start_all(tmp_path, procfile, env).returncode == 0
    result = start_all(tmp_path, procfile, {"START_ALL_HEALTH_PROT": "1"})
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "unknown setting START_ALL_HEALTH_PROT" in result.stderr
    result = start_all(tmp_path, procfile, {"START_ALL_HEALTH_PORT": "http"})
    assert result.returncode == 2 and "START_ALL_HEALTH_PORT" in result.stderr
    result = start_all(tmp_path, procfile, {"WEB_CONCURRENCY": "many"})
    assert result.returncode == 2 and "WEB_CONCURRENCY" in result.stderr


def test_tree_memory_of_a_real_process_tree():
    proc = subprocess.Popen([sys.executable, "-c",
                             "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c',"
                             "'import time; time.sleep(30)']); time.sleep(30)"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        from tests.conftest import wait_for

        usage = wait_for(lambda: (m := resources.tree_memory(proc.pid))["processes"] == 2 and m,
                         10, "two processes")
        assert usage["rss"] > 2 * 5 * MIB and 0 < usage["pss"] <= usage["rss"]
    finally:
        for pid in resources.tree_pids(proc.pid)[1:]:
            os.kill(pid, 9)
        proc.kill()
        proc.wait()
