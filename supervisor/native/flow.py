"""Workflows in motion: planning a canvas into rows, and the worker's completion hook.

`send()` plans a workflow where it is sent: every task gets its id up front, and what has to
happen after a task (the rest of its chain, its links, the chord it counts towards) travels in
that task's row, in `options`; the first rows and the chord counters are inserted in one
transaction. When a task finishes, the worker calls `after_finish()` inside the transaction
that records the finish, so a crash can never record one without the other. Follow-up ids are
fixed in advance and inserted only if absent, so a task that runs twice (its worker died
before the finish was written) still starts its follow-ups once.

A chord is a row in start_all.chords: how many header tasks are still to finish, and the body
to start. Each header task decrements it in its finish transaction; the one that reaches zero
starts the body there and then. Plain tasks carry none of these options and never get here.
"""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from supervisor.native.canvas import (
    FLOW_KEYS,
    Signature,
    chain,
    chord,
    chunks,
    collect_signature,
    group,
    is_flow,
    link_header_errback,
    maybe_signature,
)
from supervisor.native.exceptions import ChordError, Ignore, ImproperlyConfigured
from supervisor.native.job import Job, JobBatch, new_ids
from supervisor.native.result import AsyncResult, GroupResult
from supervisor.native.serial import (
    dumps_call,
    exception_from_dict,
    exception_to_dict,
    loads,
)

log = logging.getLogger("supervisor.native")


# --- planning ---------------------------------------------------------------------------------

class ChordRow:
    """A chord's counter row: created with the workflow, decremented by its header tasks."""

    __slots__ = ("id", "remaining", "header_ids", "body", "after", "outer", "root_id")

    def __init__(self, **fields: Any) -> None:
        for slot in self.__slots__:
            setattr(self, slot, fields.get(slot))


