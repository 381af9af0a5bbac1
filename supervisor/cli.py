"""The `start-all` command.

`start-all [options]` validates the configuration and becomes the supervisor (see `runner`).
Subcommands live in their own modules and are imported only when used, each exposing
`main(argv: list[str]) -> int`.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> module whose main(argv) runs it
SUBCOMMANDS = {
    "status": "supervisor.status",
    "init": "supervisor.kit.init",
    "check": "supervisor.kit.check",
    "migrate": "supervisor.kit.migrate",
    "schedules": "supervisor.kit.schedules",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]])
        return module.main(argv[1:])
    from supervisor.start import main as start_main

    return start_main(argv)
