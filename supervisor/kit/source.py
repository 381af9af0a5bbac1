"""Reading a project's source without running it: where a setting is assigned, which modules
a file imports, which version of a package the image will get."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SKIP_DIRS = {".git", ".venv", "venv", "env", "node_modules", "__pycache__", "data", "static",
             "staticfiles", "build", "dist", ".tox", ".mypy_cache", ".ruff_cache"}


def parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


def python_files(root: Path) -> Iterator[Path]:
    """The project's own .py files (no virtualenvs, caches or collected static files)."""
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        if path.is_dir() and path.name not in SKIP_DIRS and not path.name.startswith("."):
            if (path / "pyvenv.cfg").exists():
                continue
            yield from python_files(path)
        elif path.suffix == ".py":
            yield path


def module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Assignment:
    path: Path
    line: int
    value: ast.expr | None  # None for a star import that brought the name in
    derived: bool  # the value refers to the name itself ({**Q_CLUSTER, ...}, X.update)
    helper_call: bool = False  # start_all_settings(globals()), which may change it


def _resolve_from(root: Path, path: Path, node: ast.ImportFrom) -> Path | None:
    if node.level:
        package = path.parent
        for _ in range(node.level - 1):
            package = package.parent
        base = package.joinpath(*(node.module or "").split(".")) if node.module else package
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None
    return module_file(root, node.module or "")


def assignments(root: Path, path: Path, name: str, _seen: set | None = None) -> list[Assignment]:
    """Top-level assignments of NAME in the order they run: in the file itself and in the
    project modules it star-imports (`from .base import *`), followed in place."""
    seen = _seen if _seen is not None else set()
    if path in seen:
        return []
    seen.add(path)
    tree = parse(path)
    if tree is None:
        return []
    found: list[Assignment] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            target = _resolve_from(root, path, node)
            if target is not None:
                found += assignments(root, target, name, seen)
        targets: list[ast.expr] = []
        value = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and target.id == name:
                derived = isinstance(node, ast.AugAssign) or any(
                    isinstance(n, ast.Name) and n.id == name for n in ast.walk(value)
                ) if value is not None else False
                found.append(Assignment(path, node.lineno, value, derived))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            # start_all_settings(globals()) may change any of them: recorded, not replaced
            func = node.value.func
            called = getattr(func, "id", getattr(func, "attr", ""))
            if called == "start_all_settings":
                found.append(Assignment(path, node.lineno, node.value, True, True))
    return found


def literal_keys(value: ast.expr | None) -> dict[str, object]:
    """The literal key: value pairs of a dict display (others left out)."""
    if not isinstance(value, ast.Dict):
        return {}
    pairs = {}
    for key, item in zip(value.keys, value.values, strict=True):
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            try:
                pairs[key.value] = ast.literal_eval(item)
            except (ValueError, SyntaxError, TypeError):
                pairs[key.value] = ast.unparse(item)
    return pairs


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # "celery.result"
    names: tuple[str, ...]  # ("AsyncResult",); () for `import celery.result`


