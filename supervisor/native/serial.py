"""JSON in and out: arguments are checked at .delay() time, exceptions travel as plain data.

Celery's JSON types (datetime, date, time, UUID, Decimal, bytes) travel in kombu's envelope,
{"__type__": "datetime", "__value__": "2026-01-01T00:00:00"}, so rows written by either side
read the same. Plain values never reach the hooks below: they cost nothing.

PostgreSQL's jsonb refuses three things Python's JSON has: a NUL character in a string, a lone
surrogate, and NaN/Infinity. Values holding them travel in two envelopes of our own ("str":
the UTF-8 bytes in base64; "float": "nan", "inf" or "-inf"), so they come back exactly as sent
instead of failing the write (a result the worker could not store held up every other one).
"""

from __future__ import annotations

import base64
import builtins
import importlib
import json
import math
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from supervisor.native.exceptions import EncodeError, UnpickleableExceptionWrapper


def _envelope(kind: str, value: Any) -> dict:
    return {"__type__": kind, "__value__": value}


def encode_extra(value: Any) -> Any:
    """json.dumps(default=...): the extra types Celery's JSON serializer carries."""
    if isinstance(value, datetime):  # before date: a datetime is a date
        return _envelope("datetime", value.isoformat())
    if isinstance(value, date):
        return _envelope("date", value.isoformat())
    if isinstance(value, time):
        return _envelope("time", value.isoformat())
    if isinstance(value, Decimal):
        return _envelope("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return _envelope("uuid", {"hex": value.hex})
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if b"\x00" in raw:  # jsonb holds no NUL (module docstring)
            return _envelope("base64", base64.b64encode(raw).decode("ascii"))
        try:
            return _envelope("bytes", raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _envelope("base64", base64.b64encode(raw).decode("ascii"))
    if hasattr(value, "as_tuple"):  # a result handle returned by a task, as Celery sends it
        return value.as_tuple()
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):
        # a pydantic model passed by the caller: its JSON form (a pydantic=True task
        # validates it back into the model)
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_DECODERS = {
    "datetime": datetime.fromisoformat,
    "date": lambda v: datetime.fromisoformat(v).date(),
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda v: uuid.UUID(**v) if isinstance(v, dict) else uuid.UUID(v),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v.encode("ascii")),
    "str": lambda v: base64.b64decode(v.encode("ascii")).decode("utf-8", "surrogatepass"),
    "float": float,
}


def _object_hook(obj: dict) -> Any:
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        decoder = _DECODERS.get(obj["__type__"])
        if decoder is not None:
            try:
                return decoder(obj["__value__"])
            except Exception:  # noqa: BLE001 - a caller's own dict shaped like an envelope
                pass  # comes back as it was sent; it once crashed the worker that read it
    return obj


# built once: json.dumps(default=) rebuilds; allow_nan=False so that NaN is found, not written
_ENCODER = json.JSONEncoder(default=encode_extra, allow_nan=False)


def dumps(value: Any) -> str:
    """json.dumps with Celery's extra types, as text PostgreSQL's jsonb accepts."""
    try:
        text = _ENCODER.encode(value)
    except ValueError:  # NaN or Infinity somewhere (_storable raises again for a cycle)
        return _ENCODER.encode(_storable(value, set()))
    # a NUL or a surrogate (lone or half of a pair) shows as an escape: look closer; plain
    # text and astral characters in pairs come back from _storable unchanged
    if "\\u" in text and ("\\u0000" in text or "\\ud" in text):
        return _ENCODER.encode(_storable(value, set()))
    return text


