"""Job: one row to insert into the queue table, already validated and JSON-encoded."""

from __future__ import annotations

from typing import Any


class Job:
    """One row to insert: the JSON is already encoded, timing is left to the database clock."""

    __slots__ = ("task_id", "name", "queue", "priority", "args", "kwargs", "options", "eta",
                 "countdown", "expires_at", "expires_in", "ignore_result", "retries")

    def __init__(self, **fields: Any) -> None:
        for slot in self.__slots__:
            setattr(self, slot, fields.get(slot))
