"""The health endpoint under load, against a gunicorn sync worker serving the same JSON.

    .venv/bin/python bench/bench_health.py [--duration 3] [--runs 3] [--connections 10]

Needs `wrk` (installed with `apt-get install -y wrk` when missing and we are root; otherwise
the script says so and exits 0). Setup, all in this one run:
- start-all as PID 1 (unshare) running gunicorn (1 sync worker, the WSGI health middleware),
  once alone and once beside a child flooding the log (`yes`: ~100-byte lines as fast as the
  pipe takes them); PID 1 (all of its threads) is pinned to CPU 0, wrk to CPU 1;
- rows: PID 1's /healthz and /livez on the health port; the same /healthz on $PORT through
  the WSGI middleware (gunicorn -> unix socket -> PID 1); the peer: a gunicorn sync worker
  (also pinned to CPU 0) returning the very JSON body PID 1 returned, from memory;
- PID 1's VmRSS and PSS (smaps_rollup) after the load, with the health server on, and with
  the same Procfile run by a plan whose health section is empty (no health threads at all).
Goals (issue 3): p99 <= 5 ms and >= 2,000 req/s on one core; PID 1 <= 16 MB RSS.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLOOD = "yes " + "log-line-" * 11  # ~100-byte lines, as fast as the pipe takes them
PEER_APP = '''
body = open({path!r}, "rb").read()
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''
NO_HEALTH = (
    "import sys; from dataclasses import replace; from supervisor import start; "
    "args = start.parser().parse_args([]); start.become_subreaper(); "
    "start.exec_runner(replace(start.resolve(args), health={}))"
)


def get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def ensure_wrk() -> str | None:
    if shutil.which("wrk"):
        return shutil.which("wrk")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True)
    return shutil.which("wrk")


def wrk(url: str, duration: float, connections: int) -> dict:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency",
         url], capture_output=True, text=True, timeout=duration + 30).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"wrk {url}: no result:\n{out}")
    rps = float(found.group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"p50": ms("50"), "p99": ms("99"), "rps": rps,
            "errors": errors.group(0) if errors else ""}


def memory(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1)) / 1024
    return rss, pss


class Supervisor:
    """start-all as PID 1 of a new PID namespace, output to /dev/null."""

    def __init__(self, workdir: Path, env: dict, no_health: bool = False) -> None:
        argv = [sys.executable, "-m", "supervisor"]
        if no_health:
            argv = [sys.executable, "-c", NO_HEALTH]
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", *argv], cwd=workdir,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def child():
            path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            pids = path.read_text().split() if path.exists() else []
            return int(pids[0]) if pids else None

        self.pid = wait_until(child, 10, "PID 1")

    def pin(self, cpu: int) -> None:
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(self.pid)],
                       capture_output=True, check=True)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


WEB = "web: gunicorn --bind 127.0.0.1:$PORT --workers 1 tests.health.apps:wsgi_app\n"


def scenario(work: Path, env: dict, flood: bool, args) -> dict:
    """wrk against every endpoint and the peer; PID 1's memory before and after."""
    port, hport, peer_port = int(env["PORT"]), int(env["START_ALL_HEALTH_PORT"]), free_port()
    (work / "Procfile").write_text(WEB + (f"logs: {FLOOD}\n" if flood else ""))
    rows = []
    sup = Supervisor(work, env)
    peer = None
    try:
        sup.pin(0)
        wait_until(lambda: _healthy(hport) and _healthy(port), 30, "healthy")
        time.sleep(1)
        idle = memory(sup.pid)
        _, body = get(hport, "/healthz")
        (work / "body.json").write_bytes(body)
        (work / "peer_app.py").write_text(PEER_APP.format(path=str(work / "body.json")))
        peer = subprocess.Popen(
            ["taskset", "-c", "0", str(BIN / "gunicorn"), "--chdir", str(work), "--bind",
             f"127.0.0.1:{peer_port}", "--workers", "1", "peer_app:app"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _open(peer_port), 20, "the peer gunicorn")
        for label, url in (
            ("start-all PID 1 /healthz (health port)", f"http://127.0.0.1:{hport}/healthz"),
            ("start-all PID 1 /livez (health port)", f"http://127.0.0.1:{hport}/livez"),
            ("WSGI middleware /healthz on $PORT (gunicorn -> PID 1)",
             f"http://127.0.0.1:{port}/healthz"),
            ("peer: gunicorn sync worker, same JSON from memory",
             f"http://127.0.0.1:{peer_port}/"),
        ):
            runs = [wrk(url, args.duration, args.connections) for _ in range(args.runs)]
            rows.append((label, {
                key: statistics.median(r[key] for r in runs) for key in ("p50", "p99", "rps")
            } | {"errors": "; ".join(r["errors"] for r in runs if r["errors"])}))
        after = memory(sup.pid)
    finally:
        sup.stop()
        if peer:
            peer.terminate()
            peer.wait(10)
    return {"rows": rows, "idle": idle, "after": after}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    p.add_argument("--runs", type=int, default=3, help="wrk runs per row (medians shown)")
    p.add_argument("--connections", type=int, default=10)
    args = p.parse_args()
    if not ensure_wrk():
        print("wrk is missing: install it with `apt-get install -y wrk` and run again")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-health-"))
    port, hport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("START_ALL_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONPATH": str(ROOT),
            "PORT": str(port), "START_ALL_HEALTH_PORT": str(hport), "START_ALL_SIZING": "off"}
    (work / "Procfile").write_text(WEB)
    results = {}
    for flood in (False, True):
        results[flood] = scenario(work, env, flood, args)
    off = Supervisor(work, {**env, "START_ALL_HEALTH_PORT": "0"}, no_health=True)
    try:
        wait_until(lambda: _open(port), 30, "web without health")
        time.sleep(1)
        mem_off = memory(off.pid)
    finally:
        off.stop()
    shutil.rmtree(work, ignore_errors=True)

    print(f"## Health endpoint under wrk -t1 -c{args.connections} -d{int(args.duration)}s, "
          f"median of {args.runs} runs (PID 1 pinned to CPU 0, wrk to CPU 1); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| children | endpoint | p50 ms | p99 ms | req/s | errors |")
    print("|---|---|---:|---:|---:|---|")
    for flood, result in results.items():
        children = "gunicorn + `yes` flooding the log" if flood else "gunicorn, quiet"
        for label, r in result["rows"]:
            print(f"| {children} | {label} | {r['p50']:.2f} | {r['p99']:.2f} | "
                  f"{r['rps']:,.0f} | {r['errors'] or '-'} |")
    print("\n## PID 1 memory (MiB)\n")
    print("| state | VmRSS | PSS |")
    print("|---|---:|---:|")
    for flood, result in results.items():
        what = "log flood" if flood else "quiet"
        print(f"| health on, {what}, before the load | {result['idle'][0]:.1f} | "
              f"{result['idle'][1]:.1f} |")
        print(f"| health on, {what}, after the load | {result['after'][0]:.1f} | "
              f"{result['after'][1]:.1f} |")
    print(f"| health off (no health threads), quiet | {mem_off[0]:.1f} | {mem_off[1]:.1f} |")
    worst = max(r["after"][0] for r in results.values())
    for flood, result in results.items():
        first = result["rows"][0][1]
        print(f"\nGoals ({'log flood' if flood else 'quiet'}): p99 <= 5 ms: "
              f"{'met' if first['p99'] <= 5 else 'NOT met'} ({first['p99']:.2f}); "
              f">= 2,000 req/s: {'met' if first['rps'] >= 2000 else 'NOT met'} "
              f"({first['rps']:,.0f})")
    print(f"PID 1 <= 16 MB RSS: {'met' if worst <= 16 else 'NOT met'} ({worst:.1f})")
    return 0


def _healthy(port: int) -> bool:
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False


def _open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
