"""`start-all init KIND [DIR]`: add start-all's files to a project, new or existing.

A file that is missing is written. One that exists is never overwritten (unless --force):
start-all's version goes beside it as NAME.start-all, with a diff (--diff) to review. Then
the settings and code edits to make by hand are listed as next steps.
Exit codes: 0 done, 2 unknown kind or bad directory.

To add a kind or a platform: one row in KINDS or PLATFORMS (destination -> template), and
optionally a RENDERERS entry that adapts a template to the project found in DIR.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from supervisor.kit import platforms

EXIT_BAD_INPUT = 2
SIDE_SUFFIX = ".start-all"
DJANGO_COMMON = {
    "Dockerfile": "Dockerfile",
    ".dockerignore": "dockerignore",
    ".env.example": "env.example",
    "gunicorn.conf.py": "gunicorn.conf.py",
}
# kind -> {destination (relative to DIR): source (relative to templates/)}
KINDS: dict[str, dict[str, str]] = {
    "django-qcluster": {"Procfile": "procfiles/django-qcluster.Procfile", **DJANGO_COMMON},
    "django-native": {"Procfile": "procfiles/django-native.Procfile", **DJANGO_COMMON},
    "django-celery": {"Procfile": "procfiles/django-celery.Procfile", **DJANGO_COMMON},
    "django-tasks": {"Procfile": "procfiles/django-tasks.Procfile",
                     "{settings}/start_all_tasks.py": "start_all_tasks.py", **DJANGO_COMMON},
    "fastapi-native": {
        "Procfile": "procfiles/fastapi-native.Procfile",
        "Dockerfile": "Dockerfile",
        ".dockerignore": "dockerignore",
        ".env.example": "env.example",
    },
}
TEMPLATES = KINDS  # the older name
# platform -> {destination: source}, added by `--platform NAME` on top of the kind's files
PLATFORMS: dict[str, dict[str, str]] = {
    **{p.name: {p.config_file: p.template} for p in platforms.PLATFORMS.values()},
    "kubernetes": {"kubernetes/start-all.yaml": "kubernetes/start-all.yaml"},
}
# what to do by hand on each platform after init
PLATFORM_STEPS = {
    "koyeb": "koyeb.json: replace the repository, create the secrets database-url and "
    "secret-key, then create the service from it (docs/platforms.md)",
    "render": "render.yaml: rename the service, then New > Blueprint in Render's dashboard and "
    "set DATABASE_URL there",
    "fly": "fly.toml: set app and primary_region, then `fly launch --no-deploy` and "
    "`fly secrets set DATABASE_URL=... SECRET_KEY=...`",
    "railway": "railway.json: keep deploy.drainingSeconds above START_ALL_STOP_TIMEOUT + 0.5 s "
    "(Railway's default is 0 s); set DATABASE_URL and SECRET_KEY as service variables",
    "kubernetes": "kubernetes/start-all.yaml: set the image, create the secret myapp-env, "
    "`kubectl apply -f kubernetes/start-all.yaml`",
}
SETTINGS_IN_MANAGE = re.compile(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]")
UVICORN_GRACEFUL = " --timeout-graceful-shutdown 7"


def template_file(source: str) -> bytes:
    """A template's bytes, from the installed package (works from a wheel, too)."""
    return files("supervisor.kit").joinpath("templates", *source.split("/")).read_bytes()


def uvicorn_has_graceful_flag(project: Path) -> bool:
    """The uvicorn the image gets (a requirements pin, else the installed one) knows
    --timeout-graceful-shutdown (0.24 and later)."""
    from supervisor.kit.source import version, version_tuple

    found = version(project, "uvicorn")
    # not pinned nor installed: installed later from requirements, and the fastapi extra
    # needs uvicorn >= 0.29
    return found is None or version_tuple(found[0]) >= (0, 24)


def render_fastapi_procfile(text: str, project: Path) -> str:
    """Alembic only when the project has it; uvicorn flags the installed uvicorn knows."""
    if not (project / "alembic.ini").is_file():
        text = text.replace(
            "release: start-all migrate -- alembic upgrade head\n",
            "# no alembic.ini found: no release step. With schema migrations, add e.g.\n"
            "# release: start-all migrate -- alembic upgrade head\n",
        )
    if not uvicorn_has_graceful_flag(project):
        text = text.replace(UVICORN_GRACEFUL, "")  # uvicorn < 0.24 exits 2 on it
    return text


def render_qcluster_procfile(text: str, project: Path) -> str:
    """The app creates Schedule rows of its own (a data migration, say): the release's sync
    takes a row running the same function over instead of adding a second one."""
    from supervisor.kit.source import schedule_calls

    if next(schedule_calls(project), None) is not None:
        text = text.replace("start-all migrate --sync-schedules\n",
                            "start-all migrate --sync-schedules --adopt\n")
    return text


