"""Exceptions of the native worker, named like Celery's so user code can catch them."""

from __future__ import annotations


class NativeError(Exception):
    """Base class of this package's errors."""


class ConfigError(NativeError):
    """Bad configuration: reported as one line, exit code 2."""


class EncodeError(NativeError, TypeError):
    """Arguments or a result that JSON cannot carry."""


class DecodeError(NativeError, ValueError):
    """A job's stored arguments that could not be decoded (kombu's DecodeError)."""


class NotRegistered(NativeError, KeyError):
    """A task name the worker does not know."""

    def __str__(self) -> str:
        return f"task {self.args[0]!r} is not registered"


class TimeoutError(NativeError, TimeoutError):  # Celery exports this name
    """AsyncResult.get() gave up waiting."""


class Retry(NativeError):
    """Raised by Task.retry(): the worker re-queues the task instead of failing it."""

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: float | None = None) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message or "Retry", exc, when)

    def __str__(self) -> str:
        if self.exc is not None:
            return f"Retry in {self.when}s: {self.exc!r}"
        return f"Retry in {self.when}s"


RetryTaskError = Retry


class MaxRetriesExceededError(NativeError):
    """Task.retry() was called with no retries left and no exception to re-raise."""


class TaskRevokedError(NativeError):
    """The task was revoked (or expired) before or while it ran."""


class TimeLimitExceeded(NativeError):
    """The task ran past its hard time limit."""


class SoftTimeLimitExceeded(NativeError):
    """Raised inside the task when its soft time limit passes."""


class WorkerLostError(NativeError):
    """The job's lease expired too many times: its workers keep dying on it (poison pill)."""


class Ignore(NativeError):
    """Raised by a task to finish without storing a state."""


class Reject(NativeError):
    """Raised by a task to refuse its message: requeue=True puts it back in the queue,
    otherwise it is dropped (stored as FAILURE, so the refusal stays visible)."""

    def __init__(self, reason: object = None, requeue: bool = False) -> None:
        self.reason, self.requeue = reason, requeue
        super().__init__(reason, requeue)


class ChordError(NativeError):
    """A chord's body did not run because a task in its header failed."""


class ImproperlyConfigured(NativeError):
    """A setting has a value that cannot work."""


class UnpickleableExceptionWrapper(Exception):
    """A task's exception whose class could not be rebuilt from its stored arguments (its
    `__init__` refuses them). It keeps what was stored: the class's module and name, the
    arguments and their text. The rebuilt object is also an instance of the original class
    when that class can be imported, so `except ThatError` still catches it."""

    def __init__(self, exc_module: str, exc_cls_name: str, exc_args: tuple,
                 text: str | None = None) -> None:
        self.exc_module, self.exc_cls_name = exc_module, exc_cls_name
        self.exc_args = tuple(exc_args)
        self.text = text if text is not None else ", ".join(map(str, self.exc_args))
        Exception.__init__(self, exc_module, exc_cls_name, self.exc_args, self.text)

    def __str__(self) -> str:
        return f"{self.exc_cls_name}({', '.join(map(repr, self.exc_args))})"

    def __reduce__(self) -> tuple:
        return (UnpickleableExceptionWrapper,
                (self.exc_module, self.exc_cls_name, self.exc_args, self.text))

    def restore(self) -> BaseException:
        """The original exception, built without calling its `__init__`."""
        from supervisor.native.serial import exception_from_dict

        return exception_from_dict({"exc_module": self.exc_module, "exc_type": self.exc_cls_name,
                                    "exc_message": list(self.exc_args)}, wrap=False)