def storable(text: str) -> bool:
    """Whether PostgreSQL can hold this string (text and jsonb hold no NUL, no surrogate)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str | None) -> str | None:
    """Free text (a traceback) as PostgreSQL can hold it: NUL and lone surrogates escaped
    the way repr() shows them. Not reversible; for values use dumps(), which is."""
    if text is None or storable(text):
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _storable(value: Any, path: set) -> Any:
    """The value with what jsonb refuses put in envelopes (see the module docstring)."""
    if isinstance(value, str):
        if storable(value):
            return value
        return _envelope("str", base64.b64encode(
            value.encode("utf-8", "surrogatepass")).decode("ascii"))
    if isinstance(value, float):
        return value if math.isfinite(value) else _envelope("float", repr(float(value)))
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, (list, tuple, dict)):
        if id(value) in path:
            raise ValueError("Circular reference detected")
        path.add(id(value))
        try:
            if isinstance(value, dict):
                for key in value:
                    if isinstance(key, str) and not storable(key):
                        raise ValueError(f"key {key!r} holds a NUL or a lone surrogate")
                return {key: _storable(item, path) for key, item in value.items()}
            return [_storable(item, path) for item in value]
        finally:
            path.discard(id(value))
    return _storable(encode_extra(value), path)


def loads(text: str | bytes) -> Any:
    """json.loads turning Celery's typed envelopes back into their values."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8")
    return json.loads(text, object_hook=_object_hook)


_EXTRA = (date, time, Decimal, uuid.UUID, bytes, bytearray)


def _culprit(value: Any, where: str) -> str | None:
    """The path of the first value JSON cannot carry, e.g. "args[1]['when']"."""
    if value is None or isinstance(value, (str, int, float, bool, *_EXTRA)):
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _culprit(item, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} key {key!r} ({type(key).__name__})"
            if not storable(key):
                return f"{where} key {key!r} (PostgreSQL stores no NUL or lone surrogate)"
            found = _culprit(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    return f"{where} = {type(value).__name__}"


def dumps_call(task_name: str, args: Any, kwargs: Any) -> tuple[str, str]:
    """Serialise a call's arguments, or raise EncodeError naming the culprit."""
    args = list(args or ())
    kwargs = dict(kwargs or {})
    try:
        return dumps(args), dumps(kwargs)
    except (TypeError, ValueError):
        culprit = _culprit(args, "args") or _culprit(kwargs, "kwargs") or "an argument"
        raise EncodeError(
            f"{task_name}: {culprit} is not JSON-serialisable (the native queue carries JSON only)"
        ) from None


def dumps_result(value: Any) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError):
        raise EncodeError(
            f"result is not JSON-serialisable: {_culprit(value, 'result') or type(value).__name__}"
        ) from None


def exception_to_dict(exc: BaseException) -> dict:
    args = []
    for arg in exc.args:
        try:
            dumps(arg)
            args.append(arg)
        except (TypeError, ValueError):
            args.append(repr(arg))
    return {
        "exc_type": type(exc).__qualname__,
        "exc_module": type(exc).__module__,
        "exc_message": args,
    }


def _find_class(module: str, name: str) -> type | None:
    try:
        obj: Any = builtins if module == "builtins" else importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def exception_from_dict(data: dict, wrap: bool = True) -> BaseException:
    """Rebuild the exception; an unimportable class becomes a look-alike of the same name.
    A class whose `__init__` refuses its own stored arguments comes back as an
    UnpickleableExceptionWrapper that is also an instance of that class (wrap=False: the
    class itself, its `__init__` skipped)."""
    name = data.get("exc_type", "Exception")
    module = data.get("exc_module", "builtins")
    args = data.get("exc_message", [])
    if not isinstance(args, (list, tuple)):
        args = [args]
    cls = _find_class(module, name)
    if cls is None:
        cls = type(name.rsplit(".", 1)[-1], (Exception,), {"__module__": module})
    try:
        return cls(*args)
    except Exception:
        kind = _wrapper_class(cls) if wrap else cls
        exc = kind.__new__(kind)
        exc.args = tuple(args)
        if wrap:
            exc.exc_module, exc.exc_cls_name = module, name
            exc.exc_args, exc.text = tuple(args), ", ".join(map(str, args))
        return exc


_WRAPPERS: dict[type, type] = {}


def _wrapper_class(cls: type) -> type:
    """UnpickleableExceptionWrapper and `cls` at once (one class per original, cached)."""
    kind = _WRAPPERS.get(cls)
    if kind is None:
        try:
            kind = type(cls.__name__, (UnpickleableExceptionWrapper, cls),
                        {"__module__": cls.__module__, "__init__": Exception.__init__})
        except TypeError:  # incompatible layouts: the wrapper alone
            kind = UnpickleableExceptionWrapper
        _WRAPPERS[cls] = kind
    return kind
