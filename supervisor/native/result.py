"""AsyncResult: reads a task's state from the queue table; an unknown id reads PENDING."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from supervisor.native import states
from supervisor.native.current import current_app
from supervisor.native.exceptions import TaskRevokedError, TimeoutError
from supervisor.native.serial import exception_from_dict


@contextlib.contextmanager
def allow_join_result():
    """Celery forbids get() inside a task unless wrapped in this; here get() always works."""
    yield


def get_task_logger(name: str) -> logging.Logger:
    """Celery's get_task_logger: a standard logger under the `celery.task` name."""
    return logging.getLogger(name)


def _parents_of(result: Any) -> list:
    """The results `result` waits on (a chain's earlier steps), earliest first."""
    nodes, node = [], getattr(result, "parent", None)
    while node is not None:
        nodes.append(node)
        node = getattr(node, "parent", None)
    return nodes[::-1]


class _ResultBase:
    id: str

    @property
    def task_id(self) -> str:
        return self.id

    @property
    def status(self) -> str:
        return self.state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def info(self) -> Any:
        return self.result

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        return self.get(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _ResultBase):
            return other.id == self.id
        return other == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class AsyncResult(_ResultBase):
    def __init__(self, id: str, backend: Any = None, task_name: str | None = None,
                 app: Any = None, parent: Any = None) -> None:
        self.id = str(id)
        self.app = app or current_app()
        self._cache: dict | None = None
        self._task_name = task_name
        self.parent = parent
        self.ignored = False  # sent with ignore_result: get() returns None at once

    @property
    def backend(self) -> Any:
        """The app's store (Celery's result backend): get_task_meta, get_state."""
        return self.app.backend

    def _meta(self) -> dict | None:
        if self._cache is not None:
            return self._cache
        meta = self.app.backend.get_meta(self.id)
        if meta is not None and meta["status"] in states.READY_STATES:
            self._cache = meta  # final: never changes again (until forget())
        return meta

    @property
    def state(self) -> str:
        meta = self._meta()
        if meta is None:
            return states.PENDING
        status = meta["status"]
        if status == "REPLACED":  # its replacement is still running
            return states.STARTED if self.app.conf.task_track_started else states.PENDING
        if status == "RESERVED":  # held by a worker
            if self.app.conf.task_track_started:
                return states.STARTED
            return states.RETRY if meta["retries"] else states.PENDING
        return status

    @property
    def result(self) -> Any:
        meta = self._meta()
        if meta is None or meta["status"] in ("PENDING", "RESERVED", "REPLACED"):
            return None
        value = meta["result"]
        if meta["status"] in states.EXCEPTION_STATES:
            if value is None:
                return TaskRevokedError("revoked") if meta["status"] == states.REVOKED else None
            return exception_from_dict(value)
        return value

    @property
    def traceback(self) -> str | None:
        meta = self._meta()
        return meta["traceback"] if meta else None

    @property
    def children(self) -> list | None:
        """The tasks this one started (sent from it, or planned when it finished: callbacks,
        errbacks, the next chain step, a chord body it completed), as Celery records them
        with its result: None until it is ready. One query, on the rows' parent_id."""
        if not self.ready():
            return None
        return [AsyncResult(task_id, app=self.app, task_name=name)
                for task_id, name in self.app.backend.children_of(self.id)]

    @property
    def date_done(self) -> Any:
        meta = self._meta()
        return meta["finished_at"] if meta else None

    @property
    def name(self) -> str | None:
        meta = self._meta()
        return meta["name"] if meta else self._task_name

    @property
    def args(self) -> list | None:
        meta = self._meta()
        return meta["args"] if meta else None

    @property
    def kwargs(self) -> dict | None:
        meta = self._meta()
        return meta["kwargs"] if meta else None

    @property
    def retries(self) -> int | None:
        meta = self._meta()
        return meta["retries"] if meta else None

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, **_ignored: Any) -> Any:
        """Wait until the task is ready; re-raise its exception when `propagate` (the default)."""
        if self.ignored:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005  # start fast: most tasks finish in milliseconds
        parents = self._parents() if propagate else []
        while True:
            for node in parents:  # as Celery: an earlier step's failure is raised first
                node.maybe_throw()
            state = self.state
            if state in states.READY_STATES:
                for node in parents:  # it may have failed since the check above (a chord's
                    node.maybe_throw()  # body fails in the same commit as its header)
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("The operation timed out.")
            wait = min(pause, interval)
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            time.sleep(wait)
            pause *= 1.5
        value = self.result
        if propagate and state in states.PROPAGATE_STATES:
            raise value if isinstance(value, BaseException) else TaskRevokedError(str(value))
        return value

    def _parents(self) -> list:
        return _parents_of(self)

    def maybe_throw(self, propagate: bool = True, callback: Any = None) -> None:
        """Raise this task's exception if it failed (or was revoked)."""
        state = self.state
        if propagate and state in states.PROPAGATE_STATES:
            value = self.result
            raise value if isinstance(value, BaseException) else TaskRevokedError(str(value))

    def as_tuple(self) -> tuple:
        """Celery's serialisable form: ((id, parent's form), None)."""
        parent = self.parent
        return (self.id, parent.as_tuple() if parent is not None else None), None

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        self.app.control.revoke(self.id, terminate=terminate)
        self._cache = None

    def revoke_by_stamped_headers(self, headers: dict, connection: Any = None,
                                  terminate: bool = False, signal: Any = None,
                                  wait: bool = False, timeout: float | None = None) -> None:
        """Revoke every task stamped with these values (not only this one), as Celery's."""
        self.app.control.revoke_by_stamped_headers(headers, terminate=terminate, reply=wait,
                                                   timeout=timeout or 1.0)
        self._cache = None

    def forget(self) -> None:
        self.app.backend.forget(self.id)
        self._cache = None


