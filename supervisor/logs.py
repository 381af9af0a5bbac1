"""Line multiplexer: children's output and the supervisor's own lines, one line at a time.

Works on bytes so that non-UTF-8 output passes through untouched (text format) or escaped
reversibly (JSON format). A line longer than MAX_LINE is cut into pieces rather than held
forever; a partial last line is flushed when its process's pipe closes.
Stdlib only: this runs inside PID 1.
"""

from __future__ import annotations

import os
import time

from supervisor.redact import LineRedactor, secrets_from

MAX_LINE = 64 * 1024
SUPERVISOR = "start-all"
COLORS = (36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96)


class LogMux:
    def __init__(
        self,
        names: list[str],
        fd: int = 1,
        prefix: bool = True,
        fmt: str = "text",
        color: str = "auto",
    ) -> None:
        self.fd = fd
        self.prefix = prefix
        self.json = fmt == "json"
        self.width = max(len(n) for n in [SUPERVISOR, *names])
        use_color = color == "always" or (color == "auto" and os.isatty(fd))
        self.colors = {}
        if use_color:
            for index, name in enumerate([SUPERVISOR, *names]):
                self.colors[name] = COLORS[index % len(COLORS)]
        self.labels: dict[str, bytes] = {}  # "web.1  | " per name, made once
        self.partial: dict[str, bytearray] = {}
        self.pending: list[bytes] = []
        # no password of any URL in the environment (or in a line) leaves PID 1
        self.redact = LineRedactor(secrets_from(dict(os.environ)))

    def _format(self, name: str, line: bytes) -> bytes:
        line = self.redact(line)
        if self.json:
            import json  # only in JSON mode: PID 1 does not pay for it otherwise

            record = {
                "ts": round(time.time(), 3),
                "process": name,
                "line": line.decode("utf-8", "surrogateescape"),
            }
            return json.dumps(record).encode() + b"\n"
        if not self.prefix:
            return line + b"\n"
        return self._label(name) + line + b"\n"

    def _label(self, name: str) -> bytes:
        label = self.labels.get(name)
        if label is None:
            label = name.ljust(self.width).encode()
            colour = self.colors.get(name)
            if colour:
                label = b"\x1b[%dm%s |\x1b[0m " % (colour, label)
            else:
                label += b" | "
            self.labels[name] = label
        return label

    def feed(self, name: str, data: bytes) -> None:
        """Queue a child's output; complete lines are formatted, the rest kept for later."""
        buffer = self.partial.setdefault(name, bytearray())
        buffer += data
        if b"\n" not in data and len(buffer) < MAX_LINE:
            return
        *lines, rest = bytes(buffer).split(b"\n")
        for line in lines:
            while len(line) > MAX_LINE:
                self.pending.append(self._format(name, line[:MAX_LINE]))
                line = line[MAX_LINE:]
            self.pending.append(self._format(name, line))
        while len(rest) >= MAX_LINE:
            self.pending.append(self._format(name, rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        self.partial[name] = bytearray(rest)

    def close(self, name: str) -> None:
        """The process's pipe closed: flush its partial last line."""
        rest = self.partial.pop(name, None)
        if rest:
            self.pending.append(self._format(name, bytes(rest)))

    def say(self, message: str) -> None:
        """A line from the supervisor itself."""
        self.pending.append(self._format(SUPERVISOR, message.encode("utf-8", "replace")))

    def flush(self) -> None:
        """Write everything queued, in one write when possible."""
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending.clear()
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except InterruptedError:
                continue
            except BlockingIOError:
                # our stdout is non-blocking and full: wait for it rather than drop lines
                import select

                select.select([], [self.fd], [], 1.0)
                continue
            except BrokenPipeError:
                return  # nobody reads our output any more; keep supervising
            view = view[written:]
