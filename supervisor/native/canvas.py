"""Canvas: signatures and the workflows built from them (chain, group, chord, map, chunks).

A workflow is planned once, where it is sent: every task gets its id up front, and what has
to happen after a task (the rest of its chain, its links, the chord it counts towards) travels
in that task's row, in `options`. When the task finishes, the worker calls `after_finish()`
inside the same transaction that records the finish, so a crash can never record one without
the other. Follow-up ids are fixed in advance and inserted only if absent, so a task that runs
twice (its worker died before the finish was written) still starts its follow-ups once.

A chord is a row in start_all.chords: how many header tasks are still to finish, and the body
to start. Each header task decrements it in its finish transaction; the one that reaches zero
starts the body there and then.

Plain tasks carry none of these options and never enter this module.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from supervisor.native.current import current_app
from supervisor.native.exceptions import ChordError, Ignore, ImproperlyConfigured
from supervisor.native.job import Job
from supervisor.native.result import AsyncResult, GroupResult, ResultSet
from supervisor.native.serial import exception_from_dict, exception_to_dict, loads

log = logging.getLogger("supervisor.native")
# options keys that make a job part of a workflow (the worker's finish hook looks for them)
FLOW_KEYS = ("chain", "link", "link_error", "chord", "replaces")


def is_flow(options: dict | None) -> bool:
    """True when finishing this job has follow-ups to plan."""
    return bool(options) and any(options.get(key) for key in FLOW_KEYS)


# --- signatures -------------------------------------------------------------------------------

class Signature(dict):
    """`task.s(...)`: a task call to make later. A dict, so it travels as JSON like Celery's."""

    subtask_types: dict[str, type[Signature]] = {}

    def __init__(self, task: Any = None, args: Any = None, kwargs: Any = None,
                 options: dict | None = None, subtask_type: str | None = None,
                 immutable: bool = False, app: Any = None, **extra_options: Any) -> None:
        if isinstance(task, dict):  # its JSON form
            data = task
            task = data.get("task")
            args = data.get("args", args)
            kwargs = data.get("kwargs", kwargs)
            options = {**(data.get("options") or {}), **(options or {})}
            subtask_type = data.get("subtask_type", subtask_type)
            immutable = bool(data.get("immutable", immutable))
        self._type = None if task is None or isinstance(task, str) else task
        self._app = app
        name = task if task is None or isinstance(task, str) else task.name
        super().__init__(task=name, args=list(args or ()), kwargs=dict(kwargs or {}),
                         options={**(options or {}), **extra_options},
                         subtask_type=subtask_type, immutable=bool(immutable))

    # Celery exposes the dict's fields as attributes
    task = property(lambda self: self["task"])
    name = property(lambda self: self["task"])
    args = property(lambda self: self["args"], lambda self, v: self.__setitem__("args", list(v)))
    kwargs = property(lambda self: self["kwargs"],
                      lambda self, v: self.__setitem__("kwargs", dict(v)))
    options = property(lambda self: self["options"])
    subtask_type = property(lambda self: self["subtask_type"])
    immutable = property(lambda self: self["immutable"])

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @property
    def app(self) -> Any:
        if self._app is not None:
            return self._app
        if self._type is not None:
            return self._type.app
        return current_app()

    @property
    def type(self) -> Any:
        """The task object (looked up by name in the app when built from JSON)."""
        if self._type is None:
            self._type = self.app.tasks.get(self.name) or self.app.placeholder_task(self.name)
        return self._type

    # --- building -----------------------------------------------------------------------
    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> Signature:
        """A copy with partial arguments merged in: new args go first, as in Celery."""
        new = type(self).from_dict(copy.deepcopy(dict(self)), app=self._app)
        new._type = self._type
        if not self.immutable:
            if args:
                new["args"] = [*args, *new["args"]]
            if kwargs:
                new["kwargs"] = {**new["kwargs"], **kwargs}
        new["options"].update(options)
        return new

    @classmethod
    def from_dict(cls, data: dict, app: Any = None) -> Signature:
        kind = cls.subtask_types.get(data.get("subtask_type") or "", Signature)
        if kind is not Signature and cls is Signature:
            return kind.from_dict(data, app)
        sig = Signature.__new__(cls)
        dict.__init__(sig, task=data.get("task"), args=list(data.get("args") or ()),
                      kwargs=dict(data.get("kwargs") or {}),
                      options=dict(data.get("options") or {}),
                      subtask_type=data.get("subtask_type"),
                      immutable=bool(data.get("immutable")))
        sig._type, sig._app = None, app
        sig._revive()
        return sig

    def _revive(self) -> None:
        """Subclasses turn nested dicts back into signatures."""

    def __deepcopy__(self, memo: dict) -> Signature:
        new = type(self).from_dict(json.loads(json.dumps(self, default=str)), app=self._app)
        new._type = self._type
        return new

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self["immutable"] = bool(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def replace(self, args: Any = None, kwargs: Any = None, options: dict | None = None
                ) -> Signature:
        new = self.clone()
        if args is not None:
            new["args"] = list(args)
        if kwargs is not None:
            new["kwargs"] = dict(kwargs)
        if options is not None:
            new["options"] = dict(options)
        return new

    def link(self, callback: dict) -> dict:
        """Run `callback` with this task's result when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: dict) -> dict:
        """Run `errback` when this task fails."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: dict) -> Signature:
        self.link_error(errback)
        return self

    def freeze(self, _id: str | None = None, **options: Any) -> Any:
        """Fix the task id now (the result can be handed out before sending)."""
        if _id is not None:
            self.options["task_id"] = _id
        self.options.setdefault("task_id", str(uuid.uuid4()))
        return AsyncResult(self.id, app=self.app, task_name=self.name)

    # --- sending and calling ------------------------------------------------------------
    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        sig = self.clone(args, kwargs, **options) if (args or kwargs or options) else self
        return send(sig)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Run in this process now (eagerly), as Celery's apply()."""
        sig = self.clone(args, kwargs, **options)
        opts = {k: v for k, v in sig.options.items() if k not in ("link", "link_error", "chord")}
        return sig.type.apply(sig.args, sig.kwargs, **opts)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task's function here, with the partial arguments."""
        sig = self.clone(args, kwargs)
        return sig.type(*sig.args, **sig.kwargs)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, group) and not isinstance(self, group):
            return chain(self, other)
        if isinstance(other, chain):
            return chain(self, *other.tasks)
        if isinstance(other, Signature):
            if isinstance(self, group):
                return chord(self, other)
            return chain(self, other)
        return NotImplemented

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        raise NotImplementedError("stamping (Signature.stamp, StampingVisitor) is not supported "
                                  "by the native worker; pass headers= to apply_async instead")

    def __invert__(self) -> Any:
        return self.apply_async().get()

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{'%' if self.immutable else ''}{self.name}({', '.join(parts)})"

    # --- workflow shape -----------------------------------------------------------------
    def tail(self) -> Signature:
        """The task whose result is this signature's result."""
        return self

    def _freeze_all(self) -> Any:
        """Give every task inside an id; returns the result object the caller will hold."""
        return self.freeze()


