"""start-all against its peers (supervisord, honcho) running the same two-process Procfile.

    .venv/bin/python bench/bench_supervisor.py [--runs 3] [--lines 200000]

Every tool runs gunicorn (1 sync worker) + django-q2 `qcluster` (workers=1, SQLite) from the
test fixture project, with its own defaults. Measured, per tool:
- the supervisor process's own RSS and PSS once both children are up;
- child exit -> replacement spawned: SIGKILL the qcluster main process, time until a new one
  is a child of the supervisor (the first restart of a fresh run);
- SIGTERM to the supervisor -> the supervisor and every process of the tree gone;
- log lines per second through the supervisor's output (one child printing N short lines).
supervisord is installed into its own venv (bench/.peers/) because its import package is
also called `supervisor`. Medians over --runs fresh runs; the machine is shared, so compare
tools within one run of this script, not across runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from benchkit import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "fixtures" / "djangoapp"
PEERS = ROOT / "bench" / ".peers"
BIN = Path(sys.executable).parent
GOALS = {"rss": 16.0, "restart": 50.0, "stop": 1500.0}


def supervisord_binary() -> Path:
    binary = PEERS / "bin" / "supervisord"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
        subprocess.run(
            [str(PEERS / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
             "supervisor"],
            check=True,
        )
    return binary


def procfile_lines(port: int) -> dict[str, str]:
    # explicit `exec` so that every tool's shell becomes the program itself
    return {
        "web": f"exec {BIN}/gunicorn --chdir {APP} --bind 127.0.0.1:{port} --workers 1 "
        "proj.wsgi",
        "worker": f"cd {APP} && exec {sys.executable} manage.py qcluster",
    }


def supervisord_conf(work: Path, programs: dict[str, str]) -> Path:
    lines = [
        "[supervisord]",
        "nodaemon=true",
        "logfile=/dev/null",
        "logfile_maxbytes=0",
        f"pidfile={work}/supervisord.pid",
        "[unix_http_server]",
        f"file={work}/supervisord.sock",
    ]
    for name, command in programs.items():
        lines += [
            f"[program:{name}]",
            f"command=/bin/sh -c {shlex.quote(command)}",
            "autorestart=true",
            "redirect_stderr=true",
            "stdout_logfile=/dev/fd/1",
            "stdout_logfile_maxbytes=0",
        ]
    path = work / "supervisord.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def launch(tool: str, work: Path, programs: dict[str, str], env: dict) -> subprocess.Popen:
    out = open(work / f"{tool}.log", "wb")
    if tool == "supervisord":
        argv = [str(supervisord_binary()), "-c", str(supervisord_conf(work, programs))]
    else:
        (work / "Procfile").write_text("".join(f"{n}: {c}\n" for n, c in programs.items()))
        argv = (
            [str(BIN / "start-all")]
            if tool == "start-all"
            else [str(BIN / "honcho"), "-f", str(work / "Procfile"), "start"]
        )
    # its own session: the clean-up kills process groups, never the benchmark's own
    return subprocess.Popen(
        argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def memory_mb(pid: int) -> tuple[float, float]:
    """RSS and PSS of the supervisor: its process plus its own helper processes (honcho forks
    one per child; they share the supervisor's command line)."""
    root = psutil.Process(pid)
    own = [p for p in tree(pid) if p.cmdline() == root.cmdline()]
    rss = pss = 0
    for process in own:
        rss += process.memory_info().rss
        with open(f"/proc/{process.pid}/smaps_rollup") as f:
            pss += sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
    return rss / 2**20, pss / 2**20


def is_qcluster(process: psutil.Process) -> bool:
    try:
        return "qcluster" in " ".join(process.cmdline()) and process.status() != "zombie"
    except psutil.NoSuchProcess:
        return False


def qcluster_mains(pid: int) -> set[int]:
    """qcluster main processes anywhere below `pid` (honcho runs them as grandchildren)."""
    found = set()
    for process in tree(pid)[1:]:
        try:
            parent = process.parent()
        except psutil.NoSuchProcess:
            continue
        if is_qcluster(process) and not (parent and is_qcluster(parent)):
            found.add(process.pid)
    return found


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class Stack:
    """One tool running the Procfile; on exit, every process group it ever had is killed
    (the peers leave orphans behind, e.g. a SIGKILLed qcluster's sentinel)."""

    def __init__(self, tool: str, env: dict, programs: dict[str, str] | None = None) -> None:
        self.tool = tool
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-{tool}-"))
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port), "TEST_DATA_DIR": str(self.work)}
        if programs is None:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--no-input"],
                cwd=APP, env=self.env, check=True, capture_output=True,
            )
            programs = procfile_lines(self.port)
        self.proc = launch(tool, self.work, programs, self.env)
        self.groups: set[int] = set()

    def tree(self) -> list[psutil.Process]:
        processes = tree(self.proc.pid)
        for process in processes[1:]:
            try:
                self.groups.add(os.getpgid(process.pid))
            except ProcessLookupError:
                pass
        return processes

    def wait_up(self) -> None:
        def up():
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return False
            return qcluster_mains(self.proc.pid) and len(self.tree()) >= 7

        wait_until(up, 60, f"{self.tool}: gunicorn + qcluster up", every=0.05)
        time.sleep(1.0)  # let the cluster finish forking before measuring

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.tree()
        for group in self.groups - {os.getpgid(0)}:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.work, ignore_errors=True)


