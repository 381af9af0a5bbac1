"""`start-all init TEMPLATE [DIR]`: copy a template set into a project.

Nothing is overwritten unless --force: when a file exists, nothing at all is written.
Exit codes: 0 written, 1 files exist (nothing written), 2 unknown template or bad directory.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib.resources import files
from pathlib import Path

EXIT_EXISTS, EXIT_BAD_INPUT = 1, 2
DJANGO_COMMON = {
    "Dockerfile": "Dockerfile",
    ".dockerignore": "dockerignore",
    ".env.example": "env.example",
    "gunicorn.conf.py": "gunicorn.conf.py",
    "{settings}/start_all_settings.py": "start_all_settings.py",
}
# template name -> {destination (relative to DIR): source (relative to templates/)}
TEMPLATES: dict[str, dict[str, str]] = {
    "django-qcluster": {"Procfile": "procfiles/django-qcluster.Procfile", **DJANGO_COMMON},
    "django-native": {"Procfile": "procfiles/django-native.Procfile", **DJANGO_COMMON},
    "django-celery": {"Procfile": "procfiles/django-celery.Procfile", **DJANGO_COMMON},
    "fastapi-native": {
        "Procfile": "procfiles/fastapi-native.Procfile",
        "Dockerfile": "Dockerfile",
        ".dockerignore": "dockerignore",
        ".env.example": "env.example",
    },
}
SETTINGS_IN_MANAGE = re.compile(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]")


def template_file(source: str) -> bytes:
    """A template's bytes, from the installed package (works from a wheel, too)."""
    return files("supervisor.kit").joinpath("templates", *source.split("/")).read_bytes()


def settings_package(project: Path) -> str:
    """The folder of the Django settings module manage.py names, else the project itself."""
    manage = project / "manage.py"
    found = SETTINGS_IN_MANAGE.search(manage.read_text()) if manage.is_file() else None
    if found and "." in found.group(1):
        package = found.group(1).rpartition(".")[0].replace(".", "/")
        if (project / package).is_dir():
            return package
    return "."


def plan(template: str, project: Path) -> dict[Path, str]:
    package = settings_package(project)
    return {
        project / dest.format(settings=package): source
        for dest, source in TEMPLATES[template].items()
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="start-all init",
        description="Copy a template set (Procfile, Dockerfile, ...) into a project.",
        epilog=f"Templates: {', '.join(TEMPLATES)}. Exit: 0 written, 1 files exist, 2 bad input.",
    )
    p.add_argument("template", help="one of: " + ", ".join(TEMPLATES))
    p.add_argument("dir", nargs="?", default=".", type=Path, help="project directory (.)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.template not in TEMPLATES:
        print(
            f"start-all init: unknown template {args.template!r} "
            f"(known: {', '.join(TEMPLATES)})",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    project: Path = args.dir
    if project.exists() and not project.is_dir():
        print(f"start-all init: {project} is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    targets = plan(args.template, project)
    existing = [path for path in targets if path.exists()]
    if existing and not args.force:
        names = ", ".join(str(path) for path in existing)
        print(f"start-all init: not overwriting {names} (use --force)", file=sys.stderr)
        return EXIT_EXISTS
    for path, source in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(template_file(source))
        print(f"wrote {path}")
    print(f"next: review the files, then `start-all check {project}`")
    return 0