class EagerResult(_ResultBase):
    """The result of a task run in-process (task_always_eager or Task.apply())."""

    def __init__(self, id: str, value: Any, state: str, traceback: str | None = None,
                 name: str | None = None) -> None:
        self.id, self._value, self._state = id, value, state
        self.traceback, self.name = traceback, name

    @property
    def state(self) -> str:
        return self._state

    @property
    def result(self) -> Any:
        return self._value

    def get(self, timeout: float | None = None, propagate: bool = True, **_ignored: Any) -> Any:
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._value
        return self._value

    def maybe_throw(self, propagate: bool = True, callback: Any = None) -> None:
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._value

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED

    def forget(self) -> None:
        pass


class ResultSet:
    """Several results waited on together (GroupResult adds an id that can be saved)."""

    def __init__(self, results: list, app: Any = None, **_ignored: Any) -> None:
        self.results = list(results)
        self._app = app

    @property
    def app(self) -> Any:
        return self._app or current_app()

    def add(self, result: Any) -> None:
        if result not in self.results:
            self.results.append(result)

    def update(self, results: list) -> None:
        self.results.extend(r for r in results if r not in self.results)

    def discard(self, result: Any) -> None:
        if result in self.results:
            self.results.remove(result)

    remove = discard

    def clear(self) -> None:
        self.results.clear()

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, callback: Any = None, **kw: Any) -> list:
        """Every result, in order; waits for all of them (at most `timeout` in total)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parents = _parents_of(self) if propagate else []
        pause = 0.005
        while parents:  # an earlier step's failure is raised first
            for node in parents:
                node.maybe_throw()
            if self.ready():
                for node in parents:  # it may have failed since the check above (a chord's
                    node.maybe_throw()  # body fails in the same commit as its header)
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("The operation timed out.")
            time.sleep(min(pause, interval))
            pause *= 1.5
        values = []
        for r in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = r.get(timeout=left, propagate=propagate, interval=interval, **kw)
            if callback is not None:
                callback(r.id, value)
            else:
                values.append(value)
        return values

    join = get
    join_native = get

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def maybe_throw(self, propagate: bool = True, callback: Any = None) -> None:
        for r in self.results:
            r.maybe_throw(propagate=propagate)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def revoke(self, connection: Any = None, terminate: bool = False, **kw: Any) -> None:
        for r in self.results:
            r.revoke(terminate=terminate)

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def iterate(self, timeout: float | None = None, propagate: bool = True, **kw: Any):
        for r in self.results:
            yield r.get(timeout=timeout, propagate=propagate, **kw)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group(), in call order; save() keeps it for GroupResult.restore()."""

    def __init__(self, id: str | None = None, results: list | None = None, parent: Any = None,
                 app: Any = None, **kw: Any) -> None:
        super().__init__(results or [], app=app)
        self.id, self.parent = id, parent

    def _tree(self) -> list:
        return [r._tree() if isinstance(r, GroupResult) else r.id for r in self.results]

    def save(self, backend: Any = None) -> GroupResult:
        self.app.backend.save_group(self.id, {"results": self._tree()})
        return self

    def delete(self, backend: Any = None) -> None:
        self.app.backend.delete_group(self.id)

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: Any = None) -> GroupResult | None:
        app = app or current_app()
        saved = app.backend.restore_group(id)
        if saved is None:
            return None

        def build(tree: list) -> list:
            return [GroupResult(None, build(t), app=app) if isinstance(t, list)
                    else AsyncResult(t, app=app) for t in tree]

        return cls(id, build(saved["results"]), app=app)

    @property
    def children(self) -> list:
        return self.results

    def as_tuple(self) -> tuple:
        """Celery's serialisable form: ((id, parent's form), [each result's form])."""
        parent = self.parent
        return ((self.id, parent.as_tuple() if parent is not None else None),
                [r.as_tuple() for r in self.results])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(str(r) for r in self.results)}]>"


class BackendMeta:
    """Celery's result-backend reads on `app.backend` (the store mixes this in): a task's
    state and meta, as AsyncResult sees them."""

    app: Any

    def get_state(self, task_id: str) -> str:
        return AsyncResult(task_id, app=self.app).state

    def store_result(self, task_id: str, result: Any, state: str,
                     traceback: str | None = None, request: Any = None, **_celery: Any) -> Any:
        """Write a task's state and result (Celery's backend.store_result), e.g. for a task
        run elsewhere. A task waiting in the queue or held by a worker is refused: its state
        is the worker's to write (overwriting it would take the job away from the queue)."""
        from supervisor.native.serial import dumps, dumps_result, exception_to_dict, storable_text

        traceback = storable_text(traceback)
        if isinstance(result, BaseException):
            encoded = dumps(exception_to_dict(result))
        else:
            encoded = dumps_result(result)
        name = getattr(request, "task", None) or ""
        if not self._store_result(str(task_id), name, state, encoded, traceback,
                                  state in states.READY_STATES):
            raise ValueError(f"store_result: task {task_id} is waiting or running in the native "
                             "queue; its worker writes its state")
        return result

    def _store_result(self, task_id: str, name: str, state: str, encoded: str,
                      traceback: str | None, final: bool) -> bool:
        raise NotImplementedError

    def get_task_meta(self, task_id: str, cache: bool = True) -> dict:
        result = AsyncResult(task_id, app=self.app)
        return {"task_id": task_id, "status": result.state, "result": result.result,
                "traceback": result.traceback, "date_done": result.date_done,
                "children": [], "name": result.name, "args": result.args,
                "kwargs": result.kwargs, "retries": result.retries}