# template source -> function(text, project) adapting it to the project
RENDERERS: dict[str, Callable[[str, Path], str]] = {
    "procfiles/fastapi-native.Procfile": render_fastapi_procfile,
    "procfiles/django-qcluster.Procfile": render_qcluster_procfile,
}


def settings_package(project: Path) -> str:
    """The folder of the Django settings module manage.py names, else the project itself."""
    module = settings_module_name(project)
    if module and "." in module:
        package = module.rpartition(".")[0].replace(".", "/")
        if (project / package).is_dir():
            return package
    return "."


def settings_module_name(project: Path) -> str | None:
    manage = project / "manage.py"
    found = SETTINGS_IN_MANAGE.search(manage.read_text()) if manage.is_file() else None
    return found.group(1) if found else None


def plan(kind: str, project: Path, platform: str | None = None) -> dict[Path, str]:
    package = settings_package(project)
    wanted = {**KINDS[kind], **PLATFORMS.get(platform or "", {})}
    return {project / dest.format(settings=package): source for dest, source in wanted.items()}


def content(source: str, project: Path) -> bytes:
    data = template_file(source)
    render = RENDERERS.get(source)
    return render(data.decode(), project).encode() if render else data


def next_steps(
    kind: str, project: Path, side_files: list[Path], platform: str | None = None
) -> list[str]:
    steps = []
    if kind.startswith("django"):
        module = settings_module_name(project)
        settings = project / (module.replace(".", "/") + ".py") if module else None
        if settings is None or "start_all_settings" not in _read(settings):
            where = settings.relative_to(project) if settings else "settings.py"
            steps.append(
                f"at the end of {where}: `from supervisor.contrib.django import "
                "start_all_settings` and `start_all_settings(globals())` (keeps your "
                "DATABASES, CACHES and Q_CLUSTER; `start-all check` lists what it changes)"
            )
        steps.append("STATIC_ROOT set and whitenoise in MIDDLEWARE if the app has static files "
                     "(the Dockerfile runs collectstatic)")
    else:
        steps.append("wrap the ASGI app: `from supervisor.contrib.asgi import HealthMiddleware`"
                     "; `app = HealthMiddleware(app)`; set ASGI_APP and WORKER_APP in .env")
        steps.append("switch Celery imports to `from supervisor.native import ...` "
                     "(`start-all check` names each one left)")
    if not _mentions(project, "start-all"):
        steps.append("add start-all to requirements.txt (before it is on your index: a wheel "
                     "next to it, or a git URL; see docs/deploy.md)")
    for path in side_files:
        name = path.relative_to(project)
        steps.append(f"review `diff -u {name} {name}{SIDE_SUFFIX}` and merge or replace")
    if kind == "django-qcluster":
        steps.append("declare your periodic jobs in START_ALL_SCHEDULES; Schedule rows of your "
                     "own running the same function are taken over by `start-all schedules "
                     "sync --adopt` (the release line does it when init found such rows)")
    if platform:
        steps.append(PLATFORM_STEPS[platform])
    steps.append(f"`start-all check {project}`")
    return steps


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _mentions(project: Path, name: str) -> bool:
    return any(name in _read(p) for p in [*project.glob("requirements*.txt"),
                                         project / "pyproject.toml"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="start-all init",
        description="Add start-all's files (Procfile, Dockerfile, ...) to a project; "
        f"existing files are kept and start-all's version written beside as NAME{SIDE_SUFFIX}.",
        epilog=f"Kinds: {', '.join(KINDS)}. Exit: 0 done, 2 bad input.",
    )
    p.add_argument("kind", metavar="KIND", help="one of: " + ", ".join(KINDS))
    p.add_argument("dir", nargs="?", default=".", type=Path, help="project directory (.)")
    p.add_argument("--diff", action="store_true", help="print a diff for each existing file")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    if PLATFORMS:
        p.add_argument("--platform", choices=sorted(PLATFORMS), help="platform files too")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.kind not in KINDS:
        print(f"start-all init: unknown template {args.kind!r} (known: {', '.join(KINDS)})",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    project: Path = args.dir
    if project.exists() and not project.is_dir():
        print(f"start-all init: {project} is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    side_files = []
    for path, source in plan(args.kind, project, getattr(args, "platform", None)).items():
        data = content(source, project)
        if path.exists() and not args.force:
            if path.read_bytes() == data:
                print(f"unchanged {path}")
                continue
            side = path.with_name(path.name + SIDE_SUFFIX)
            side.write_bytes(data)
            side_files.append(path)
            print(f"kept {path}; start-all's version: {side}")
            if args.diff:
                sys.stdout.writelines(difflib.unified_diff(
                    _read(path).splitlines(keepends=True), data.decode().splitlines(True),
                    str(path), str(side)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path}")
    print("next steps:")
    steps = next_steps(args.kind, project, side_files, getattr(args, "platform", None))
    for number, step in enumerate(steps, start=1):
        print(f"  {number}. {step}")
    return 0
