"""The supervisor's rough edges: signals before the runner exists, repeated stop signals, bad
input refused in one line with exit 2, closed pipes, typos and --help. Real processes, real
signals, as PID 1 of a fresh PID namespace where it matters."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor import cli
from tests.conftest import START_ALL, VENV_ENV, free_port, wait_for

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDER = f"python3 {FIXTURES}/recorder.py"
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
LIBC = ctypes.CDLL(None, use_errno=True)  # tgkill(2): glibc >= 2.30


def clean_env(**extra: str) -> dict:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("START_ALL_") and k not in ("WEB_CONCURRENCY", "PORT")}
    return {**base, **VENV_ENV, "PORT": str(free_port()), "START_ALL_HEALTH_PORT": "0", **extra}


def holding_sigterm(pid: int) -> bool:
    """start-all itself (not unshare between its fork and exec, which blocks signals too)
    holds SIGTERM."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return b"unshare" not in argv[0] and bool(status_field(pid, "SigBlk") & SIGTERM_BIT)


def status_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(field)


# ----- signals before the runner exists -----------------------------------------------------------


def test_sigterm_while_validating_as_pid1_is_honoured(run_supervisor, tmp_path):
    """The Procfile is a FIFO: validation waits on it for as long as we like, so the SIGTERM
    certainly arrives before the runner exists. Without the held mask PID 1 drops it."""
    fifo = tmp_path / "Procfile.fifo"
    os.mkfifo(fifo)
    sup = run_supervisor(args=["-f", str(fifo)], env=clean_env(RECORD_DIR=str(tmp_path)))
    pid = sup.host_pid
    wait_for(lambda: holding_sigterm(pid), 10, "SIGTERM held")
    assert "runner.py" not in Path(f"/proc/{pid}/cmdline").read_text()  # still validating
    sup.signal(signal.SIGTERM)
    assert status_field(pid, "SigPnd") & SIGTERM_BIT or status_field(pid, "ShdPnd") & SIGTERM_BIT
    with open(fifo, "w") as writer:  # now let validation finish
        writer.write(f"web: {RECORDER} web\n")
    assert sup.wait(20) == 0, sup.output
    assert "stopping (received SIGTERM)" in sup.output
    assert "started (pid" not in sup.output  # nothing was started, nothing to stop
    assert not (tmp_path / "web.signals").exists()


def test_sigterm_while_validating_then_invalid_config_exits_2(run_supervisor, tmp_path):
    fifo = tmp_path / "Procfile.fifo"
    os.mkfifo(fifo)
    sup = run_supervisor(args=["-f", str(fifo)], env=clean_env())
    pid = sup.host_pid
    wait_for(lambda: holding_sigterm(pid), 10, "SIGTERM held")
    sup.signal(signal.SIGTERM)
    with open(fifo, "w") as writer:
        writer.write("web sleep 1\n")
    assert sup.wait(20) == 2
    assert "expected 'name: command'" in sup.output


# ----- a stop signal repeated at once counts once ------------------------------------------------


def _two_sigterms_at_once(pid: int) -> None:
    """Two separate deliveries of SIGTERM, 0 ms apart whatever the machine's load.

    A second kill() while the first is still pending merges with it (one delivery), and a
    second kill() after the first was delivered comes as late as the sender was scheduled.
    So: freeze the supervisor (SIGSTOP, which even a namespace's PID 1 gets from outside), queue
    one SIGTERM for the process (kill: shared pending set) and one for its main thread (tgkill:
    that thread's own set), then let it go: both handlers run before it does anything else."""
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] == "T",
                 10, "the supervisor stopped")
        os.kill(pid, signal.SIGTERM)
        if LIBC.tgkill(pid, pid, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "tgkill")
        assert status_field(pid, "ShdPnd") & SIGTERM_BIT and status_field(pid, "SigPnd") \
            & SIGTERM_BIT, "two SIGTERMs pending, not one"
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_repeated_sigterm_within_100ms_counts_once(run_supervisor, tmp_path):
    env = clean_env(RECORD_DIR=str(tmp_path), START_ALL_STOP_TIMEOUT="2")
    sup = run_supervisor(f"web: {RECORDER} web --ignore-term\n", env=env)
    sup.wait_line("web ready")
    _two_sigterms_at_once(sup.host_pid)
    assert sup.wait(20) == 0, sup.output
    assert "counted once" in sup.output, sup.output
    assert "killing everything now" not in sup.output
    assert "did not stop within the budget" in sup.output  # the 2 s budget was kept


