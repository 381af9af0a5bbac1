"""Passwords out of every line start-all writes: `scheme://user:***@host/db`.

Used by PID 1 (its own lines and its children's output), the native worker's logging, migrate,
check and the probes. No imports: PID 1 loads it, and `re` alone would cost it 0.4 MB.

A password can reach a line in three shapes, all handled:
- inside a URL: everything between the user and the host's `@` becomes `***`. The host's `@`
  is the last one of the authority, so a password with an unescaped `@` is masked whole;
- as a value: `password=...` in a libpq connection string;
- in pieces: libpq splits a URL at its *first* `@`, so with `p@ss@host` its error messages
  name the "host" `ss@host`. `redact(text, secrets)` removes the known passwords and those
  tails of them wherever they appear.
"""

from __future__ import annotations

MASK = "***"
_ENDS = " \t\r\n\"'<>`,;()[]{}"  # a URL in running text ends at one of these (or the end)


def url(value: str) -> str:
    """One URL, its password (and any `password=` value) masked. Never raises."""
    value = _mask_urls(value, ends=" \t\r\n")
    return _mask_values(value) if "password=" in value.lower() else value


def password_of(value: str) -> str:
    """The password of a URL as written (between the first ':' of the user info and the
    authority's last '@'), or ''."""
    _, sep, rest = value.partition("://")
    if not sep:
        return ""
    authority = _authority(rest, " \t\r\n")
    at = authority.rfind("@")
    if at < 0:
        return ""
    user_info = authority[:at]
    return user_info.partition(":")[2]


def redact(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """`text` with every URL password, `password=` value and known secret masked."""
    if "://" in text and "@" in text:
        text = _mask_urls(text, _ENDS)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = _mask_token(text, secret)
        for tail in _tails(secret):  # what libpq shows of it (see the module docstring)
            text = _mask_token(text, tail + "@", keep="@")
    if "password=" in text.lower():
        text = _mask_values(text)
    return text


def _mask_token(text: str, secret: str, keep: str = "") -> str:
    """Every occurrence of `secret` that is not part of a longer word masked: a password
    "postgres" must not turn `postgresql://` into `***ql://`."""
    out, start = [], 0
    while (found := text.find(secret, start)) >= 0:
        end = found + len(secret)
        before = text[found - 1] if found else ""
        after = text[end] if end < len(text) else ""
        inside_word = (before.isalnum() and secret[0].isalnum()) or (
            not keep and after.isalnum() and secret[-1].isalnum()
        )
        out.append(text[start:found])
        out.append(secret if inside_word else MASK + keep)
        start = end
    out.append(text[start:])
    return "".join(out)


class LineRedactor:
    """For raw output lines (PID 1's log multiplexer): cheap byte tests first, and a line is
    decoded (losslessly) only when it may hold a password."""

    def __init__(self, secrets: tuple[str, ...] | list[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]
        needles = set()
        for secret in self.secrets:
            needles.add(secret.encode("utf-8", "surrogateescape"))
            needles.update((t + "@").encode("utf-8", "surrogateescape") for t in _tails(secret))
        self.needles = tuple(needles)

    def __call__(self, line: bytes) -> bytes:
        # the common line: a few substring tests in C, no decoding, no allocation
        if not ((b"@" in line and b"://" in line) or b"assword=" in line):
            for needle in self.needles:
                if needle in line:
                    break
            else:
                return line
        text = line.decode("utf-8", "surrogateescape")
        masked = redact(text, self.secrets)
        return line if masked == text else masked.encode("utf-8", "surrogateescape")


def install_for_logging(secrets: tuple[str, ...] | list[str] = ()) -> None:
    """Mask passwords in every record (message and traceback) of the root logger's handlers
    and in uncaught tracebacks. For Python programs start-all ships (not for PID 1)."""
    import logging
    import sys

    class Redacting(logging.Formatter):
        def __init__(self, inner: logging.Formatter | None) -> None:
            super().__init__()
            self.inner = inner or logging.Formatter()

        def format(self, record: logging.LogRecord) -> str:
            return redact(self.inner.format(record), secrets)

    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, Redacting):
            handler.setFormatter(Redacting(handler.formatter))

    def redacting_excepthook(kind, value, tb) -> None:
        import traceback

        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(redact(text, secrets))
        sys.stderr.flush()

    sys.excepthook = redacting_excepthook


def secrets_from(environ: dict) -> list[str]:
    """Passwords of the URLs in the environment (DATABASE_URL, broker URLs ...)."""
    found = []
    for value in environ.values():
        if "://" in value and "@" in value:
            password = password_of(value)
            if password and password != MASK:
                found.append(password)
                if "%" in password:
                    found.append(_unquote(password))
    return found


# ----- helpers --------------------------------------------------------------------------------


def _authority(rest: str, ends: str) -> str:
    """The authority part after '://': up to the path's '/' that follows the last '@'."""
    end = len(rest)
    for index, char in enumerate(rest):
        if char in ends:
            end = index
            break
    token = rest[:end]
    at = token.rfind("@")
    slash = token.find("/", at + 1)
    query = token.find("?", at + 1)
    stops = [i for i in (slash, query) if i >= 0]
    return token[:min(stops)] if stops else token


def _mask_urls(text: str, ends: str) -> str:
    out = []
    position = 0
    while True:
        found = text.find("://", position)
        if found < 0:
            out.append(text[position:])
            return "".join(out)
        start = found + 3
        authority = _authority(text[start:], ends)
        at = authority.rfind("@")
        user_info = authority[:at] if at >= 0 else ""
        if ":" in user_info:
            user = user_info.partition(":")[0]
            out.append(text[position:start] + user + ":" + MASK)
            position = start + at
        else:
            out.append(text[position:start])
            position = start


def _mask_values(text: str) -> str:
    lower = text.lower()
    out = []
    position = 0
    while True:
        found = lower.find("password=", position)
        if found < 0:
            out.append(text[position:])
            return "".join(out)
        start = found + len("password=")
        end = start
        quoted = end < len(text) and text[end] in "'\""
        if quoted:
            close = text.find(text[end], end + 1)
            end = len(text) if close < 0 else close + 1
        else:
            while end < len(text) and text[end] not in " \t\r\n&;\"'":
                end += 1
        out.append(text[position:start] + MASK)
        position = end


def _tails(secret: str) -> list[str]:
    tails = []
    index = secret.find("@")
    while index >= 0:
        tail = secret[index + 1:]
        if len(tail) >= 1:
            tails.append(tail)
        index = secret.find("@", index + 1)
    return tails


def _unquote(value: str) -> str:
    """%XX decoding without urllib (PID 1 must not import it)."""
    out = bytearray()
    index = 0
    raw = value.encode("utf-8", "surrogateescape")
    while index < len(raw):
        if raw[index] == 0x25 and _hex(raw[index + 1:index + 3]):
            out.append(int(raw[index + 1:index + 3], 16))
            index += 3
        else:
            out.append(raw[index])
            index += 1
    return out.decode("utf-8", "replace")


def _hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)
