"""Sizing from measurement, on a heavy and a light web app in a real 512 MiB memory cgroup.

    .venv/bin/python bench/bench_sizing.py [--limit-mib 512] [--heavy-mib 110]

Per app (tests/health/heavy_app.py: each gunicorn worker holds APP_MIB MiB of its own, ~140 MiB
PSS in all for the heavy one, as measured on a real Django app; ~20 MiB for the light one),
start-all runs as PID 1 (unshare) inside a cgroup v1 memory cgroup with the limit, gunicorn
with no worker count. Reported once the sizing is steady: how many workers it chose, their
measured PSS, what the static estimate (90 MiB per worker) would have started, the cgroup's
usage and peak, OOM kills, how long it took; then the static count is started explicitly
(WEB_CONCURRENCY) to show what the estimate alone would have done. Last, PID 1's RSS with
the sizing thread (START_ALL_SIZING=auto) and without (off).
Needs root and a cgroup v1 memory controller (see /work/shared/RECIPES.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchkit import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor import resources, sizing  # noqa: E402

MIB = 1024 * 1024
APPS = ROOT / "tests" / "health"


def make_cgroup(limit: int, name: str) -> str:
    own = ""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            own = path
    path = f"/sys/fs/cgroup/memory{own.rstrip('/')}/start-all-bench-{name}-{os.getpid()}"
    os.makedirs(path, exist_ok=True)
    Path(path, "memory.limit_in_bytes").write_text(str(limit))
    return path


def cg_mib(cgroup: str, name: str) -> int:
    return int(Path(cgroup, name).read_text()) // MIB


def oom_kills(cgroup: str) -> int:
    fields = dict(line.split() for line in Path(cgroup, "memory.oom_control").read_text()
                  .splitlines())
    return int(fields.get("oom_kill", 0))


def healthz(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return json.loads(r.read())
    except OSError as error:
        body = getattr(error, "read", None)
        return json.loads(body()) if body else None


class Run:
    def __init__(self, cgroup: str, app_mib: int, extra_env: dict) -> None:
        self.cgroup = cgroup
        self.hport = free_port()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "PYTHONPATH": str(ROOT), "PORT": str(free_port()), "APP_MIB": str(app_mib),
               "START_ALL_HEALTH_PORT": str(self.hport), "START_ALL_HEALTH_INTERVAL": "1",
               **extra_env}
        env = {k: v for k, v in env.items() if k != "WEB_CONCURRENCY" or "WEB_CONCURRENCY"
               in extra_env}
        Path("/tmp/start-all-bench-sizing").mkdir(exist_ok=True)
        procfile = Path("/tmp/start-all-bench-sizing/Procfile")
        procfile.write_text(f"web: gunicorn --chdir {APPS} --bind 127.0.0.1:$PORT "
                            "--graceful-timeout 2 heavy_app:app\n")
        self.log = open("/tmp/start-all-bench-sizing/log", "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup,
             "unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "supervisor"],
            cwd="/tmp/start-all-bench-sizing", env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def pid1(self) -> int | None:
        for pid in Path(self.cgroup, "cgroup.procs").read_text().split():
            try:
                if b"runner.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except OSError:
                pass
        return None

    def stop(self) -> None:
        pid = self.pid1()
        if pid:
            os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        deadline = time.monotonic() + 10
        while Path(self.cgroup, "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.1)


def wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    return None


def measured(limit: int, app_mib: int, name: str) -> dict:
    cgroup = make_cgroup(limit, name)
    run = Run(cgroup, app_mib, {})
    try:
        def steady():
            report = healthz(run.hport)
            state = report and (report.get("resources") or {}).get("sizing")
            return state if state and state["state"].startswith("steady") else None

        state = wait(steady, 120) or {}
        took = time.monotonic() - run.started
        time.sleep(2)
        pid1 = run.pid1()
        rss = int(Path(f"/proc/{pid1}/statm").read_text().split()[1]) * os.sysconf(
            "SC_PAGE_SIZE") if pid1 else 0
        return {"app": name, "workers": state.get("wanted"), "state": state.get("state", "?"),
                "per_worker": (state.get("per_worker_pss") or 0) // MIB,
                "usage": cg_mib(cgroup, "memory.usage_in_bytes"),
                "peak": cg_mib(cgroup, "memory.max_usage_in_bytes"),
                "oom": oom_kills(cgroup), "took": took, "pid1_rss": rss / MIB}
    finally:
        run.stop()
        os.rmdir(cgroup)


def static(limit: int, app_mib: int, name: str, count: int) -> dict:
    cgroup = make_cgroup(limit, name + "-static")
    run = Run(cgroup, app_mib, {"WEB_CONCURRENCY": str(count)})
    try:
        def settled():
            report = healthz(run.hport)
            if run.proc.poll() is not None or oom_kills(cgroup):
                return "ended"
            return report and report["ready"] and time.monotonic() - run.started > 8

        wait(settled, 60)
        alive = run.proc.poll() is None
        return {"usage": cg_mib(cgroup, "memory.usage_in_bytes"),
                "peak": cg_mib(cgroup, "memory.max_usage_in_bytes"),
                "oom": oom_kills(cgroup), "alive": alive}
    finally:
        run.stop()
        os.rmdir(cgroup)


def pid1_rss(limit: int, mode: str) -> float:
    cgroup = make_cgroup(limit, f"rss-{mode}")
    run = Run(cgroup, 0, {"START_ALL_SIZING": mode})
    try:
        wait(lambda: (r := healthz(run.hport)) and r["ready"], 60)
        time.sleep(3)
        pid1 = run.pid1()
        status = Path(f"/proc/{pid1}/status").read_text()
        line = next(ln for ln in status.splitlines() if ln.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024
    finally:
        run.stop()
        os.rmdir(cgroup)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--limit-mib", type=int, default=512)
    p.add_argument("--heavy-mib", type=int, default=110)
    args = p.parse_args()
    limit = args.limit_mib * MIB
    cpus, _ = resources.cpu_limit()
    estimate = sizing.size(limit, cpus, None, None, True, None)["web"]
    print(f"limit {args.limit_mib} MiB (cgroup v1), {cpus:g} CPUs; the estimate (90 MiB per "
          f"worker) would start {estimate} workers; gunicorn alone, no count given")
    print("| app | MiB per worker (PSS, measured) | workers chosen | state | cgroup usage / peak "
          "MiB | OOM kills | steady after s | static count | static: usage / peak MiB, OOM |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")
    for name, app_mib in (("heavy", args.heavy_mib), ("light", 0)):
        m = measured(limit, app_mib, name)
        s = static(limit, app_mib, name, estimate)
        fate = f"{s['usage']} / {s['peak']}, {s['oom']}" + ("" if s["alive"] else " (ended)")
        print(f"| {name} | {m['per_worker']} | {m['workers']} | {m['state']} | {m['usage']} / "
              f"{m['peak']} | {m['oom']} | {m['took']:.1f} | {estimate} | {fate} |")
    auto, off = pid1_rss(limit, "auto"), pid1_rss(limit, "off")
    print(f"PID 1 VmRSS, light app: sizing auto {auto:.1f} MiB, off {off:.1f} MiB "
          f"(+{auto - off:.1f} MiB for the sizing thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