def restart_ms(stack: Stack) -> float | None:
    """SIGKILL the qcluster main; time until a new one runs (None: the tool gave up)."""
    before = {p.pid for p in stack.tree()}
    (victim,) = qcluster_mains(stack.proc.pid)
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    try:
        wait_until(lambda: qcluster_mains(stack.proc.pid) - before, 3, "a new qcluster",
                   every=0.001)
    except TimeoutError:
        return None
    return (time.monotonic() - killed) * 1000


def stop_ms(stack: Stack) -> float:
    """SIGTERM to the supervisor; time until it and every process of its tree are gone."""
    everything = stack.tree()
    sent = time.monotonic()
    stack.proc.send_signal(signal.SIGTERM)
    stack.proc.wait(60)
    for process in everything:
        try:
            process.wait(60)
        except psutil.NoSuchProcess:
            pass
    return (time.monotonic() - sent) * 1000


def one_run(tool: str, env: dict) -> dict:
    with Stack(tool, env) as stack:
        stack.wait_up()
        rss, pss = memory_mb(stack.proc.pid)
        restart = restart_ms(stack)
        if restart is not None:
            stack.wait_up()
            return {"rss": rss, "pss": pss, "restart": restart, "stop": stop_ms(stack)}
    with Stack(tool, env) as stack:  # it stopped everything: measure the stop on a fresh one
        stack.wait_up()
        return {"rss": rss, "pss": pss, "restart": None, "stop": stop_ms(stack)}


def log_rate(tool: str, env: dict, lines: int) -> float:
    last = f"line {lines - 1} ".encode()
    printer = (  # one Procfile line: a list comprehension instead of a loop
        f"exec {sys.executable} -c \"import time; [print('line', i, 'of the log benchmark, "
        f"a typical short line') for i in range({lines})]; time.sleep(600)\""
    )
    env = {**env, "START_ALL_CHECK_PORT": "false"}
    with Stack(tool, env, {"logger": printer}) as stack:
        log = stack.work / f"{tool}.log"

        def first_line():
            return b"line 0 " in log.read_bytes()[:4096] and time.monotonic()

        started = wait_until(first_line, 30, f"{tool}: first log line", every=0.001)

        def done():
            with open(log, "rb") as f:
                f.seek(max(0, log.stat().st_size - 4096))
                return last in f.read()

        wait_until(done, 120, f"{tool}: last log line", every=0.001)
        return lines / (time.monotonic() - started)


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cell(value: float | None, unit: str = "", digits: int = 1, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:,.{digits}f}{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--tools", default="start-all,supervisord,honcho")
    args = parser.parse_args()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "PYTHONPATH": str(APP),
        "PYTHONUNBUFFERED": "1",
    }
    env = {k: v for k, v in env.items() if not k.startswith("START_ALL_")}
    tools = args.tools.split(",")
    rows = []
    for tool in tools:
        runs = []
        for _ in range(args.runs):
            runs.append(one_run(tool, env))
            print(f"  {tool}: {runs[-1]}", file=sys.stderr)
        rate = log_rate(tool, env, args.lines)
        rows.append((tool, runs, rate))

    print(f"\nSame Procfile (gunicorn 1 worker + qcluster workers=1), median of {args.runs} runs\n")
    print("| tool | RSS MB | PSS MB | kill -9 worker -> respawned | SIGTERM -> all exited "
          "| log lines/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for tool, runs, rate in rows:
        restart = median([r["restart"] for r in runs])
        print(
            f"| {tool} | {cell(median([r['rss'] for r in runs]))} "
            f"| {cell(median([r['pss'] for r in runs]))} "
            f"| {cell(restart, ' ms', missing='no restart (stops all)')} "
            f"| {cell(median([r['stop'] for r in runs]), ' ms', 0)} "
            f"| {cell(rate, '', 0)} |"
        )
    print(
        f"\nGoals for start-all: RSS <= {GOALS['rss']:g} MB, first restart <= "
        f"{GOALS['restart']:g} ms, SIGTERM -> all exited <= {GOALS['stop']:g} ms."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
