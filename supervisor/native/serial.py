"""JSON in and out: arguments are checked at .delay() time, exceptions travel as plain data."""

from __future__ import annotations

import builtins
import importlib
import json
from typing import Any

from supervisor.native.exceptions import EncodeError


def _culprit(value: Any, where: str) -> str | None:
    """The path of the first value JSON cannot carry, e.g. "args[1]['when']"."""
    if value is None or isinstance(value, (str, int, float, bool)):
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
        return json.dumps(args), json.dumps(kwargs)
    except (TypeError, ValueError):
        culprit = _culprit(args, "args") or _culprit(kwargs, "kwargs") or "an argument"
        raise EncodeError(
            f"{task_name}: {culprit} is not JSON-serialisable (the native queue carries JSON only)"
        ) from None


def dumps_result(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise EncodeError(
            f"result is not JSON-serialisable: {_culprit(value, 'result') or type(value).__name__}"
        ) from None


def exception_to_dict(exc: BaseException) -> dict:
    args = []
    for arg in exc.args:
        try:
            json.dumps(arg)
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


def exception_from_dict(data: dict) -> BaseException:
    """Rebuild the exception; an unimportable class becomes a look-alike of the same name."""
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
        exc = Exception(*args)
        return exc