class Plan:
    """The rows one workflow step inserts: jobs and chord counters, written together."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.jobs: list[Job] = []
        self.chords: list[ChordRow] = []
        self.failed: list[tuple[str, str]] = []  # (task id, name) that fail with `failure`
        self.failure: Any = None

    def add(self, sig: Signature, args: Iterable = (), after: list | None = None,
            chord_id: str | None = None, parent_id: str | None = None,
            root_id: str | None = None) -> None:
        """Plan `sig` called with `args` first, then the chain steps in `after`."""
        after = list(after or [])
        if isinstance(sig, chain):
            steps = _upgrade_groups([_unroll_single(step) for step in sig.tasks]) or []
            if not steps:
                return
            tail_opts = {k: sig.options[k] for k in ("link",) if sig.options.get(k)}
            if tail_opts:  # chain.link(...) runs after its last task
                steps[-1] = steps[-1].clone(**tail_opts)
            errbacks = sig.options.get("link_error")
            if errbacks:  # chain.link_error(...) covers every task in it
                steps = [_chain_errbacks(s, _callbacks(errbacks)) for s in steps]
            steps[0] = _pass_timing(sig, steps[0])  # chain.apply_async(countdown=...)
            self.add(steps[0], args, [*steps[1:], *after], chord_id, parent_id, root_id)
        elif isinstance(sig, group):
            if after:  # group followed by more steps: a chord, as Celery upgrades it
                self.add(chord(sig, after[0]), args, after[1:], chord_id, parent_id, root_id)
            elif chord_id is not None:  # a group counted as one result: collect it first
                self.add(chord(sig, sig.tail()), args, None, chord_id, parent_id, root_id)
            else:
                for member in _group_members(sig):
                    member = _pass_timing(sig, member)
                    member.options.setdefault("group_id", sig.id)
                    self.add(member, args, None, None, parent_id, root_id)
        elif isinstance(sig, chord):
            self._chord(sig, args, after, chord_id, parent_id, root_id)
        elif isinstance(sig, chunks):
            self.add(sig.group(), args, after, chord_id, parent_id, root_id)
        else:
            self._task(sig, args, after, chord_id, parent_id, root_id)

    def _chord(self, sig: chord, args: Iterable, after: list, chord_id: str | None,
               parent_id: str | None, root_id: str | None) -> None:
        members = []
        for member in _group_members(sig.header):  # a group inside counts as one result
            member = _pass_timing(sig.header, _pass_timing(sig, member))
            members.append(chord(member, member.tail()) if isinstance(member, group)
                           else member)
        sig.header.kwargs["tasks"] = members
        body = _chord_body(sig)
        sig.header.options.setdefault("task_id", str(uuid.uuid4()))
        for member in members:
            member._freeze_all()
        body._freeze_all()
        if not members:  # nothing to wait for: the body runs now with []
            self.add(body, ([],), after, chord_id, parent_id, root_id)
            return
        self.chords.append(ChordRow(
            id=sig.header.id, remaining=len(members),
            header_ids=[m.tail().id for m in members], body=dict(body),
            after=[dict(s) for s in after], outer=chord_id, root_id=root_id,
        ))
        for member in members:
            member.options.setdefault("group_id", sig.header.id)
            self.add(member, args, None, sig.header.id, parent_id, root_id)

    def _task(self, sig: Signature, args: Iterable, after: list, chord_id: str | None,
              parent_id: str | None, root_id: str | None) -> None:
        options = dict(sig.options)
        call_args = list(sig.args) if sig.immutable else [*args, *sig.args]
        task_id = options.pop("task_id", None) or str(uuid.uuid4())
        flow: dict[str, Any] = {"root_id": root_id or task_id}
        if parent_id:
            flow["parent_id"] = parent_id
        if after:
            flow["chain"] = [dict(s) for s in after]
        if chord_id:
            flow["chord"] = chord_id
        for key in ("link", "link_error"):
            callbacks = options.pop(key, None)
            if isinstance(callbacks, dict):  # one signature set as the option itself
                callbacks = [callbacks]
            if callbacks:
                flow[key] = [dict(maybe_signature(c, self.app)) for c in callbacks]
        for key in ("group_id", "group_index", "replaces", "replaced_task_nesting"):
            if options.get(key) is not None:
                flow[key] = options.pop(key)
        job = sig.type.build_job(call_args, sig.kwargs, task_id=task_id, flow=flow, **options)
        self.jobs.append(job)


def _chord_body(sig: chord) -> Signature:
    """The body to start, with the callbacks given to the chord itself."""
    body = sig.body
    if body is None:
        raise ValueError("chord has no body: chord(header)(body) or chord(header, body)")
    errbacks = _callbacks(sig.options.get("link_error"))
    callbacks = _callbacks(sig.options.get("link"))
    if isinstance(body, group) and body.tasks and (errbacks or callbacks):
        # as Celery: a group body's tasks each get the errbacks (so each one calls them,
        # also when the header fails), and the callback goes on the first task, once
        body = body.clone()
        for errback in errbacks:
            _link_error_to_body_tasks(body, maybe_signature(errback, sig.app))
        for callback in callbacks:
            body.link(callback)
        return body
    if errbacks:
        body = body.clone(link_error=[*_callbacks(body.options.get("link_error")), *errbacks])
    if callbacks:
        body = body.clone(link=[*_callbacks(body.options.get("link")), *callbacks])
    return body


def _link_error_to_body_tasks(sig: Signature, errback: Signature, as_group: bool = True
                              ) -> None:
    """A chord's errback on its group body, as Celery links it: to each task (a chord's
    body, not its header), or, when the group has a link_error option of its own (which
    replaces its tasks' when it runs), into that option."""
    if isinstance(sig, group):
        if as_group and sig.options.get("link_error") is not None:
            sig.options["link_error"] = [*_callbacks(sig.options["link_error"]),
                                         errback.clone()]
        else:
            for task in sig.tasks:
                _link_error_to_body_tasks(task, errback, as_group=False)
    elif isinstance(sig, chord):
        _link_error_to_body_tasks(sig.body, errback)
    else:
        sig.link_error(errback.clone())


def _group_members(sig: group) -> list[Signature]:
    """A group's tasks as it starts them: a link_error option set on the group replaces
    its tasks' own (Celery passes the group's options to each task it sends)."""
    errbacks = sig.options.get("link_error")
    if errbacks is None:
        return sig.tasks
    return [task.clone(link_error=_callbacks(errbacks)) for task in sig.tasks]


def _chain_errbacks(step: Signature, errbacks: list) -> Signature:
    """A chain step with the chain's errbacks: a chord step links them as chord.link_error()
    does (to its header's tasks too, when task_allow_error_cb_on_chord_header is on)."""
    step = step.clone(link_error=[*_callbacks(step.options.get("link_error")), *errbacks])
    if isinstance(step, chord):
        for errback in errbacks:
            link_header_errback(step, errback)
    return step


def _callbacks(value: Any) -> list:
    """A link/link_error option as a list: apply_async(link=sig) gives one signature."""
    if not value:
        return []
    return [value] if isinstance(value, dict) else list(value)


TIMING = ("countdown", "eta", "expires")


def _pass_timing(outer: Signature, inner: Signature) -> Signature:
    """countdown/eta/expires given to a workflow apply to the tasks that start it (a chain's
    first step, a group's or chord header's members), unless they set their own."""
    timing = {k: outer.options[k] for k in TIMING
              if outer.options.get(k) is not None and inner.options.get(k) is None}
    return inner.clone(**timing) if timing else inner


def _unroll_single(step: Signature) -> Signature:
    """In a chain, a group of one task is that task (as in Celery)."""
    if type(step) is group and len(step.tasks) == 1:
        return step.tasks[0]
    return step


def _upgrade_groups(steps: list[Signature]) -> list[Signature]:
    """In a chain, a group followed by another step becomes a chord (as in Celery)."""
    out: list[Signature] = []
    for step in steps:
        if out and isinstance(out[-1], group) and not isinstance(step, group):
            out[-1] = chord(out[-1], step)
        elif out and isinstance(out[-1], chord) and not isinstance(step, group):
            out.append(step)
        else:
            out.append(step)
    return out


def send(sig: Signature) -> Any:
    """Plan a workflow and insert all of it in one transaction; returns its result object."""
    app = sig.app
    if app.conf.task_always_eager:
        return sig.apply()
    if type(sig) is Signature:  # a single task: the plain path
        return sig.type.apply_async(sig.args, sig.kwargs, **_plain_options(sig))
    if type(sig) is group and _plain_members(sig):  # the batched enqueue: one INSERT
        return _send_plain_group(sig)
    if isinstance(sig, chord) and sig._lazy_header is not None:
        return _send_incremental_chord(sig, sig.take_lazy_header())
    sig = sig.clone()
    result = sig._freeze_all()
    plan = Plan(app)
    plan.add(sig)
    app.backend.submit(plan.jobs, plan.chords)
    if type(sig) is group and len(result.results) == 1 and isinstance(result.results[0],
                                                                      GroupResult):
        return result.results[0]  # as Celery: group(a | group(...)) gives the inner group's
    return result


def _send_incremental_chord(sig: chord, members: Iterable) -> Any:
    """A chord whose header is a generator: each header task is sent as it is yielded (as
    Celery does), so the first ones run while the generator makes the rest. The chord's
    counter starts at one, held by this sender; each task raises it as it is sent (with
    Task.add_to_chord's statement) and the hold is released at the end, which may fire
    the body here, if every header task finished already."""
    app = sig.app
    body = _chord_body(sig).clone()
    result = body._freeze_all()
    header_id = (sig.kwargs["header"].options.get("task_id") or sig.options.get("group_id")
                 or str(uuid.uuid4()))
    hold = ChordRow(id=header_id, remaining=1, header_ids=[], body=dict(body), after=[],
                    outer=None, root_id=None)
    app.backend.submit([], [hold])
    results = []
    for item in members:  # one at a time: the generator runs between the sends
        member = _pass_timing(sig, maybe_signature(item, app).clone())
        if isinstance(member, group):  # counted as one result
            member = chord(member, member.tail())
        results.append(member._freeze_all())
        member.options.setdefault("group_id", header_id)
        plan = Plan(app)
        plan.add(member, (), None, header_id, None, None)
        app.backend.add_to_chord(header_id, [member.tail().id], plan.jobs, plan.chords)
    app.backend.in_flow_transaction(
        lambda tx: after_finish(app, tx, _fire_chords(app, tx, {header_id: [1, None, None]})))
    first = result
    while getattr(first, "parent", None) is not None:
        first = first.parent
    first.parent = GroupResult(header_id, results, app=app)
    return result


def _plain_options(sig: Signature) -> dict:
    return dict(sig.options)


def _plain_members(sig: group) -> bool:
    """A group of single tasks with no callbacks anywhere: no workflow to plan."""
    if any(sig.options.get(key) for key in FLOW_KEYS):
        return False
    for t in sig.tasks:
        if type(t) is not Signature or (t.options and is_flow(t.options)):
            return False
    return True


def _send_batch(app: Any, group_id: str, shared: str, task: Any,
                members: list[Signature]) -> GroupResult:
    """Members calling `task` with no options of their own, as one JobBatch."""
    template = task.build_job(task_id="")  # validates as build_job does for each call
    template.options = shared
    ids = new_ids(len(members))
    args = kwargs = None
    if any(m["args"] or m["kwargs"] for m in members):
        pairs = [dumps_call(task.name, m["args"], m["kwargs"]) for m in members]
        args, kwargs = [a for a, _ in pairs], [k for _, k in pairs]
    app.backend.enqueue_batch(JobBatch(template, ids, args, kwargs))
    name = task.name
    return GroupResult(group_id, [AsyncResult(i, app=app, task_name=name) for i in ids],
                       app=app)


def _send_plain_group(sig: group) -> GroupResult:
    group_id = sig.id or str(uuid.uuid4())
    app = sig.app
    members = sig.tasks
    shared = json.dumps({"group_id": group_id})  # request.group_id in each member
    kind = members[0].type if members else None
    if members and all(not m["options"] and m.type is kind for m in members):
        # the usual case (`group(t.s(i) for i in ...)`): one task, no options per member, so
        # the row is built once and each member adds its id and arguments (JobBatch)
        return _send_batch(app, group_id, shared, kind, members)
    jobs, results = [], []
    for member in members:
        options = member["options"]
        if options:
            options = dict(options)
            task_id = options.pop("task_id", None) or str(uuid.uuid4())
        else:
            task_id = str(uuid.uuid4())
        if options:
            job = member.type.build_job(member.args, member.kwargs, task_id=task_id,
                                        flow={"group_id": group_id}, **options)
        else:  # the one options text shared by every member
            job = member.type.build_job(member.args, member.kwargs, task_id=task_id)
            job.options = shared

        jobs.append(job)
        results.append(AsyncResult(task_id, app=app, task_name=member.name))
    if jobs:
        app.backend.enqueue(jobs)
    return GroupResult(group_id, results, app=app)


def add_to_chord(app: Any, request: Any, sig: Any) -> Any:
    """Task.add_to_chord(): plan `sig` as one more header member of the running chord of
    `request` (a header task), and send it with the chord's counter raised, together."""
    chord_id = request.chord
    sig = maybe_signature(sig, app).clone()
    if type(sig) is Signature:  # a task joins the header group (a chord's group_id is its own)
        sig.options.setdefault("group_id", request.group_id or chord_id)
    result = sig._freeze_all()
    plan = Plan(app)
    plan.add(sig, (), None, chord_id, request.id, request.root_id or request.id)
    app.backend.add_to_chord(chord_id, [sig.tail().id], plan.jobs, plan.chords)
    return result


# --- the completion hook ----------------------------------------------------------------------

class Finished:
    """One finished job, as the completion hook sees it."""

    __slots__ = ("task_id", "name", "status", "result", "traceback", "options")

    def __init__(self, task_id: str, name: str, status: str, result: Any,
                 traceback: str | None, options: dict) -> None:
        self.task_id, self.name, self.status = task_id, name, status
        self.result, self.traceback, self.options = result, traceback, options

    @classmethod
    def of(cls, outcome: Any) -> Finished:
        """From a worker's Outcome (SUCCESS and REPLACED results are JSON text)."""
        job, status = outcome.job, outcome.status
        status = "SUCCESS" if status == "FORGET" else status
        result = outcome.result
        if status in ("SUCCESS", "REPLACED") and isinstance(result, (str, bytes)):
            result = loads(result)
        return cls(job.task_id, job.name, status, result, outcome.traceback, job.options or {})


def after_finish(app: Any, tx: Any, finished: list[Finished]) -> None:
    """Start what follows the finished jobs; runs inside the transaction of their finish.

    `tx` writes in that transaction: insert_jobs, insert_chords, count_chords, header_results,
    insert_failed, mirror.
    """
    events = finished
    while events:
        plan = Plan(app)
        # chord id -> [finished header tasks, first error, the last of them]
        counts: dict[str, list] = {}
        mirrors = []
        for event in events:
            try:
                _follow(app, event, plan, counts, mirrors)
            except Exception as error:  # a broken follow-up must not stop the worker
                log.exception("native: the follow-ups of %s[%s] could not be planned",
                              event.name, event.task_id)
                if event.status == "REPLACED":  # its result would never come: fail it
                    tx.mirror(event.task_id, "FAILURE", exception_to_dict(error), None)
        if plan.chords:
            tx.insert_chords(plan.chords)
        if plan.jobs:
            tx.insert_jobs(plan.jobs)
        if plan.failed:
            tx.insert_failed(plan.failed, plan.failure)
        for original, event in mirrors:
            tx.mirror(original, event.status, event.result, event.traceback)
        events = []
        if counts:
            events = _fire_chords(app, tx, counts)


def _follow(app: Any, event: Finished, plan: Plan, counts: dict, mirrors: list) -> None:
    flow = event.options or {}
    root_id = flow.get("root_id") or event.task_id
    if event.status == "REPLACED":
        _replace(app, event, plan, flow)
        return
    for original in flow.get("replaces") or ():
        mirrors.append((original, event))
    if event.status == "SUCCESS":
        value = event.result
        for callback in flow.get("link") or ():
            plan.add(maybe_signature(callback, app), (value,), None, None, event.task_id,
                     root_id)
        steps = [maybe_signature(s, app) for s in flow.get("chain") or ()]
        if steps:  # the chord marker moves along the chain to its last task
            plan.add(steps[0], (value,), steps[1:], flow.get("chord"), event.task_id, root_id)
            return
    elif event.status in ("FAILURE", "REVOKED"):
        for errback in flow.get("link_error") or ():
            sig = maybe_signature(errback, app)
            if not _new_style_errback(sig):  # new-style ones ran in the worker already
                plan.add(sig, (event.task_id,), None, None, event.task_id, root_id)
        # as Celery: the steps after it will not run; their results take this failure
        for step in flow.get("chain") or ():
            plan.failed.extend(_result_ids(maybe_signature(step, app)))
        if plan.failed:
            plan.failure = event.result
    else:
        return  # RETRY / REPLACED: nothing has finished yet
    chord_id = flow.get("chord")
    if chord_id:
        count = counts.setdefault(chord_id, [0, None, None])
        count[0] += 1
        count[2] = event.task_id  # the body's parent: the header task that completes it
        if event.status != "SUCCESS" and count[1] is None:
            count[1] = {"task_id": event.task_id, "exc": event.result}


def _fire_chords(app: Any, tx: Any, counts: dict) -> list[Finished]:
    """Decrement the counters; start the bodies of the chords that reached zero."""
    events: list[Finished] = []
    for row in tx.count_chords(counts):
        body = maybe_signature(row.body, app)
        after = [maybe_signature(s, app) for s in row.after or ()]
        results = tx.header_results(row.header_ids)
        failed = row.error or next(
            ({"task_id": tid, "exc": res} for tid, (status, res) in zip(
                row.header_ids, results, strict=True) if status != "SUCCESS"), None)
        if failed is None:
            plan = Plan(app)
            plan.add(body, ([res for _status, res in results],), after, row.outer,
                     counts[row.id][2], row.root_id)
            if plan.chords:
                tx.insert_chords(plan.chords)
            # the counter fires once per run (count_chords), so what it starts is new: a
            # body that ran in an earlier run of the chord (sent again) runs again
            tx.insert_jobs(plan.jobs, sent=True)
            continue
        # a header task failed: the body fails with ChordError, and its errbacks run
        cause = failed.get("exc")
        reason = exception_from_dict(cause) if isinstance(cause, dict) else cause
        error = ChordError(f"Dependency {failed['task_id']} raised {reason!r}")
        targets = _failed_body_results(app, body)
        never_ran = {(tid, name) for tid, name, _ebs in targets} | set(_result_ids(body))
        for sig in after:
            never_ran.update(_result_ids(sig))
        tx.insert_failed(sorted(never_ran), exception_to_dict(error))
        for i, (task_id, name, errbacks) in enumerate(targets):
            # the first one stands for the body in the chord around it, if any
            flow = {"root_id": row.root_id, "link_error": errbacks,
                    "chord": row.outer if i == 0 else None}
            events.append(Finished(task_id, name, "FAILURE", exception_to_dict(error), None,
                                   flow))
            for errback in errbacks:
                sig = maybe_signature(errback, app)
                if _new_style_errback(sig):
                    call_errback_here(sig, task_id, error, None)
    return events


def _failed_body_results(app: Any, body: Signature) -> list[tuple[str, str, list]]:
    """(result id, name, errbacks) of a chord body that will not run (a header task failed).
    As Celery: a group body fails each of its tasks' results, each calling its own
    errbacks and the group's, each once; any other body, its one result."""
    head, outer = body, []
    if isinstance(body, chain) and body.tasks:  # its first step, with the chain's errbacks
        head = _upgrade_groups([_unroll_single(step) for step in body.tasks])[0]
        outer = _callbacks(body.options.get("link_error"))
    if isinstance(head, group) and head.tasks:
        outer = [*_callbacks(head.options.get("link_error")), *outer]
        targets = [_result_errbacks(app, member) for member in head.tasks]
    else:
        targets = [_result_errbacks(app, head)]
    return [(task_id, name, _unique([*errbacks, *outer])) for task_id, name, errbacks in targets]


def _unique(signatures: list) -> list:
    """Each errback once (as Celery: the same one linked twice runs once)."""
    out: list = []
    for sig in signatures:
        if sig not in out:
            out.append(sig)
    return out


def _result_errbacks(app: Any, sig: Signature) -> tuple[str, str, list]:
    """The id and name of the result `sig` would produce, and the errbacks linked to it: a
    chord's own and its body's; a group's own and its tasks'."""
    errbacks: list = []
    while isinstance(sig, chord) and sig.body is not None:
        errbacks.extend(_callbacks(sig.options.get("link_error")))
        sig = sig.body
    if isinstance(sig, chain) and sig.tasks:  # its result is its last step's
        task_id, name, inner = _result_errbacks(app, sig.tasks[-1])
        return task_id, name, [*errbacks, *_callbacks(sig.options.get("link_error")), *inner]
    errbacks.extend(_callbacks(sig.options.get("link_error")))
    if isinstance(sig, group):
        for task in sig.tasks:
            errbacks.extend(_result_errbacks(app, task)[2])
        tail = sig.tail()
        return tail.id, tail.name, errbacks
    return sig.id, sig.name, errbacks


def _result_ids(sig: Signature) -> list[tuple[str, str]]:
    """(id, name) of every result a not-yet-started signature would have produced."""
    if isinstance(sig, chain):
        return [pair for step in sig.tasks for pair in _result_ids(step)]
    if isinstance(sig, group):
        return [pair for member in sig.tasks for pair in _result_ids(member)]
    if isinstance(sig, chord):
        return _result_ids(sig.body) if sig.body is not None else []
    return [(sig.id, sig.name)] if sig.id else []


def _new_style_errback(sig: Signature) -> bool:
    """Celery calls errbacks taking (request, exc, traceback) in the worker itself; ones
    taking the failed task's id alone are queued as tasks."""
    task = sig.app.tasks.get(sig.name)
    fun = getattr(task, "__wrapped__", None)
    if fun is None:
        return False
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return False
    if getattr(task, "bind", False):
        params = params[1:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return False
    return len(positional) - len(sig.args) >= 3


class ErrbackRequest:
    """What a new-style errback receives as `request`: the failed task's id and arguments."""

    def __init__(self, task_id: str, name: str | None = None, args: Any = None,
                 kwargs: Any = None) -> None:
        self.id, self.task, self.args, self.kwargs = task_id, name, args, kwargs

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def call_errback_here(sig: Signature, task_id: str, exc: BaseException, traceback: Any,
                      request: Any = None) -> None:
    """Run a new-style errback in this process, as Celery does; its errors are logged."""
    try:
        sig.type(request or ErrbackRequest(task_id), exc, traceback, *sig.args, **sig.kwargs)
    except Exception:
        log.exception("errback %s failed", sig.name)


def run_errbacks_in_worker(app: Any, request: Any, exc: BaseException, traceback: Any) -> None:
    """On a task failure, in the worker thread: the new-style errbacks of its link_error."""
    for errback in (request.get("errbacks") or ()):
        sig = maybe_signature(errback, app)
        if _new_style_errback(sig):
            call_errback_here(sig, request.id, exc, traceback, request)


class Replaced(Ignore):
    """Raised by Task.replace(): the worker records the replacement instead of a result."""

    def __init__(self, sig: Signature) -> None:
        super().__init__(f"replaced by {sig!r}")
        self.sig = sig


def replacement(task: Any, sig: Any) -> Replaced:
    """The exception Task.replace() raises, carrying the replacement to plan."""
    sig = maybe_signature(sig, task.app)
    if isinstance(sig, chain) and not sig.tasks:
        raise ImproperlyConfigured("Cannot replace with an empty chain")
    if isinstance(sig, group):  # Celery: a replacing group is collected into one result
        sig = chord(sig, collect_signature(task.app))
    elif isinstance(sig, chain) and isinstance(sig.tasks[-1], group):  # so is a chain's last
        sig = chain(*sig.tasks[:-1], chord(sig.tasks[-1], collect_signature(task.app)),
                    app=sig._app, **sig.options)
    return Replaced(sig.clone())


def _replace(app: Any, event: Finished, plan: Plan, flow: dict) -> None:
    """Plan a task's replacement: it inherits the task's place in its workflow."""
    sig = maybe_signature(event.result, app)
    nesting = (flow.get("replaced_task_nesting") or 0) + 1  # request.replaced_task_nesting
    for step in sig.tasks if isinstance(sig, chain) else [sig]:
        step.options["replaced_task_nesting"] = nesting
    tail = sig.tail()
    tail.options["replaces"] = [*(flow.get("replaces") or ()), event.task_id]
    for key in ("link", "link_error"):
        if flow.get(key):
            tail.options[key] = [*_callbacks(tail.options.get(key)), *flow[key]]
    after = [maybe_signature(s, app) for s in flow.get("chain") or ()]
    plan.add(sig, (), after, flow.get("chord"), event.task_id,
             flow.get("root_id") or event.task_id)


def needs_hook(options: dict | None, status: str) -> bool:
    """Whether the worker must finish this job through after_finish()."""
    return status == "REPLACED" or is_flow(options)
