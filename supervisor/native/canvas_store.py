"""The PostgreSQL statements of canvas: workflow rows written in one transaction.

`FlowTx` is what flow.after_finish() writes through: the worker opens it in the transaction
of a finish (so follow-ups and chord counters commit with the finish, or not at all), the
producer opens it to send a whole workflow at once.
"""

from __future__ import annotations

import json
from typing import Any

from supervisor.native import store
from supervisor.native.job import Job, rows_param
from supervisor.native.serial import dumps

# Like store.ENQUEUE, but a row of the same workflow run (same root_id and parent_id, both
# decided by what planned the follow-up) is left alone: follow-up ids are fixed in advance,
# so a task that ran twice still starts its follow-ups once. A finished row of another run
# is queued again, as Celery re-runs a task sent again with the same id (e.g. a frozen
# signature used in two workflows).
OTHER_RUN = """
      AND (j.options->>'root_id', j.options->>'parent_id')
          IS DISTINCT FROM (excluded.options->>'root_id', excluded.options->>'parent_id')"""
_FINISHED_ONLY = "WHERE j.status IN ('SUCCESS', 'FAILURE', 'REVOKED')"
INSERT_NEW = store.ENQUEUE.replace(_FINISHED_ONLY, _FINISHED_ONLY + OTHER_RUN)
if INSERT_NEW.count(OTHER_RUN) != 1:  # store.ENQUEUE's conflict clause was rewritten
    raise ImportError("canvas_store: store.ENQUEUE no longer has its finished-rows condition")
INSERT_SENT = store.ENQUEUE  # a task the sender sent itself: a new run whatever its id

INSERT_CHORD = """
INSERT INTO start_all.chords (id, remaining, header_ids, body, after, outer_chord, root_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""

# A chord the sender sent itself: a fired counter of the same id (a frozen chord sent again)
# starts over, as Celery runs such a chord again, body included. One still counting is left.
INSERT_SENT_CHORD = INSERT_CHORD.replace("ON CONFLICT (id) DO NOTHING", """
ON CONFLICT (id) DO UPDATE
SET remaining = excluded.remaining, header_ids = excluded.header_ids, body = excluded.body,
    after = excluded.after, outer_chord = excluded.outer_chord, root_id = excluded.root_id,
    error = NULL, created_at = now(), fired_at = NULL
WHERE start_all.chords.fired_at IS NOT NULL""")
if INSERT_SENT_CHORD == INSERT_CHORD:  # INSERT_CHORD's conflict clause was rewritten
    raise ImportError("canvas_store: INSERT_CHORD no longer ends in DO NOTHING")

# Decrement; the update that reaches zero marks the chord fired and gets its row back.
# Row locks serialise concurrent finishers: the count is exact whatever the interleaving.
COUNT_CHORDS = """
UPDATE start_all.chords AS c
SET remaining = c.remaining - d.n, error = coalesce(c.error, d.error),
    fired_at = CASE WHEN c.remaining - d.n <= 0 THEN now() END
FROM unnest(%s::text[], %s::int[], %s::jsonb[]) AS d(id, n, error)
WHERE c.id = d.id AND c.fired_at IS NULL
RETURNING c.id, c.fired_at IS NOT NULL, c.header_ids, c.body, c.after, c.outer_chord,
          c.root_id, c.error
