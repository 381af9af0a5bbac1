"""What a DATABASE_URL points at, as far as start-all cares (no connection made)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from supervisor.redact import password_of, redact, secrets_from
from supervisor.redact import url as redact_url

__all__ = ["BadUrl", "DatabaseUrl", "libpq_url", "parse", "password_of", "redact",
           "redact_url", "secrets_from", "validate"]

TRANSACTION_POOLER_PORT = 6543  # Supabase (Supavisor) transaction mode


@dataclass(frozen=True)
class DatabaseUrl:
    url: str
    scheme: str
    host: str
    port: int | None

    @property
    def postgres(self) -> bool:
        return self.scheme in ("postgres", "postgresql")

    @property
    def transaction_pooler(self) -> bool:
        """Transaction mode: no LISTEN/NOTIFY, no session advisory locks, no prepared statements."""
        return self.postgres and self.port == TRANSACTION_POOLER_PORT

    @property
    def redacted(self) -> str:
        """The URL with its password masked: scheme://user:***@host:port/db."""
        return redact_url(self.url.strip())


class BadUrl(ValueError):
    """A URL that cannot be parsed; its message is one line with the password masked."""


def validate(url: str, name: str = "DATABASE_URL") -> str | None:
    """None when `url` parses; else one line naming the culprit, password masked."""
    text = url.strip()
    if not text:
        return None
    why = ""
    if "://" in text:
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError as error:
            why = {"Invalid IPv6 URL": "unbalanced '[' in the host"}.get(str(error), "")
            why = why or ("bad port" if "port" in str(error).lower() else "unparsable")
    if not why:
        return None
    return f"{name} is not a valid URL ({why}): {redact_url(text)}"


def parse(url: str) -> DatabaseUrl:
    """Raises BadUrl (a clean, masked message) when the URL cannot be parsed."""
    problem = validate(url)
    if problem:
        raise BadUrl(problem)
    parts = urlsplit(url.strip())
    return DatabaseUrl(url, parts.scheme, parts.hostname or "", parts.port)


def libpq_url(url: str) -> str:
    """The URL as libpq must see it to mean what it means to urllib (and dj-database-url):
    libpq splits the authority at its first '@', urllib at its last, so `user:p@ss@host` would
    make libpq connect to the host `ss@host`. Such user info is percent-encoded here."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in ("/", "?"):
        at = rest.rfind("@")
        index = rest.find(stop, at + 1)
        if index >= 0:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    if authority.count("@") <= 1:
        return url
    from urllib.parse import quote, unquote

    user_info, _, host = authority.rpartition("@")
    user, colon, password = user_info.partition(":")
    user = quote(unquote(user), safe="")
    password = quote(unquote(password), safe="") if colon else ""
    return f"{scheme}://{user}{colon}{password}@{host}{tail}"
