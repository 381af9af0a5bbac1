"""A stop signal that reaches start-all, as PID 1, at any moment after its first line has run
is honoured. That moment is read from the process itself (SIGTERM shows as blocked in
/proc/PID/status); before it the interpreter is still starting and the kernel drops a signal
to PID 1 (measured, not asserted: `python -m tests.core.signal_window`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor import cli
from tests.conftest import START_ALL, VENV_ENV, wait_for
from tests.core.signal_window import Pid1, blocked, project

# the installed command (bin/start-all) and `python -m supervisor`: both hold from line one
INSTALLED = shutil.which("start-all", path=os.path.dirname(sys.executable))
COMMANDS = {"bin/start-all": [INSTALLED] if INSTALLED else None, "python -m": START_ALL}


def mask(pid: int, field: str = "SigBlk") -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            bits = int(line.split()[1], 16)
            return {n for n in range(1, 65) if bits & (1 << (n - 1))}
    raise AssertionError(field)


@pytest.mark.parametrize("delay_ms", [0, 1, 5, 20, 100, 300])
@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_sigterm_from_the_first_held_moment_on_is_honoured(tmp_path, command, delay_ms):
    argv = COMMANDS[command]
    assert argv, f"{command} is installed next to {sys.executable} (pip install -e .)"
    cwd, env = project(tmp_path)
    run = Pid1(argv, cwd, {**env, **VENV_ENV})
    try:
        wait_for(lambda: blocked(run.pid) or run.proc.poll() is not None, 20,
                 "SIGTERM held by start-all")
        assert set(cli.HELD_SIGNALS) <= mask(run.pid)  # the same four as cli.HELD_SIGNALS
        time.sleep(delay_ms / 1000)  # the input: how long after the hold (validating, exec
        os.kill(run.pid, signal.SIGTERM)  # into the runner, handlers, children running)
        out, _ = run.proc.communicate(timeout=30)
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert run.proc.returncode == 0, out.decode()
    assert b"stopping (received SIGTERM)" in out


def test_a_subcommand_holds_no_signal(tmp_path):
    """`start-all status` against a server that never answers: SIGTERM ends it at once."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        argv = COMMANDS["bin/start-all"] or START_ALL
        proc = subprocess.Popen([*argv, "status", "--timeout", "60", "--url", url],
                                env={**os.environ, **VENV_ENV}, stderr=subprocess.PIPE)
        silent.settimeout(20)
        try:
            conn, _ = silent.accept()  # the request is in: status waits for the answer
            assert not set(cli.HELD_SIGNALS) & mask(proc.pid)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == -signal.SIGTERM
            conn.close()
        finally:
            proc.kill()
            proc.wait()