def test_a_second_sigterm_later_still_kills_at_once(run_supervisor, tmp_path):
    env = clean_env(RECORD_DIR=str(tmp_path), START_ALL_STOP_TIMEOUT="30")
    sup = run_supervisor(f"web: {RECORDER} web --ignore-term\n", env=env)
    sup.wait_line("web ready")
    sup.signal(signal.SIGTERM)
    sup.wait_line(r"stopping \(received SIGTERM\)")
    time.sleep(0.2)  # past the repeat window: this is the input being tested, not a wait
    sup.signal(signal.SIGTERM)
    assert sup.wait(20) is not None
    assert "SIGTERM again while stopping: killing everything now" in sup.output


def test_gnu_timeout_double_sigterm_is_one_graceful_stop(tmp_path):
    """`timeout` signals its child, then its whole process group: two SIGTERMs at once."""
    (tmp_path / "Procfile").write_text(f"web: {RECORDER} web --ignore-term\n")
    env = clean_env(RECORD_DIR=str(tmp_path), START_ALL_STOP_TIMEOUT="2")
    result = subprocess.run(["timeout", "-s", "TERM", "3", *START_ALL], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30)
    out = result.stdout + result.stderr
    assert "web ready" in out and "stopping (received SIGTERM)" in out, out
    assert "killing everything now" not in out
    assert "did not stop within the budget" in out


# ----- bad input: one line, exit 2 ----------------------------------------------------------------


def _big_procfile(path: Path) -> None:
    path.write_text("web: echo " + "a" * 1_000_000 + "\n")