"""

# Task.add_to_chord(): one more header task to wait for; its result lands after the others.
# Only a chord still waiting can grow (its caller is a header task still running).
GROW_CHORD = """
UPDATE start_all.chords
SET remaining = remaining + jsonb_array_length(%s::jsonb), header_ids = header_ids || %s::jsonb
WHERE id = %s AND fired_at IS NULL
RETURNING id
"""

HEADER_RESULTS = """
SELECT j.status, j.result
FROM jsonb_array_elements_text(%s::jsonb) WITH ORDINALITY AS h(task_id, ord)
LEFT JOIN start_all.jobs AS j ON j.task_id = h.task_id
ORDER BY h.ord
"""

# Results of workflow steps that will never run (an earlier step failed) take the failure;
# a step that did run keeps its own result.
INSERT_FAILED = """
INSERT INTO start_all.jobs (task_id, name, status, result, finished_at)
SELECT t, n, 'FAILURE', %s::jsonb, now() FROM unnest(%s::text[], %s::text[]) AS f(t, n)
ON CONFLICT (task_id) DO NOTHING
"""

# A replaced task's row takes its replacement's final state.
MIRROR = """
UPDATE start_all.jobs
SET status = %s, result = %s::jsonb, traceback = %s, finished_at = now()
WHERE task_id = %s AND status = 'REPLACED'
"""


def _finish_returning_ids(finish: str) -> str:
    """store.FINISH, answering which rows it wrote (the fence decides) instead of counts."""
    tail = "SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM done)"
    head, found, _ = finish.rpartition(tail)
    assert found, "store.FINISH changed shape: update canvas_store._finish_returning_ids"
    return head + ("SELECT ARRAY(SELECT id FROM gone) || ARRAY(SELECT id FROM done), "
                   "(SELECT count(*) FROM wake)")


# Retention for workflow rows, with the failures' (longer) expiry: a fired chord's counter and
# a saved GroupResult are no use once their tasks' rows are gone.
PRUNE_FLOWS = """
WITH chords AS (
    DELETE FROM start_all.chords
    WHERE fired_at < now() - make_interval(secs => %(bad)s) RETURNING 1
), groups AS (
    DELETE FROM start_all.groups
    WHERE created_at < now() - make_interval(secs => %(bad)s) RETURNING 1
)
SELECT (SELECT count(*) FROM chords), (SELECT count(*) FROM groups)
"""

_finish_ids: dict[str, str] = {}


def job_params(jobs: list[Job]) -> list:
    return rows_param(jobs)


class ChordFired:
    __slots__ = ("id", "header_ids", "body", "after", "outer", "root_id", "error")

    def __init__(self, row: tuple) -> None:
        (self.id, _fired, self.header_ids, self.body, self.after, self.outer, self.root_id,
         self.error) = row


class FlowTx:
    """Writes of one workflow step; the caller holds the transaction."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def insert_jobs(self, jobs: list[Job], sent: bool = False) -> None:
        """Follow-ups (or, `sent`, the first jobs of a workflow being sent)."""
        if jobs:
            self.conn.execute(INSERT_SENT if sent else INSERT_NEW, job_params(jobs))

    def insert_chords(self, chords: list, sent: bool = False) -> None:
        """Chord counters (`sent`: of a workflow being sent, see INSERT_SENT_CHORD)."""
        for c in chords:
            self.conn.execute(INSERT_SENT_CHORD if sent else INSERT_CHORD, (
                c.id, c.remaining, json.dumps(c.header_ids), dumps(c.body),
                dumps(c.after or []), c.outer, c.root_id))

    def count_chords(self, counts: dict[str, list]) -> list[ChordFired]:
        ids = sorted(counts)  # one lock order for every worker: no deadlocks
        rows = self.conn.execute(COUNT_CHORDS, (
            ids, [counts[i][0] for i in ids],
            [dumps(counts[i][1]) if counts[i][1] is not None else None for i in ids],
        )).fetchall()
        return [ChordFired(row) for row in rows if row[1]]

    def header_results(self, task_ids: list[str]) -> list[tuple[str | None, Any]]:
        return [(status, result) for status, result in
                self.conn.execute(HEADER_RESULTS, (json.dumps(task_ids),)).fetchall()]

    def insert_failed(self, failed: list[tuple[str, str]], error: Any) -> None:
        self.conn.execute(INSERT_FAILED, (dumps(error), [t for t, _ in failed],
                                          [n for _, n in failed]))

    def mirror(self, task_id: str, status: str, result: Any, traceback: str | None) -> None:
        self.conn.execute(MIRROR, (status, dumps(result), traceback, task_id))


def finish_flow(conn: Any, finish: str, finish_params: list[list], hook: Any) -> int:
    """Record a batch of finishes (`finish` is store.FINISH) and run `hook(tx, written_ids)`
    in the same transaction."""
    statement = _finish_ids.get(finish)
    if statement is None:
        statement = _finish_ids[finish] = _finish_returning_ids(finish)
    with conn.transaction():
        row = conn.execute(statement, finish_params).fetchone()
        written = set(row[0] or ())
        hook(FlowTx(conn), written)
    return len(written)


def submit(conn: Any, jobs: list[Job], chords: list) -> None:
    """Send a planned workflow: its chord counters and first jobs, together."""
    with conn.transaction():
        tx = FlowTx(conn)
        tx.insert_chords(chords, sent=True)
        tx.insert_jobs(jobs, sent=True)


def grow_chord(conn: Any, chord_id: str, header_ids: list[str], jobs: list[Job],
               chords: list) -> None:
    """Task.add_to_chord(): raise the chord's counter and send its new header tasks, together.
    """
    ids = json.dumps(header_ids)
    with conn.transaction():
        if conn.execute(GROW_CHORD, (ids, ids, chord_id)).fetchone() is None:
            raise ValueError(f"chord {chord_id} is not waiting for its header any more "
                             "(add_to_chord is called from a task of the chord's header)")
        tx = FlowTx(conn)
        tx.insert_chords(chords)
        tx.insert_jobs(jobs, sent=True)


def in_transaction(conn: Any, hook: Any) -> Any:
    with conn.transaction():
        return hook(FlowTx(conn))


def save_group(conn: Any, group_id: str, results: dict) -> None:
    conn.execute("INSERT INTO start_all.groups (id, results) VALUES (%s, %s) "
                 "ON CONFLICT (id) DO UPDATE SET results = excluded.results",
                 (group_id, json.dumps(results)))


def restore_group(conn: Any, group_id: str) -> dict | None:
    row = conn.execute("SELECT results FROM start_all.groups WHERE id = %s",
                       (group_id,)).fetchone()
    return row[0] if row else None


def delete_group(conn: Any, group_id: str) -> None:
    conn.execute("DELETE FROM start_all.groups WHERE id = %s", (group_id,))