def imports_of(root: Path, package: str) -> Iterator[Import]:
    """Every `import package...` / `from package... import ...` in the project's code."""
    for path in python_files(root):
        tree = parse(path)
        if tree is None:
            continue
        for node in unconditional_nodes(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module and (
                node.module == package or node.module.startswith(package + ".")
            ):
                yield Import(path, node.lineno, node.module, tuple(a.name for a in node.names))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        yield Import(path, node.lineno, alias.name, ())


REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([\w.]+)")


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def pinned(root: Path, distribution: str) -> tuple[str, Path, int] | None:
    """`distribution==X` in the project's requirements*.txt: (version, file, line)."""
    wanted = distribution.lower().replace("_", "-")
    for path in sorted(root.glob("requirements*.txt")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, start=1):
            match = REQUIREMENT.match(line)
            if match and match.group(1).lower().replace("_", "-") == wanted:
                return match.group(2), path, number
    return None


def version(root: Path, distribution: str) -> tuple[str, str] | None:
    """The version the image will run: a requirements pin first, else the installed one.
    (version, where it was found)."""
    pin = pinned(root, distribution)
    if pin:
        return pin[0], f"{pin[1].name}:{pin[2]}"
    try:
        return metadata.version(distribution), "installed"
    except metadata.PackageNotFoundError:
        return None


def requires(root: Path, distribution: str) -> bool:
    """The project lists DISTRIBUTION in a requirements file or pyproject.toml."""
    pattern = re.compile(rf"(^|[\s\"'])({re.escape(distribution)})\b", re.I | re.M)
    for path in [*root.glob("requirements*.txt"), root / "pyproject.toml"]:
        if path.is_file() and pattern.search(path.read_text(encoding="utf-8", errors="replace")):
            return True
    return False


def first_line(path: Path, pattern: str) -> int:
    """The number of the first line matching the regex, 0 if none."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    regex = re.compile(pattern)
    return next((n for n, line in enumerate(lines, start=1) if regex.search(line)), 0)


@dataclass(frozen=True)
class ScheduleCall:
    path: Path
    line: int
    func: str


SCHEDULE_CALLS = {"create", "get_or_create", "update_or_create", "schedule"}


def schedule_calls(root: Path) -> Iterator[ScheduleCall]:
    """Calls that create django-q2 Schedule rows in code (a data migration, apps.ready):
    `Schedule.objects.create(func="app.tasks.job", ...)`, `schedule("app.tasks.job", ...)`."""
    for path in python_files(root):
        tree = parse(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            called = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if called not in SCHEDULE_CALLS:
                continue
            func = next((k.value for k in node.keywords if k.arg == "func"), None)
            if func is None and called == "schedule" and node.args:
                func = node.args[0]
            if isinstance(func, ast.Constant) and isinstance(func.value, str):
                if called != "schedule" and "Schedule" not in ast.unparse(node.func):
                    continue
                yield ScheduleCall(path, node.lineno, func.value)


def _module_path(root: Path, module: str) -> Path | None:
    """The project file of a dotted module name, or of its closest project parent package
    (`from pkg.mod import name` where name is a function: pkg/mod.py)."""
    parts = module.split(".")
    while parts:
        found = module_file(root, ".".join(parts))
        if found is not None:
            return found
        parts.pop()
    return None


def _selects_celery(test: ast.expr) -> bool:
    return "celery" in ast.unparse(test).lower()


def unconditional_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except those in the body of an `if` that picks Celery at run time
    (`if settings.TASK_QUEUE == "celery":`): that branch is the Celery variant's, on purpose."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _selects_celery(node.test):
            todo += [node.test, *node.orelse]
        else:
            todo += list(ast.iter_child_nodes(node))


def _imported_modules(root: Path, path: Path, tree: ast.Module) -> Iterator[Path]:
    for node in unconditional_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = _module_path(root, alias.name)
                if found:
                    yield found
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(root, path, node) if node.level else _module_path(
                root, node.module or "")
            if base is not None:
                yield base
            for alias in node.names:  # `from pkg import module`
                dotted = f"{node.module}.{alias.name}" if node.module and not node.level else ""
                found = module_file(root, dotted) if dotted else None
                if found is None and node.level and base is not None:
                    folder = base.parent if base.name == "__init__.py" else None
                    candidate = folder / f"{alias.name}.py" if folder else None
                    found = candidate if candidate and candidate.is_file() else None
                if found:
                    yield found


def reachable(root: Path, entries: list[Path]) -> set[Path]:
    """The project files the entry files import, directly or not (packages' __init__ too)."""
    seen: set[Path] = set()
    todo = [p.resolve() for p in entries]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        init = path.parent / "__init__.py"
        if init.is_file() and path.parent.resolve() != root.resolve():
            todo.append(init.resolve())
        tree = parse(path)
        if tree is not None:
            todo += [p.resolve() for p in _imported_modules(root, path, tree)]
    return seen
