"""The `start-all` command.

`start-all [options]` validates the configuration and becomes the supervisor (see `runner`).
Subcommands live in their own modules and are imported only when used, each exposing
`main(argv: list[str]) -> int`.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

# subcommand -> (module whose main(argv) runs it, one line for --help)
SUBCOMMANDS = {
    "status": ("supervisor.status", "the running supervisor's health (HEALTHCHECK)"),
    "init": ("supervisor.kit.init", "add the deployment files to a project"),
    "check": ("supervisor.kit.check", "diagnose a project before it is deployed"),
    "migrate": ("supervisor.kit.migrate", "run the release migrations, one container at a time"),
    "schedules": ("supervisor.kit.schedules", "sync periodic tasks (schedules as code)"),
}
# Stop signals are held (blocked, not lost) from the first line of `start-all` (bin/start-all,
# __main__.py: the same four) until the runner's handlers exist: as PID 1 a signal without a
# handler is dropped, and validating takes a while. A blocked mask and pending signals survive
# exec; runtime.py unblocks them. Before that first line runs, the interpreter's own start-up
# (README.md, "Signals before start-all runs") is a window no Python code can close.
HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def main(argv: list[str] | None = None, mask: set[int] | None = None) -> int:
    """`mask`: the signal mask from before bin/start-all (or __main__) held HELD_SIGNALS."""
    argv = sys.argv[1:] if argv is None else argv
    starting = not (argv and argv[0] in SUBCOMMANDS)
    if starting:
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    elif mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a subcommand holds nothing
    try:
        try:
            if starting:
                from supervisor.start import main as run

                code = run(argv)  # returns only when it did not become the runner (exec)
            else:
                code = importlib.import_module(SUBCOMMANDS[argv[0]][0]).main(argv[1:])
        except SystemExit as exit:  # argparse's --help and usage errors
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
            if isinstance(exit.code, str):
                print(exit.code, file=sys.stderr)
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
    except BrokenPipeError:
        code = _closed_pipe()
    if starting:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)  # a held one acts now
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
    return code


def _closed_pipe() -> int:
    """`start-all status --json | head`: the reader left; say nothing, like `cat` would."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE
