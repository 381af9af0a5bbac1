"""Procfile and .env files, read with honcho's parsers.

honcho skips lines it does not understand; a supervisor should not silently drop a process,
so every non-blank, non-comment line must be a `name: command` line.
"""

from __future__ import annotations

from pathlib import Path

from honcho.environ import PROCFILE_LINE, parse, parse_procfile


class ProcfileError(ValueError):
    """A Procfile or env file that cannot be used; the message names the culprit."""


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProcfileError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ProcfileError(f"cannot read {what} {path}: {error}") from None


def load_procfile(path: Path) -> dict[str, str]:
    """Process name -> command line, in file order."""
    text = _read(path, "Procfile")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not PROCFILE_LINE.match(line):
            raise ProcfileError(f"{path}:{number}: expected 'name: command', got {stripped!r}")
    try:
        processes = dict(parse_procfile(text).processes)
    except AssertionError:  # honcho asserts that names are unique
        seen: set[str] = set()
        for line in text.splitlines():
            match = PROCFILE_LINE.match(line)
            if match and match.group(1) in seen:
                raise ProcfileError(
                    f"{path}: process {match.group(1)!r} is defined twice"
                ) from None
            if match:
                seen.add(match.group(1))
        raise
    if not processes:
        raise ProcfileError(f"{path}: no processes defined")
    return processes


def load_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (shell quoting allowed), as honcho and foreman read them."""
    text = _read(path, "env file")
    try:
        return parse(text)
    except ValueError as error:  # shlex: unbalanced quotes
        raise ProcfileError(f"{path}: {error}") from None
