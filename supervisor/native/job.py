"""Job: one row to insert into the queue table, already validated and JSON-encoded."""

from __future__ import annotations

import json
import os
from typing import Any


class Job:
    """One row to insert: the JSON is already encoded, timing is left to the database clock.
    `fresh`: task_id was generated for this call (no row can hold it yet), so the enqueue needs
    no upsert; a caller's own id may name a finished row to queue again."""

    __slots__ = ("task_id", "name", "queue", "priority", "args", "kwargs", "options", "eta",
                 "countdown", "expires_at", "expires_in", "ignore_result", "retries", "fresh")

    def __init__(self, **fields: Any) -> None:
        for slot in self.__slots__:
            setattr(self, slot, fields.get(slot))


# The rows of an enqueue as one JSON parameter (see rows_param): `FROM (JSON_ROWS) AS r`.
# One json.dumps in C instead of thirteen arrays dumped value by value: batched enqueue and
# the finish of a batch are dominated by that client-side work otherwise.
JSON_ROWS = """
SELECT e->>0 AS task_id, e->>1 AS name, e->>2 AS queue, (e->>3)::int AS priority,
       (e->>4)::jsonb AS args, (e->>5)::jsonb AS kwargs, (e->>6)::jsonb AS options,
       (e->>7)::timestamptz AS eta, (e->>8)::float8 AS countdown,
       (e->>9)::timestamptz AS expires_at, (e->>10)::float8 AS expires_in,
       (e->>11)::bool AS ignore_result, (e->>12)::int AS retries
FROM jsonb_array_elements(%s::jsonb) AS e
"""


def rows_param(jobs: list[Job]) -> list[str]:
    """The parameter list of a statement reading JSON_ROWS."""
    return [json.dumps([
        [j.task_id, j.name, j.queue, j.priority, j.args, j.kwargs, j.options,
         j.eta.isoformat() if j.eta is not None else None, j.countdown,
         j.expires_at.isoformat() if j.expires_at is not None else None, j.expires_in,
         j.ignore_result, j.retries] for j in jobs])]


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_ids(n: int) -> list[str]:
    """n random (version 4) UUIDs as text, as str(uuid.uuid4()) gives them, four times faster:
    one os.urandom call for all of them and no UUID objects."""
    h = os.urandom(16 * n).hex()
    v = _VARIANT
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{v[h[i + 16]]}{h[i + 17:i + 20]}"
            f"-{h[i + 20:i + 32]}" for i in range(0, 32 * n, 32)]


class JobBatch:
    """Calls of one task sharing everything but their ids and arguments (a plain group's
    members): `template` holds the shared fields once; `args` / `kwargs` are the members' JSON
    texts, or None when every member has none. Its ids are new (new_ids), never a caller's."""

    __slots__ = ("template", "task_ids", "args", "kwargs")

    def __init__(self, template: Job, task_ids: list[str], args: list[str] | None,
                 kwargs: list[str] | None) -> None:
        self.template, self.task_ids, self.args, self.kwargs = template, task_ids, args, kwargs

    def jobs(self) -> list[Job]:
        """The same calls as Job rows (for stores without a batch statement, and signals)."""
        t = self.template
        fields = {slot: getattr(t, slot) for slot in Job.__slots__}
        out = []
        for i, task_id in enumerate(self.task_ids):
            fields.update(task_id=task_id,
                          args=self.args[i] if self.args is not None else "[]",
                          kwargs=self.kwargs[i] if self.kwargs is not None else "{}")
            out.append(Job(**fields))
        return out
