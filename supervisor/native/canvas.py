"""Canvas: signatures and the workflows built from them (chain, group, chord, map, chunks).

A Signature is a dict, so it travels as JSON like Celery's. Sending one is flow.send(): it
plans the workflow into rows (see flow.py, which also holds the worker's completion hook).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

from supervisor.native import serial, stamping
from supervisor.native.current import current_app
from supervisor.native.result import AsyncResult, GroupResult
from supervisor.native.stamping import StampingVisitor

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
        super().__init__(task=name, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                         options={**(options or {}), **extra_options},
                         subtask_type=subtask_type, immutable=bool(immutable))

    # Celery exposes the dict's fields as attributes
    task = property(lambda self: self["task"])
    name = property(lambda self: self["task"])
    args = property(lambda self: self["args"], lambda self, v: self.__setitem__("args", tuple(v)))
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
        # the copy keeps the app of the tasks it was built from (nested signatures are rebuilt
        # from their dicts, so without it they would take whatever app is current by then)
        new = type(self).from_dict(copy.deepcopy(dict(self)), app=self.app)
        new._type = self._type
        if not self.immutable:
            if args:
                new["args"] = (*args, *new["args"])
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
        dict.__init__(sig, task=data.get("task"), args=tuple(data.get("args") or ()),
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
        # through Celery's JSON types, so bytes, datetimes, UUIDs... stay what they are
        new = type(self).from_dict(serial.loads(serial.dumps(self)), app=self.app)
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
            new["args"] = tuple(args)
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
        from supervisor.native.flow import send  # flow builds on this module

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
        """Label this task and everything inside it (see stamping.py)."""
        stamping.stamp(self, visitor, append_stamps, headers, self._revive_one)

    def stamp_links(self, visitor: Any = None, append_stamps: bool = False,
                    **headers: Any) -> None:
        """Stamp only this signature's callbacks and errbacks."""
        stamping.stamp_links(self, visitor, append_stamps, headers, self._revive_one)

    def _revive_one(self, value: Any) -> Signature:
        return maybe_signature(value, self._app)

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
    sigs: list[Signature] = []
    seen: set[int] = set()
    for t in tasks:
        sig = maybe_signature(t, app)
        if id(sig) in seen:  # one signature object given twice (a generator repeating it):
            sig = sig.clone()  # each place runs its own task, with its own id
            sig.options.pop("task_id", None)
        seen.add(id(sig))
        sigs.append(sig)
    return _drop_empty(sigs)


def _drop_empty(sigs: list[Signature]) -> list[Signature]:
    """An empty chain or group inside a chain, a group or a chord header does nothing, as in
    Celery: it is left out (the previous result, or the partial arguments, go past it)."""
    return [s for s in sigs if not (type(s) in (chain, group) and not s.tasks)]


class _Steps(Signature):
    """What chain and group share: a list of signatures in kwargs["tasks"], and their app."""

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]

    @property
    def app(self) -> Any:
        if self._app is not None:
            return self._app
        return self.tasks[0].app if self.tasks else current_app()


