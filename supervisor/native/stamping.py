"""Stamping: labels put on every task of a workflow before it is sent (Celery's stamping API).

    class Monitor(StampingVisitor):
        def on_signature(self, sig, **headers):
            return {"monitoring_id": "42"}

    workflow.stamp(Monitor())        # or workflow.stamp(monitoring_id="42")

A stamp lives in the signature's options as Celery keeps it (the stamp's own key, plus its
name in `stamped_headers`), so links, chain steps and chord bodies, which travel as signature
dicts, carry their stamps with them. When a signature becomes a job, `take()` moves its stamps
into the job's options (`headers.stamps`, `headers.stamped_headers`), which are stored with the
row in PostgreSQL; the worker reads them back as `request.stamps` / `request.stamped_headers`.

`revoke_by_stamped_headers` stores the revoked values in start_all.revoked_stamps; a worker
checks a job against them only when the job has stamps, so plain tasks pay nothing.

This module imports nothing of the canvas: canvas.py calls `stamp()` with its own
`maybe_signature` to turn dict links back into signatures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

STAMPED = "stamped_headers"


class StampingVisitor:
    """Decides the stamps of each part of a workflow. Each hook returns the stamps to add
    (a dict, possibly with `stamped_headers` naming which of its keys are stamps)."""

    def on_signature(self, sig: Any, **headers: Any) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define on_signature()")

    def on_group_start(self, group: Any, **headers: Any) -> dict:
        return {}

    def on_group_end(self, group: Any, **headers: Any) -> None:
        pass

    def on_chain_start(self, chain: Any, **headers: Any) -> dict:
        return {}

    def on_chain_end(self, chain: Any, **headers: Any) -> None:
        pass

    def on_chord_header_start(self, sig: Any, **headers: Any) -> dict:
        return self.on_group_start(sig.header, **headers)

    def on_chord_header_end(self, sig: Any, **headers: Any) -> None:
        self.on_group_end(sig.header, **headers)

    def on_chord_body(self, sig: Any, **headers: Any) -> dict:
        return {}

    def on_callback(self, callback: Any, **headers: Any) -> dict:
        return {}

    def on_errback(self, errback: Any, **headers: Any) -> dict:
        return {}


# --- merging ----------------------------------------------------------------------------------

def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _combine(old: Any, new: Any, append: bool) -> Any:
    """Two values of one stamp: the newer wins, or with append_stamps both are kept."""
    if not append or old == new:
        return new
    return [*_as_list(old), *(v for v in _as_list(new) if v not in _as_list(old))]


def _split(stamps: dict | None) -> dict:
    """A hook's or a caller's dict as {name: value}: `stamped_headers`, when given, names
    the keys that are stamps; otherwise every key is one."""
    if not stamps:
        return {}
    names = stamps.get(STAMPED)
    keys = [k for k in stamps if k != STAMPED] if names is None else list(names)
    return {k: stamps[k] for k in keys if k in stamps}


def own_stamps(options: dict) -> dict:
    """The stamps already set on a signature's options."""
    return {k: options[k] for k in options.get(STAMPED) or () if k in options}


def merged(incoming: dict, extra: dict | None, append: bool,
           existing: dict | None = None) -> dict:
    """incoming stamps, then the visitor's on top, then a signature's own under both."""
    out = dict(incoming)
    for key, value in _split(extra).items():
        out[key] = _combine(out[key], value, append) if key in out else value
    for key, value in (existing or {}).items():
        out[key] = _combine(value, out[key], append) if key in out else value
    return out


def as_headers(stamps: dict) -> dict:
    """Stamps in Celery's option form: each stamp's key, and their names in stamped_headers."""
    return {**stamps, STAMPED: list(stamps)}


# --- walking a workflow -----------------------------------------------------------------------

def stamp(sig: Any, visitor: StampingVisitor | None, append: bool, headers: dict,
          revive: Callable[[Any], Any]) -> None:
    """Stamp `sig` and everything inside it, in place."""
    incoming = _split(headers)
    kind = sig.get("subtask_type")
    if kind in ("chain", "group"):
        start = getattr(visitor, f"on_{kind}_start", None)
        stamps = merged(incoming, start(sig, **incoming) if start else None, append)
        _stamp_links(sig, visitor, append, stamps, revive)
        members = [revive(t) for t in sig.kwargs["tasks"]]
        for member in members:
            stamp(member, visitor, append, stamps, revive)
        sig.kwargs["tasks"][:] = members
        if visitor is not None:
            getattr(visitor, f"on_{kind}_end")(sig, **stamps)
    elif kind == "chord":
        hook = visitor.on_chord_header_start(sig, **incoming) if visitor else None
        stamps = merged(incoming, hook, append)
        _stamp_links(sig, visitor, append, stamps, revive)
        for member in sig.header.tasks:
            stamp(member, visitor, append, stamps, revive)
        if visitor is not None:
            visitor.on_chord_header_end(sig, **stamps)
        if sig.body is not None:
            hook = visitor.on_chord_body(sig, **stamps) if visitor else None
            stamp(sig.body, visitor, append, merged(stamps, hook, append), revive)
    else:  # one task (map, starmap and chunks jobs too)
        _stamp_links(sig, visitor, append, incoming, revive)
        hook = visitor.on_signature(sig, **incoming) if visitor else None
        stamps = merged(incoming, hook, append, own_stamps(sig["options"]))
        if stamps:
            sig["options"].update(as_headers(stamps))