class StampingVisitor:
    """Celery's stamping API is not supported here: Signature.stamp() says so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """signature("tasks.add", args=(2, 2)) or signature(dict) -> the right Signature class."""
    app = kwargs.pop("app", None)
    if isinstance(varies, Signature):
        return varies.clone() if not (args or kwargs) else varies.clone(*args, **kwargs)
    if isinstance(varies, dict):
        return Signature.from_dict(varies, app=app)
    return Signature(varies, *args, app=app, **kwargs)


def maybe_signature(value: Any, app: Any = None) -> Signature | None:
    if value is None:
        return None
    if isinstance(value, Signature):
        if app is not None and value._app is None:
            value._app = app
        return value
    if isinstance(value, dict):
        return Signature.from_dict(value, app=app)
    if hasattr(value, "s") and hasattr(value, "name"):  # a task where a signature goes
        return value.s()
    raise TypeError(f"not a signature: {value!r}")


def _signatures(tasks: tuple, app: Any = None) -> list[Signature]:
    """The arguments of chain()/group(): signatures, or one iterable of them."""
    if len(tasks) == 1 and not isinstance(tasks[0], dict):
        tasks = tuple(tasks[0])
    return [maybe_signature(t, app) for t in tasks]


class chain(Signature):  # noqa: N801 - Celery's name
    """chain(a, b, c) or a | b | c: each result becomes the first argument of the next."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        app = options.pop("app", None)
        steps: list[Signature] = []
        for sig in _signatures(tasks, app):
            steps.extend(sig.tasks if type(sig) is chain and not sig.options else [sig])
        super().__init__("celery.chain", (), {"tasks": steps}, options,
                         subtask_type="chain", app=app)

    def _revive(self) -> None:
        self.kwargs["tasks"] = [maybe_signature(t, self._app) for t in self.kwargs["tasks"]]

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]

    @property
    def app(self) -> Any:
        if self._app is not None:
            return self._app
        return self.tasks[0].app if self.tasks else current_app()

    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> chain:
        new = Signature.clone(self, **options)
        if (args or kwargs) and new.tasks:
            new.tasks[0] = new.tasks[0].clone(args, kwargs)
        return new

    def tail(self) -> Signature:
        return self.tasks[-1].tail()

    def _freeze_all(self) -> Any:
        parent = None
        result = None
        for step in self.tasks:
            result = step._freeze_all()
            if parent is not None:  # the earliest result inside this step follows the last
                first = result
                while getattr(first, "parent", None) is not None:
                    first = first.parent
                first.parent = parent
            parent = result
        return result

    def freeze(self, _id: str | None = None, **options: Any) -> Any:
        if _id is not None and self.tasks:
            self.tail().options["task_id"] = _id
        result = self._freeze_all()
        self.options["task_id"] = self.tail().id  # a frozen chain's id is its last task's
        return result

    def __or__(self, other: Any) -> Any:
        if isinstance(other, chain):
            return chain(*self.tasks, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            if isinstance(other, group) and self.tasks and isinstance(self.tasks[-1], group):
                return chain(*self.tasks, other, app=self._app)
            return chain(*self.tasks, other, app=self._app)
        return NotImplemented

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        result = None
        for i, step in enumerate(self.tasks):
            step_args = (args or ()) if i == 0 else (result.get(),)
            result = step.apply(step_args, kwargs if i == 0 else None)
        return result

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"


def _unroll(tasks: list[Signature]) -> list[Signature]:
    """A group directly inside a group is unrolled into it, as in Celery."""
    out: list[Signature] = []
    for task in tasks:
        if type(task) is group:
            out.extend(_unroll(task.tasks))
        else:
            out.append(task)
    return out


class group(Signature):  # noqa: N801 - Celery's name
    """group(a, b, c): run in parallel; the result is the list of their results."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        app = options.pop("app", None)
        super().__init__("celery.group", (), {"tasks": _unroll(_signatures(tasks, app))},
                         options, subtask_type="group", app=app)

    def _revive(self) -> None:
        self.kwargs["tasks"] = _unroll(
            [maybe_signature(t, self._app) for t in self.kwargs["tasks"]])

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]

    @property
    def app(self) -> Any:
        if self._app is not None:
            return self._app
        return self.tasks[0].app if self.tasks else current_app()

    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> group:
        new = Signature.clone(self, **options)
        if args or kwargs:
            new.kwargs["tasks"] = [t.clone(args, kwargs) for t in new.tasks]
        return new

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.apply_async(args, **options)

    def _freeze_all(self) -> GroupResult:
        self.options.setdefault("task_id", str(uuid.uuid4()))
        return GroupResult(self.id, [t._freeze_all() for t in self.tasks], app=self.app)

    def tail(self) -> Signature:
        """Counted as one result (in a chord), a group's list is gathered by a collect job
        whose id follows from the group's."""
        self.options.setdefault("task_id", str(uuid.uuid4()))
        return collect_signature(self.app, self.id)

    def freeze(self, _id: str | None = None, **options: Any) -> GroupResult:
        if _id is not None:
            self.options["task_id"] = _id
        return self._freeze_all()

    def apply(self, args: Any = None, kwargs: Any = None, **options: Any) -> GroupResult:
        self.options.setdefault("task_id", str(uuid.uuid4()))
        return GroupResult(self.id, [t.apply(args, kwargs) for t in self.tasks], app=self.app)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


class chord(Signature):  # noqa: N801 - Celery's name
    """chord(header, body): run the header group, then body(list of the header's results)."""

    def __init__(self, header: Any = None, body: Any = None, **options: Any) -> None:
        app = options.pop("app", None)
        if isinstance(header, dict) and header.get("subtask_type") == "chord" and body is None:
            super().__init__(header, app=app)  # its JSON form
            return
        members = header if isinstance(header, group) else group(
            *(_signatures((header,), app) if header is not None else ()), app=app)
        super().__init__("celery.chord", (), {"header": members,
                                              "body": maybe_signature(body, app)},
                         options, subtask_type="chord", app=app)

    def _revive(self) -> None:
        self.kwargs["header"] = maybe_signature(self.kwargs["header"], self._app)
        if not isinstance(self.kwargs["header"], group):
            self.kwargs["header"] = group(self.kwargs["header"])
        self.kwargs["body"] = maybe_signature(self.kwargs.get("body"), self._app)

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["header"].tasks

    header = property(lambda self: self.kwargs["header"])
    body = property(lambda self: self.kwargs["body"])

    @property
    def app(self) -> Any:
        if self._app is not None:
            return self._app
        if self.body is not None:
            return self.body.app
        return self.header.app

    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> chord:
        new = Signature.clone(self, **options)
        if args or kwargs:
            new.kwargs["header"] = new.header.clone(args, kwargs)
        return new

    def __call__(self, body: Any = None, **options: Any) -> Any:
        if body is not None:
            self.kwargs["body"] = maybe_signature(body, self._app)
        return self.apply_async(**options)

    def link(self, callback: dict) -> dict:
        return self.body.link(callback)

    def link_error(self, errback: dict) -> dict:
        return self.body.link_error(errback)

    def tail(self) -> Signature:
        return self.body.tail()

    def _freeze_all(self) -> Any:
        if self.body is None:
            raise ValueError("chord has no body: chord(header)(body) or chord(header, body)")
        # the chord's id is the header group's id, as in Celery
        self.header.options.setdefault("task_id", self.options.get("group_id")
                                       or str(uuid.uuid4()))
        header = self.header._freeze_all()
        result = self.body._freeze_all()
        first = result
        while getattr(first, "parent", None) is not None:
            first = first.parent
        first.parent = header
        return result

    def freeze(self, _id: str | None = None, **options: Any) -> Any:
        if _id is not None and self.body is not None:
            self.tail().options["task_id"] = _id
        return self._freeze_all()

    def apply(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        header = self.header.apply(args, kwargs)
        return self.body.apply((header.get(),))

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


class xmap(Signature):  # noqa: N801 - Celery's name
    """task.map(items): one job calling the task on each item, in the worker."""

    builtin = "celery.map"

    def __init__(self, task: Any = None, it: Any = None, **options: Any) -> None:
        if isinstance(task, dict) and it is None and "subtask_type" in task:
            super().__init__(task)
            return
        sig = task if isinstance(task, Signature) else Signature(task)
        super().__init__(self.builtin, (), {"task": sig, "it": list(it or ())}, options,
                         subtask_type=self.builtin.split(".")[1], app=sig._app)
        self._app = getattr(sig._type, "app", None) or sig._app

    def __repr__(self) -> str:
        return f"[{self.kwargs['task']['task']}(x) for x in {self.kwargs['it']!r}]"


class xstarmap(xmap):  # noqa: N801 - Celery's name
    """task.starmap(items): one job calling task(*item) for each item."""

    builtin = "celery.starmap"


class chunks(Signature):  # noqa: N801 - Celery's name
    """task.chunks(items, n): the items split into jobs of n calls each."""

    def __init__(self, task: Any = None, it: Any = None, n: int = 1, **options: Any) -> None:
        if isinstance(task, dict) and it is None and "subtask_type" in task:
            super().__init__(task)
            return
        sig = task if isinstance(task, Signature) else Signature(task)
        super().__init__("celery.chunks", (), {"task": sig, "it": list(it or ()), "n": int(n)},
                         options, subtask_type="chunks")
        self._app = getattr(sig._type, "app", None) or sig._app

    def group(self) -> group:
        task, items, n = self.kwargs["task"], self.kwargs["it"], self.kwargs["n"]
        task = maybe_signature(task, self._app)
        parts = [xstarmap(task, items[i:i + n]) for i in range(0, len(items), n)]
        for part in parts:
            part._app = self._app
        return group(*parts, app=self._app, **self.options)

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        return self.group().apply_async(args, kwargs, **options)

    def __call__(self, **options: Any) -> Any:
        return self.apply_async(**options)

    def _freeze_all(self) -> Any:
        raise TypeError("chunks inside another workflow: use chunks(...).group() there")


Signature.subtask_types.update(chain=chain, group=group, chord=chord, map=xmap,
                               starmap=xstarmap, chunks=chunks)


def run_map(task: dict, it: list, star: bool) -> list:
    """The body of the built-in celery.map / celery.starmap tasks."""
    fun = maybe_signature(task).type
    return [fun(*item) if star else fun(item) for item in it]


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
            steps = _upgrade_groups(sig.tasks) or []
            if not steps:
                return
            tail_opts = {k: sig.options[k] for k in ("link",) if sig.options.get(k)}
            if tail_opts:  # chain.link(...) runs after its last task
                steps[-1] = steps[-1].clone(**tail_opts)
            errbacks = sig.options.get("link_error")
            if errbacks:  # chain.link_error(...) covers every task in it
                steps = [s.clone(link_error=[*(s.options.get("link_error") or []), *errbacks])
                         for s in steps]
            self.add(steps[0], args, [*steps[1:], *after], chord_id, parent_id, root_id)
        elif isinstance(sig, group):
            if after:  # group followed by more steps: a chord, as Celery upgrades it
                self.add(chord(sig, after[0]), args, after[1:], chord_id, parent_id, root_id)
            elif chord_id is not None:  # a group counted as one result: collect it first
                self.add(chord(sig, sig.tail()), args, None, chord_id, parent_id, root_id)
            else:
                for member in sig.tasks:
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
        for member in sig.header.tasks:  # a group inside the header counts as one result
            members.append(chord(member, member.tail()) if isinstance(member, group)
                           else member)
        sig.header.kwargs["tasks"] = members
        body = sig.body
        if body is None:
            raise ValueError("chord has no body: chord(header)(body) or chord(header, body)")
        if sig.options.get("link_error"):
            body = body.clone(link_error=[*(body.options.get("link_error") or []),
                                          *sig.options["link_error"]])
        if sig.options.get("link"):
            body = body.clone(link=[*(body.options.get("link") or []), *sig.options["link"]])
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
            if callbacks:
                flow[key] = [dict(maybe_signature(c, self.app)) for c in callbacks]
        for key in ("group_id", "group_index", "replaces"):
            if options.get(key) is not None:
                flow[key] = options.pop(key)
        job = sig.type.build_job(call_args, sig.kwargs, task_id=task_id, flow=flow, **options)
        self.jobs.append(job)


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


def collect_signature(app: Any, group_id: str | None = None) -> Signature:
    """The built-in task that returns the list it gets: a nested group's results, as one.
    For a group, its id is derived from the group's, so it is known before it exists."""
    sig = Signature("celery.accumulate", app=app)
    if group_id:
        sig.options["task_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"collect:{group_id}"))
    return sig


def send(sig: Signature) -> Any:
    """Plan a workflow and insert all of it in one transaction; returns its result object."""
    app = sig.app
    if app.conf.task_always_eager:
        return sig.apply()
    if type(sig) is Signature:  # a single task: the plain path
        return sig.type.apply_async(sig.args, sig.kwargs, **_plain_options(sig))
    if type(sig) is group and _plain_members(sig):  # the batched enqueue: one INSERT
        return _send_plain_group(sig)
    sig = sig.clone()
    result = sig._freeze_all()
    plan = Plan(app)
    plan.add(sig)
    app.backend.submit(plan.jobs, plan.chords)
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


def _send_plain_group(sig: group) -> GroupResult:
    group_id = sig.id or str(uuid.uuid4())
    app = sig.app
    jobs, results = [], []
    for member in sig.tasks:
        options = dict(member.options)
        task_id = options.pop("task_id", None) or str(uuid.uuid4())
        # no per-row options here (not even group_id): this is the batched-enqueue fast path
        job = member.type.build_job(member.args, member.kwargs, task_id=task_id, **options)
        jobs.append(job)
        results.append(AsyncResult(task_id, app=app, task_name=member.name))
    if jobs:
        app.backend.enqueue(jobs)
    return GroupResult(group_id, results, app=app)


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
        counts: dict[str, list] = {}  # chord id -> [finished header tasks, first error]
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
        count = counts.setdefault(chord_id, [0, None])
        count[0] += 1
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
            plan.add(body, ([res for _status, res in results],), after, row.outer, None,
                     row.root_id)
            if plan.chords:
                tx.insert_chords(plan.chords)
            tx.insert_jobs(plan.jobs)
            continue
        # a header task failed: the body fails with ChordError, and its errbacks run
        cause = failed.get("exc")
        reason = exception_from_dict(cause) if isinstance(cause, dict) else cause
        error = ChordError(f"Dependency {failed['task_id']} raised {reason!r}")
        head = body.tasks[0] if isinstance(body, chain) else body
        head = head.tail() if isinstance(head, chord) else head
        flow = {"root_id": row.root_id, "link_error": head.options.get("link_error") or [],
                "chord": row.outer}
        never_ran = {(head.id, head.name), *_result_ids(body)}
        for sig in after:
            never_ran.update(_result_ids(sig))
        tx.insert_failed(sorted(never_ran), exception_to_dict(error))
        event = Finished(head.id, head.name, "FAILURE", exception_to_dict(error), None, flow)
        for errback in flow["link_error"]:
            sig = maybe_signature(errback, app)
            if _new_style_errback(sig):
                call_errback_here(sig, head.id, error, None)
        events.append(event)
    return events


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


def callbacks_option(app: Any, link: Any, link_error: Any) -> dict:
    """apply_async(link=..., link_error=...): one signature or a list, as flow options."""
    flow = {}
    for key, value in (("link", link), ("link_error", link_error)):
        if value:
            values = value if isinstance(value, (list, tuple)) else [value]
            flow[key] = [dict(maybe_signature(v, app)) for v in values]
    return flow


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
    return Replaced(sig.clone())


def _replace(app: Any, event: Finished, plan: Plan, flow: dict) -> None:
    """Plan a task's replacement: it inherits the task's place in its workflow."""
    sig = maybe_signature(event.result, app)
    tail = sig.tail()
    tail.options["replaces"] = [*(flow.get("replaces") or ()), event.task_id]
    for key in ("link", "link_error"):
        if flow.get(key):
            tail.options[key] = [*(tail.options.get(key) or []), *flow[key]]
    after = [maybe_signature(s, app) for s in flow.get("chain") or ()]
    plan.add(sig, (), after, flow.get("chord"), event.task_id,
             flow.get("root_id") or event.task_id)


def needs_hook(options: dict | None, status: str) -> bool:
    """Whether the worker must finish this job through after_finish()."""
    return status == "REPLACED" or is_flow(options)


__all__ = ["Signature", "chain", "chord", "chunks", "group", "maybe_signature", "signature",
           "xmap", "xstarmap", "ResultSet", "after_finish", "is_flow", "needs_hook"]
