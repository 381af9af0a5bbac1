"""Job: one row to insert into the queue table, already validated and JSON-encoded."""

from __future__ import annotations

import json
from typing import Any


class Job:
    """One row to insert: the JSON is already encoded, timing is left to the database clock."""

    __slots__ = ("task_id", "name", "queue", "priority", "args", "kwargs", "options", "eta",
                 "countdown", "expires_at", "expires_in", "ignore_result", "retries")

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
