"""Procfile and .env files, read with honcho's parsers.

honcho skips lines it does not understand; a supervisor should not silently drop a process,
so every non-blank, non-comment line must be a `name: command` line.
"""

from __future__ import annotations

import re
from pathlib import Path

from honcho.environ import PROCFILE_LINE, parse, parse_procfile

# Linux refuses to exec an argument or an environment entry longer than this (MAX_ARG_STRLEN,
# 32 pages): a longer command line would crash-loop on E2BIG ("Argument list too long").
MAX_ARG = 32 * 4096 - 1
MAX_FILE = 1024 * 1024  # a Procfile or .env beyond this is not a configuration file
MAX_PROCESSES = 100
PLAIN_BREAKERS = set("'\"\\#")  # quotes, escapes, comments: the lines left to honcho
ENV_LINE = re.compile(r"^\s*(export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=")


class ProcfileError(ValueError):
    """A Procfile or env file that cannot be used; the message names the culprit."""


def _read(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise ProcfileError(f"{what} {path} is {size} bytes; at most {MAX_FILE} are read")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProcfileError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ProcfileError(f"cannot read {what} {path}: {error}") from None


def load_procfile(path: Path) -> dict[str, str]:
    """Process name -> command line, in file order."""
    text = _read(path, "Procfile")
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(line.encode()) > MAX_ARG - len("exec "):
            raise ProcfileError(
                f"{path}:{number}: the line is {len(line.encode())} bytes; a command may be at "
                f"most {MAX_ARG - len('exec ')} (Linux MAX_ARG_STRLEN): put it in a script"
            )
        if not PROCFILE_LINE.match(line):
            raise ProcfileError(
                f"{path}:{number}: expected 'name: command', got {_cut(stripped)!r}"
            )
        count += 1
    if count > MAX_PROCESSES:
        raise ProcfileError(f"{path}: {count} processes; at most {MAX_PROCESSES}")
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


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def load_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (shell quoting allowed), as honcho and foreman read them.

    honcho skips lines it cannot read; here each one is an error naming its line, since a
    skipped `SECRET_KEY value` would start the app without it. Values are never shown."""
    text = _read(path, "env file")
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(line.encode()) > MAX_ARG:
            raise ProcfileError(
                f"{path}:{number}: the line is {len(line.encode())} bytes; a variable may be at "
                f"most {MAX_ARG} (Linux MAX_ARG_STRLEN)"
            )
        match = ENV_LINE.match(line)
        if not match:  # the line itself is never shown: it may be a pasted secret
            why = "a name before '=' (letters, digits, _)" if "=" in line else "no '='"
            raise ProcfileError(f"{path}:{number}: expected KEY=value, this line has {why}")
        name = match.group(0).rstrip("= \t").split()[-1]
        value = line[match.end():].strip()
        if not value or not any(c in PLAIN_BREAKERS or c.isspace() for c in value):
            values[name] = value  # what honcho's shlex gives (it drops `KEY=`), without its cost
            continue
        try:
            values.update(parse(line[match.end(1):] if match.group(1) else line))
        except ValueError as error:  # shlex: unbalanced quotes
            raise ProcfileError(f"{path}:{number}: {error}") from None
    return values
