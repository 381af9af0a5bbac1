"""How soon after its exec does `start-all`, as PID 1, honour a SIGTERM? A measurement, run as
`python -m tests.core.signal_window [--start-all PATH] [--runs N] [--delays 0,5,10]` (root:
it makes PID namespaces); tests/core/test_signal_window.py asserts the part that is guaranteed.

A namespace's PID 1 only receives the signals it has a handler for (or holds blocked): one that
arrives while the interpreter is still starting, before start-all's first line runs, is dropped
by the kernel. Each run starts `unshare --pid --fork --mount-proc START_ALL` in a directory
whose Procfile is `jobs: sleep 30`, sees the exec of the namespace's PID 1 (its /proc/PID/exe
leaves unshare), sends SIGTERM `delay` ms later and counts the run honoured when start-all
exits 0 saying "received SIGTERM". It also reports, per run, when SIGTERM first shows as
blocked (held) in /proc/PID/status after the exec: the start of the guarantee. The same for
the bare interpreter of that command (its shebang's) whose first line holds SIGTERM: the
floor, the part no Python code can shorten.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]
POLL = 0.0002  # seconds; a busy loop would take the CPU the start-up needs on a small machine
LOST_AFTER = 3.0  # seconds without an exit: the signal was dropped


def _child_of(pid: int) -> int | None:
    try:
        pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(pids[0]) if pids else None


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def blocked(pid: int) -> bool:
    """SIGTERM in the process's blocked mask (start-all holds it while it validates)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigBlk:"):
                return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    except OSError:
        pass
    return False


class Pid1:
    """`start-all` as PID 1 of a fresh namespace, and the moment (monotonic) of its exec."""

    def __init__(self, start_all: list[str], cwd: Path, env: dict) -> None:
        self.proc = subprocess.Popen([*UNSHARE, *start_all], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        unshare_exe = _exe(self.proc.pid) or shutil.which("unshare")
        deadline = time.monotonic() + 10
        while True:  # polled every 0.2 ms: the exec is the reference point
            time.sleep(POLL)
            child = _child_of(self.proc.pid)
            if child and (exe := _exe(child)) and exe != unshare_exe:
                self.pid, self.exec_at = child, time.monotonic()
                return
            if time.monotonic() > deadline:
                raise RuntimeError("no exec under unshare")

    def held_after(self, timeout: float = 5.0) -> float | None:
        """Seconds from the exec until SIGTERM shows as held; None if never seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(POLL)
            if blocked(self.pid):
                return time.monotonic() - self.exec_at
            if self.proc.poll() is not None:
                return None
        return None

    def signal_at(self, delay: float) -> None:
        time.sleep(max(0.0, self.exec_at + delay - time.monotonic()))
        os.kill(self.pid, signal.SIGTERM)

    def honoured(self) -> bool:
        try:
            out, _ = self.proc.communicate(timeout=LOST_AFTER)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return self.proc.returncode == 0 and b"received SIGTERM" in out

    def kill(self) -> None:
        """SIGKILL to the namespace's PID 1: the kernel then ends the whole namespace."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.communicate()


def project(where: Path) -> tuple[Path, dict]:
    (where / "Procfile").write_text("jobs: sleep 30\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("START_ALL_")}
    env["START_ALL_HEALTH_PORT"] = "0"
    return where, env


def held_times(command: list[str], cwd: Path, env: dict, runs: int) -> str:
    held = []
    for _ in range(runs):
        run = Pid1(command, cwd, env)
        held.append(run.held_after())
        run.kill()
    seen = [h * 1000 for h in held if h is not None]
    if not seen:
        return "never seen"
    return (f"median {statistics.median(seen):.1f} ms, min {min(seen):.1f}, "
            f"max {max(seen):.1f} ({len(seen)} runs)")


def interpreter_of(script: str) -> str:
    with open(shutil.which(script) or script, "rb") as f:
        first = f.readline()
    return first[2:].decode().strip() if first.startswith(b"#!") else sys.executable


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--start-all", default=shutil.which("start-all") or "start-all",
                   help="the command (default: start-all on PATH)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--delays", default="0,5,10,15,20,25,30,40,60",
                   help="ms after the exec, comma-separated")
    args = p.parse_args(argv)
    command = args.start_all.split()
    with tempfile.TemporaryDirectory(prefix="start-all-window-") as tmp:
        cwd, env = project(Path(tmp))
        bare = [interpreter_of(command[0]), "-c", "import _signal, time; "
                "_signal.pthread_sigmask(_signal.SIG_BLOCK, (_signal.SIGTERM,)); time.sleep(9)"]
        print(f"SIGTERM held after the exec: {held_times(command, cwd, env, args.runs)}")
        print(f"the bare interpreter, holding in its first line: "
              f"{held_times(bare, cwd, env, args.runs)}")
        print(f"{'delay ms':>8}  honoured")
        for delay in (float(d) for d in args.delays.split(",")):
            count = 0
            for _ in range(args.runs):
                run = Pid1(command, cwd, env)
                run.signal_at(delay / 1000)
                count += run.honoured()
            print(f"{delay:>8g}  {count}/{args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
