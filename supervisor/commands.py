"""How a Procfile command line is executed.

Procfile commands are shell lines (`$PORT` must expand), so they run under `/bin/sh -c`. But
Debian's sh (dash) does not replace itself with the last command, and a signal meant for
gunicorn or qcluster would then reach the shell instead. So the last simple command of a line
gets an `exec`: `cd app && python manage.py qcluster` runs as
`cd app && exec python manage.py qcluster`, and the pid we signal is qcluster's own.
Lines with pipes, background jobs, subshells, redirections or substitutions run as written.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

SHELL = "/bin/sh"
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
OPERATOR_CHARS = "();<>|&`"
SEQUENCE_OPERATORS = {"&&", ";", "||"}
# run by the shell itself: no program to find on PATH (`release: exit 3` is a valid line)
SHELL_BUILTINS = {
    "cd", "export", "set", "unset", "true", "false", ":", ".", "source", "umask", "ulimit",
    "exit", "echo", "printf", "test", "[", "eval", "wait", "trap", "shift", "read", "command",
}


class CommandError(ValueError):
    """The command line cannot be parsed as a shell line."""


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]  # what is spawned: /bin/sh -c "<line, maybe with exec>"
    program: tuple[str, ...]  # words of the command that finally runs (no VAR=value prefix)
    execs: bool  # True when the spawned pid becomes that program itself


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    operator: bool


def _spans(line: str) -> Iterator[_Span]:
    """Top-level words and operators of a shell line, with their exact offsets."""
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        j = i
        if line[i] in OPERATOR_CHARS:
            while j < n and line[j] in OPERATOR_CHARS:
                j += 1
            yield _Span(i, j, True)
            i = j
            continue
        quote = None
        while j < n:
            c = line[j]
            if quote == "'":
                quote = None if c == "'" else quote
            elif c == "\\":
                j += 1  # the escaped character belongs to the word
            elif quote == '"':
                quote = None if c == '"' else quote
            elif c in "'\"":
                quote = c
            elif c.isspace() or c in OPERATOR_CHARS:
                break
            j += 1
        if quote:
            raise CommandError(f"unbalanced {quote} quote")
        yield _Span(i, j, False)
        i = j


def _word(text: str) -> str:
    return "".join(shlex.split(text)) if text.strip("'\"") else ""


def _skip_assignments(line: str, spans: list[_Span]) -> list[_Span]:
    index = 0
    while index < len(spans) and ASSIGNMENT.match(line[spans[index].start : spans[index].end]):
        index += 1
    return spans[index:]


def parse(line: str) -> Command:
    """Decide how to run `line` and which program it finally runs."""
    spans = list(_spans(line))
    if not spans:
        raise CommandError("empty command")
    last = 0
    for index, span in enumerate(spans):
        if span.operator:
            if line[span.start : span.end] not in SEQUENCE_OPERATORS:
                # pipes, background jobs, redirections, subshells: run the line as written
                words = [_word(line[s.start : s.end]) for s in spans if not s.operator]
                return Command((SHELL, "-c", line), tuple(words), execs=False)
            last = index + 1
    command_spans = _skip_assignments(line, spans[last:])
    program = tuple(_word(line[s.start : s.end]) for s in command_spans)
    if not program:
        return Command((SHELL, "-c", line), (), execs=False)
    if program[0] == "exec":
        return Command((SHELL, "-c", line), program[1:], execs=True)
    if program[0] in SHELL_BUILTINS:
        return Command((SHELL, "-c", line), program, execs=False)
    # `FOO=1 exec cmd` keeps the assignment for cmd (`exec FOO=1 cmd` would not run).
    cut = command_spans[0].start
    return Command((SHELL, "-c", f"{line[:cut]}exec {line[cut:]}"), program, execs=True)