def _stamp_links(sig: Any, visitor: StampingVisitor | None, append: bool, stamps: dict,
                 revive: Callable[[Any], Any]) -> None:
    """Callbacks and errbacks get the incoming stamps and their hook's, not the task's own."""
    for key, hook_name in (("link", "on_callback"), ("link_error", "on_errback")):
        links = sig["options"].get(key)
        if not links:
            continue
        links = [revive(link) for link in _as_list(links)]
        for link in links:
            hook = getattr(visitor, hook_name)(link, **stamps) if visitor else None
            stamp(link, visitor, append, merged(stamps, hook, append), revive)
        sig["options"][key] = links


def stamp_links(sig: Any, visitor: StampingVisitor | None, append: bool, headers: dict,
                revive: Callable[[Any], Any]) -> None:
    """Stamp only the callbacks and errbacks of `sig`."""
    _stamp_links(sig, visitor, append, _split(headers), revive)


# --- sending ----------------------------------------------------------------------------------

def take(options: dict) -> dict:
    """Pop a signature's stamps out of apply_async options: {name: value}, in order."""
    names = options.pop(STAMPED, None) or ()
    return {name: options.pop(name, None) for name in _as_list(names)}


def job_headers(headers: dict | None, stamps: dict) -> dict:
    """The job's stored headers with its stamps, as the worker reads them back."""
    return {**(headers or {}), "stamps": stamps, STAMPED: list(stamps)}


def stamps_of(options: dict | None) -> dict | None:
    """A job's stamps from its stored options (None for the usual unstamped job)."""
    headers = options.get("headers") if options else None
    return headers.get("stamps") if headers else None


# --- revoking by stamp ------------------------------------------------------------------------

REVOKED_MATCH = """
SELECT 1 FROM start_all.revoked_stamps r
WHERE r.stamp = ANY(%(names)s)
  AND (%(stamps)s::jsonb -> r.stamp = r.value
       OR (jsonb_typeof(%(stamps)s::jsonb -> r.stamp) = 'array'
           AND %(stamps)s::jsonb -> r.stamp @> jsonb_build_array(r.value)))
LIMIT 1
"""

WAITING_MATCH = """
SELECT j.task_id FROM start_all.jobs j, start_all.revoked_stamps r
WHERE j.status IN ('PENDING', 'RETRY', 'STARTED') AND r.stamp = ANY(%(names)s)
  AND j.options -> 'headers' -> 'stamps' ? r.stamp
  AND (j.options -> 'headers' -> 'stamps' -> r.stamp = r.value
       OR j.options -> 'headers' -> 'stamps' -> r.stamp @> jsonb_build_array(r.value))
"""


def _is_sqlite(store: Any) -> bool:
    return type(store).__name__ == "SqliteStore"


def revoke_by_stamped_headers(app: Any, headers: dict, terminate: bool = False) -> list[str]:
    """Revoke every task stamped with one of these values, sent already or sent later;
    returns the ids of the waiting or running ones revoked now."""
    store = app.backend
    if _is_sqlite(store):
        raise NotImplementedError("revoke_by_stamped_headers needs PostgreSQL (not SQLite)")
    rows = [(name, json.dumps(value)) for name, values in headers.items()
            for value in _as_list(values)]
    if not rows:
        return []
    store.execute("INSERT INTO start_all.revoked_stamps (stamp, value) "
                  "SELECT s, v::jsonb FROM unnest(%s::text[], %s::text[]) AS t(s, v) "
                  "ON CONFLICT DO NOTHING",
                  ([r[0] for r in rows], [r[1] for r in rows]))
    ids = [row[0] for row in store.execute(WAITING_MATCH, {"names": list(headers)})]
    if ids:
        store.revoke(ids, terminate=terminate)
    return ids


def is_revoked(app: Any, stamps: dict) -> bool:
    """Whether a job with these stamps matches a revoked stamp (one query, stamped jobs only)."""
    store = app.backend
    if _is_sqlite(store) or not stamps:
        return False
    rows = store.execute(REVOKED_MATCH, {"names": list(stamps), "stamps": json.dumps(stamps)})
    return bool(rows)


def clear_revoked_stamps(app: Any) -> None:
    """Forget every revoked stamp (Celery's worker_state.revoked_stamps.clear())."""
    if not _is_sqlite(app.backend):
        app.backend.execute("DELETE FROM start_all.revoked_stamps")
