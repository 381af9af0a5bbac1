"""Execution marks for the chaos suite: `S <id> <pid> <time>` at the start of a task and
`E ...` at its end, appended to $CHAOS_MARKS with one O_APPEND write each (lines never
interleave and survive a SIGKILL). Used by the native, django-q2 and Celery task modules."""

import os
import time

MARKS = os.environ.get("CHAOS_MARKS", "/dev/null")


def mark(kind: str, i: int) -> None:
    fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {i} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def record(i: int, seconds: float = 0.0) -> int:
    """A task body: marks its start and its end, sleeps in between."""
    mark("S", i)
    if seconds:
        time.sleep(seconds)
    mark("E", i)
    return i