BAD_INPUTS = [
    ("procfile-1mb-line", _big_procfile, {}, "Procfile:1: the line is 1000010 bytes"),
    ("procfile-too-big", lambda p: p.write_text("# x\n" * 300_000), {}, "at most 1048576"),
    ("procfile-many", lambda p: p.write_text("".join(f"p{i}: sleep 1\n" for i in range(101))),
     {}, "101 processes; at most 100"),
    ("env-no-equals", lambda p: (p.with_name(".env").write_text("A=1\nsk_live_123\n"),
                                 p.write_text("web: sleep 1\n")),
     {}, ".env:2: expected KEY=value, this line has no '='"),
    ("env-unbalanced-quote", lambda p: (p.with_name(".env").write_text("A=1\nB='x y\n"),
                                        p.write_text("web: sleep 1\n")),
     {}, ".env:2: No closing quotation"),
    ("env-line-too-long", lambda p: (p.with_name(".env").write_text("A=" + "v" * 200_000),
                                     p.write_text("web: sleep 1\n")),
     {}, ".env:1: the line is 200002 bytes; a variable may be at most 131071"),
    ("stop-timeout-nan", None, {"START_ALL_STOP_TIMEOUT": "nan"},
     "START_ALL_STOP_TIMEOUT: Input should be a finite number"),
    ("web-concurrency-with-w", lambda p: p.write_text("web: gunicorn -w 2 app:app\n"),
     {"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY: expected a whole number >= 1 (got 'abc')"),
    ("web-concurrency-sizing-off", lambda p: p.write_text("web: gunicorn app:app\n"),
     {"WEB_CONCURRENCY": "abc", "START_ALL_SIZING": "off"}, "WEB_CONCURRENCY: expected"),
    ("typo", None, {"START_ALL_STOPTIMEOUT": "3"},
     "unknown setting START_ALL_STOPTIMEOUT: did you mean START_ALL_STOP_TIMEOUT?"),
    ("typo-far-from-all", None, {"START_ALL_XYZZY": "1"},
     "unknown setting START_ALL_XYZZY: the settings are in README.md, docs/health.md"),
    ("typo-process-field", None, {"START_ALL_PROCESSES__WEB__RESTRT": "always"},
     "START_ALL_PROCESSES__WEB__RESTRT: unknown field, did you mean RESTART?"),
    ("huge-setting", None, {"START_ALL_STOP_TIMEOUT": "9" * 100_000}, "(100000 characters)"),
]


@pytest.mark.parametrize(("case", "write", "extra", "expected"), BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case, write, extra, expected):
    procfile = tmp_path / "Procfile"
    if write is None:
        procfile.write_text("web: sleep 1\n")
    else:
        write(procfile)
    result = subprocess.run(START_ALL, cwd=tmp_path, env=clean_env(**extra),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) < 300, result.stderr[:2000]
    assert expected in lines[0]
    assert result.stdout == ""
    if case == "env-no-equals":
        assert "sk_live" not in lines[0]  # a line without '=' may be a pasted secret


def test_env_file_keeps_export_and_empty_values(tmp_path):
    (tmp_path / ".env").write_text("export A=1\nB=\n# note\n\nC='x y'\n")
    (tmp_path / "Procfile").write_text("web: sleep 1\n")
    code = "from supervisor.start import load_environment; import os; load_environment(None);" \
           "print(repr((os.environ['A'], os.environ['B'], os.environ['C'])))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "('1', '', 'x y')", result.stderr


# ----- closed pipes, --help -----------------------------------------------------------------------


def run_into_closed_pipe(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: `| head` that already left
    try:
        return subprocess.run([*START_ALL, *args], cwd=cwd, env=env, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [["--help"], ["--dry-run", "--json"], ["--dry-run"],
                                  ["status", "--help"], ["schedules", "--help"],
                                  ["check", "--help"], ["init", "--help"]],
                         ids=" ".join)
def test_a_closed_pipe_is_quiet(tmp_path, args):
    (tmp_path / "Procfile").write_text("web: sleep 1\n")
    result = run_into_closed_pipe(args, tmp_path, clean_env())
    assert result.stderr == ""
    # argparse's --help swallows the error itself and exits 0; everything else exits 141
    assert result.returncode == (0 if "--help" in args else 128 + signal.SIGPIPE)


def test_status_json_into_a_closed_pipe_is_quiet(run_supervisor, tmp_path):
    health = free_port()
    env = clean_env(START_ALL_HEALTH_PORT=str(health))
    # a web that really listens on $PORT: the probe's TCP connect to it is what makes the
    # status healthy (a `sleep` there is healthy only until the first probe turn sees it)
    sup = run_supervisor("web: python3 -m http.server $PORT --bind 127.0.0.1\n", env=env,
                         pid1=False)
    sup.wait_line("web.1 started")
    url = ["--url", f"http://127.0.0.1:{health}"]
    try:
        wait_for(lambda: subprocess.run([*START_ALL, "status", *url], env=env,
                                        capture_output=True).returncode == 0, 30,
                 "status healthy")
    except AssertionError as error:  # say why (a health port taken since free_port()?)
        last = subprocess.run([*START_ALL, "status", *url], env=env, capture_output=True,
                              text=True)
        raise AssertionError(f"{error}\nstatus: {last.stdout}{last.stderr}\n"
                             f"supervisor:\n{sup.output[-2000:]}") from None
    result = run_into_closed_pipe(["status", "--json", *url], tmp_path, env)
    assert result.stderr == "" and result.returncode == 128 + signal.SIGPIPE
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_help_lists_every_subcommand(tmp_path):
    result = subprocess.run([*START_ALL, "--help"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    listed = result.stdout.split("subcommands", 1)[1]
    for name in cli.SUBCOMMANDS:
        assert f"\n  {name} " in listed
    assert "schedules" in listed


def test_json_without_dry_run_is_refused_and_nothing_starts(tmp_path):
    (tmp_path / "Procfile").write_text("web: sleep 60\n")
    result = subprocess.run([*START_ALL, "--json"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == "start-all: --json only goes with --dry-run (nothing was started)\n"


def test_a_shell_builtin_is_a_valid_procfile_command(run_supervisor):
    sup = run_supervisor("release: exit 3\nweb: sleep 60\n", env=clean_env(), pid1=False)
    assert sup.wait(30) == 3
    assert "release failed (exit 3)" in sup.output and "command not found" not in sup.output
