"""What a DATABASE_URL points at, as far as start-all cares (no connection made)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

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
        """host:port only: never print credentials."""
        return f"{self.scheme}://{self.host}:{self.port or 5432}"


def parse(url: str) -> DatabaseUrl:
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    return DatabaseUrl(url, parts.scheme, parts.hostname or "", port)
