"""What the workers running in this process have done: celery.worker.state's names.

    from supervisor.native import worker_state

    worker_state.successful_requests   # ids of tasks that succeeded here, newest 1,000
    worker_state.revoked_stamps.clear()  # forget every revoke_by_stamped_headers()

`successful_requests` is kept in memory, per process, as Celery keeps it: a worker adds a task
id once the task's result is written (so a reader that sees the id also finds the result).
`revoked_stamps` is not in memory: revoked stamps live in PostgreSQL
(start_all.revoked_stamps) so that every worker honours them, and this is a view on that
table through the current app.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

SUCCESSFUL_MAX = 1000  # Celery's bound for the same set


class LimitedSet:
    """A set that keeps its newest `maxlen` members (insertion order), thread-safe."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._items: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, item: str) -> None:
        self.update((item,))

    def update(self, items: Iterable[str]) -> None:
        """Add in order, under one lock (a worker adds each finished batch at once)."""
        with self._lock:
            for item in items:
                self._items[item] = None
                self._items.move_to_end(item)
            while len(self._items) > self.maxlen:
                self._items.popitem(last=False)

    def discard(self, item: str) -> None:
        with self._lock:
            self._items.pop(item, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._items))

    def __repr__(self) -> str:
        return f"<LimitedSet({len(self)}/{self.maxlen})>"


class RevokedStamps(Mapping):
    """start_all.revoked_stamps as Celery's dict {stamp name: [revoked values]}."""

    def __init__(self, app: Any = None) -> None:
        self._app = app

    def _store(self) -> Any:
        return (self._app or _current()).backend

    def _read(self) -> dict[str, list]:
        store = self._store()
        if type(store).__name__ == "SqliteStore":  # stamps are revoked on PostgreSQL only
            return {}
        found: dict[str, list] = {}
        for stamp, value in store.execute(
                "SELECT stamp, value::text FROM start_all.revoked_stamps ORDER BY stamp"):
            found.setdefault(stamp, []).append(json.loads(value))
        return found

    def __getitem__(self, name: str) -> list:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def clear(self) -> None:
        """Forget every revoked stamp, for every worker (it is one table)."""
        from supervisor.native import stamping

        stamping.clear_revoked_stamps(self._app or _current())

    def __repr__(self) -> str:
        return f"<revoked_stamps {self._read()!r}>"


def _current() -> Any:
    from supervisor.native.app import current_app

    return current_app()


successful_requests = LimitedSet(SUCCESSFUL_MAX)
revoked_stamps = RevokedStamps()
