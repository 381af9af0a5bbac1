"""`start-all check [DIR]`: diagnose a project before it is deployed.

Reads the Procfile, the environment (plus DIR/.env), the project's source and, for Django,
the settings module (imported in a child process, never django.setup()) and django-q2's rows
when the database is reachable. Prints one line per finding, with the file and line to blame
and how to fix it:

    error: ...     will break or run tasks twice
    warning: ...   works, but wastes memory or fails under load / on the platform
    ok: ...        what was understood (and what start_all_settings() changes)

Exit codes: 0 no errors (warnings allowed unless --strict), 1 errors found, 2 bad input.

The checks live in their own modules and are registered below, one line each (see
supervisor/kit/findings.py for how to write one).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from supervisor import commands, profiles
from supervisor.kit import check_django, check_stack, platforms, tasks_check
from supervisor.kit.findings import CHECKS, Finding, Process, Project, register
from supervisor.procfile import ProcfileError, load_env_file, load_procfile

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2

# -- the registry: every check, in the order its findings are printed ----------------------
register(check_stack.check_processes)
register(check_stack.check_release_tools)
register(check_stack.check_uvicorn)
register(check_stack.check_celery_imports)
DJANGO_CHECKS = [
    check_django.check_settings_changes,
    check_django.check_basics,
    check_django.check_q_cluster,
    check_django.check_databases,
    check_django.check_static_files,
    check_django.check_schedules,
    check_django.check_database_rows,
]
for _check in DJANGO_CHECKS:  # they run only when a Django settings module was read
    register(_check)
register(check_stack.check_database_url)
# other modules: register(module.check_function)
register(lambda project: [Finding(*f) for f in platforms.check(project.root, project.environ)])
register(lambda project: [Finding(*f) for f in tasks_check.check(project.root, project.environ)])


def read_processes(project: Path) -> tuple[list[Process], list[Finding]]:
    path = project / "Procfile"
    if not path.is_file():
        return [], [Finding("warning", "no Procfile: start-all will guess the processes",
                            fix="`start-all init TEMPLATE` writes one")]
    try:
        lines = load_procfile(path)
    except ProcfileError as error:
        return [], [Finding("error", str(error))]
    numbers = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = re.match(r"\s*([\w.-]+)\s*:", text)
        if match and not text.lstrip().startswith("#"):
            numbers.setdefault(match.group(1), number)
    processes, findings = [], []
    for name, line in lines.items():
        try:
            program = commands.parse(line).program
        except commands.CommandError as error:
            findings.append(Finding("error", f"process {name!r}: {error}",
                                    f"Procfile:{numbers.get(name, 0)}"))
            continue
        processes.append(Process(name, line, profiles.detect(program).kind, numbers.get(name, 0)))
    described = ", ".join(f"{p.name} ({p.kind})" for p in processes)
    findings.append(Finding("ok", f"Procfile: {described}"))
    return processes, findings


def diagnose(root: Path, environ: dict[str, str]) -> list[Finding]:
    processes, findings = read_processes(root)
    project = Project(root, environ, processes)
    module = check_django.settings_module(root, environ)
    if module:
        settings = check_django.load_settings(root, module, environ)
        if isinstance(settings, str):
            findings.append(Finding("error", settings,
                                    fix="run `python -c 'import MODULE'` to see why"))
        else:
            findings.append(Finding("ok", f"Django settings: {module}"))
            project.settings, project.settings_module = settings, module
    for check in CHECKS:
        if check in DJANGO_CHECKS and project.settings is None:
            continue
        try:
            findings += check(project)
        except Exception as error:  # a check's own bug must not hide the other findings
            findings.append(Finding(
                "warning", f"check {check.__name__} failed: {type(error).__name__}: {error}"))
    return findings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="start-all check",
        description=__doc__.split("\n")[0],
        epilog="Exit: 0 no errors, 1 errors (or warnings with --strict), 2 bad input.",
    )
    p.add_argument("dir", nargs="?", default=".", type=Path, help="project directory (.)")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    project: Path = args.dir
    if not project.is_dir():
        print(f"start-all check: {project} is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    environ = dict(os.environ)
    if (project / ".env").is_file():
        try:
            environ = {**load_env_file(project / ".env"), **environ}
        except ProcfileError as error:
            print(f"start-all check: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    findings = diagnose(project, environ)
    for finding in findings:
        print(finding)
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    print(f"{errors} error(s), {warnings} warning(s)")
    return EXIT_PROBLEMS if errors or (args.strict and warnings) else EXIT_OK