class chain(_Steps):  # noqa: N801 - Celery's name
    """chain(a, b, c) or a | b | c: each result becomes the first argument of the next."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        app = options.pop("app", None)
        steps: list[Signature] = []
        for sig in _signatures(tasks, app):
            steps.extend(sig.tasks if type(sig) is chain and not sig.options else [sig])
        super().__init__("celery.chain", (), {"tasks": steps}, options,
                         subtask_type="chain", app=app)

    def _revive(self) -> None:
        self.kwargs["tasks"] = _drop_empty(
            [maybe_signature(t, self._app) for t in self.kwargs["tasks"]])

    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> chain:
        new = Signature.clone(self, **options)
        if (args or kwargs) and new.tasks:
            new.tasks[0] = new.tasks[0].clone(args, kwargs)
        return new

    def tail(self) -> Signature:
        return self.tasks[-1].tail()

    def _freeze_all(self) -> Any:
        if self.options.get("task_id") and self.tasks and not self.tail().id:
            self.tail().options["task_id"] = self.options["task_id"]  # apply_async(task_id=)
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


# Celery's chain() folds its steps with `|`, its base class _chain builds them as given
# (what a chain rebuilt from JSON is); native's chain() always builds them as given.
_chain = chain


def _unroll(tasks: list[Signature]) -> list[Signature]:
    """A group directly inside a group is unrolled into it, as in Celery."""
    out: list[Signature] = []
    for task in tasks:
        if type(task) is group:
            out.extend(_unroll(task.tasks))
        else:
            out.append(task)
    return out


class group(_Steps):  # noqa: N801 - Celery's name
    """group(a, b, c): run in parallel; the result is the list of their results."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        app = options.pop("app", None)
        super().__init__("celery.group", (), {"tasks": _unroll(_signatures(tasks, app))},
                         options, subtask_type="group", app=app)

    def _revive(self) -> None:
        self.kwargs["tasks"] = _drop_empty(_unroll(
            [maybe_signature(t, self._app) for t in self.kwargs["tasks"]]))

    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> group:
        new = Signature.clone(self, **options)
        if args or kwargs:
            new.kwargs["tasks"] = [t.clone(args, kwargs) for t in new.tasks]
        return new

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.apply_async(args, **options)

    def link(self, callback: dict) -> dict:
        """As Celery: the callback goes on the first member (made immutable, since that one
        member's result is not the group's), so it may run before the others finish."""
        if not self.tasks:
            return super().link(callback)
        return self.tasks[0].link(maybe_signature(callback, self._app).clone().set(
            immutable=True))

    def link_error(self, errback: dict) -> dict:
        """As Celery: every member may fail, so each one gets the errback."""
        if not self.tasks:
            return super().link_error(errback)
        for task in self.tasks:
            task.link_error(errback)
        return errback

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

    # a header given as an iterator (a generator): sent as it yields, when the chord is sent
    # on its own (Celery's incremental header); anything else reading the header first
    # turns it into a list
    _lazy_header: Iterator | None = None

    def __init__(self, header: Any = None, body: Any = None, **options: Any) -> None:
        app = options.pop("app", None)
        if isinstance(header, dict) and header.get("subtask_type") == "chord" and body is None:
            super().__init__(header, app=app)  # its JSON form
            return
        lazy = None
        if isinstance(header, Iterator) and not isinstance(header, dict):
            lazy, header = header, None
        # a list of tasks is copied, as Celery's chord copies it: linking to the chord's
        # header tasks (chord.tasks) leaves the caller's signatures as they were
        if isinstance(header, (list, tuple)):
            header = [s.clone() for s in _signatures((header,), app)]
        members = header if isinstance(header, group) else group(
            *(_signatures((header,), app) if header is not None else ()), app=app)
        super().__init__("celery.chord", (), {"header": members,
                                              "body": maybe_signature(body, app)},
                         options, subtask_type="chord", app=app)
        self._lazy_header = lazy

    def _materialize(self) -> None:
        """The header iterator, read to its end (for everything but the incremental send)."""
        lazy, self._lazy_header = self._lazy_header, None
        if lazy is not None:
            self.kwargs["header"] = group(_signatures((lazy,), self._app), app=self._app,
                                          **self.kwargs["header"].options)

    def take_lazy_header(self) -> Iterator | None:
        """The header iterator, if it was not read yet (flow sends it as it yields)."""
        lazy, self._lazy_header = self._lazy_header, None
        return lazy

    def __deepcopy__(self, memo: dict) -> chord:
        self._materialize()
        return super().__deepcopy__(memo)

    def _revive(self) -> None:
        self.kwargs["header"] = maybe_signature(self.kwargs["header"], self._app)
        if not isinstance(self.kwargs["header"], group):
            self.kwargs["header"] = group(self.kwargs["header"])
        self.kwargs["body"] = maybe_signature(self.kwargs.get("body"), self._app)

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["header"].tasks

    @property
    def header(self) -> group:
        self._materialize()
        return self.kwargs["header"]

    body = property(lambda self: self.kwargs["body"])

    @property
    def app(self) -> Any:
        if self._app is not None:
            return self._app
        if self.body is not None:
            return self.body.app
        return self.header.app

    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> chord:
        self._materialize()
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
        """The body's errback; with `task_allow_error_cb_on_chord_header` on, each header task
        gets it too (as Celery: it runs for each header task that fails, and for the body)."""
        link_header_errback(self, errback)
        return self.body.link_error(errback)

    def tail(self) -> Signature:
        return self.body.tail()

    def _freeze_all(self) -> Any:
        if self.body is None:
            raise ValueError("chord has no body: chord(header)(body) or chord(header, body)")
        if self.options.get("task_id") and not self.tail().id:  # apply_async(task_id=...):
            self.tail().options["task_id"] = self.options["task_id"]  # the body's, as Celery
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


def link_header_errback(sig: chord, errback: dict) -> None:
    """With `task_allow_error_cb_on_chord_header` on, link `errback` to each header task of
    `sig` (Celery's chord.link_error); off (the default), the header is left alone."""
    if sig.app.conf.get("task_allow_error_cb_on_chord_header"):
        for task in sig.header.tasks:
            task.link_error(maybe_signature(errback, sig._app).clone())


class xmap(Signature):  # noqa: N801 - Celery's name
    """task.map(items): one job calling the task on each item, in the worker."""

    builtin = "celery.map"

    def __init__(self, task: Any = None, it: Any = None, **options: Any) -> None:
        if isinstance(task, dict) and it is None and "subtask_type" in task:
            super().__init__(task)
            return
        sig = task if isinstance(task, Signature) else Signature(task)
        super().__init__(self.builtin, (), {"task": sig, "it": list(it or ())}, options,
                         subtask_type=self.builtin.split(".")[1], immutable=True,
                         app=sig._app)  # immutable: a chain's previous result is not passed
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
                         options, subtask_type="chunks", immutable=True)
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


def collect_signature(app: Any, group_id: str | None = None) -> Signature:
    """The built-in task that returns the list it gets: a nested group's results, as one.
    For a group, its id is derived from the group's, so it is known before it exists."""
    sig = Signature("celery.accumulate", app=app)
    if group_id:
        sig.options["task_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"collect:{group_id}"))
    return sig


def callbacks_option(app: Any, link: Any, link_error: Any) -> dict:
    """apply_async(link=..., link_error=...): one signature or a list, as flow options."""
    flow = {}
    for key, value in (("link", link), ("link_error", link_error)):
        if value:
            values = value if isinstance(value, (list, tuple)) else [value]
            flow[key] = [dict(maybe_signature(v, app)) for v in values]
    return flow


__all__ = ["Signature", "StampingVisitor", "chain", "chord", "chunks", "group",
           "maybe_signature", "signature", "xmap", "xstarmap", "is_flow"]
