"""The adoption path of docs/deploy.md ("Adopting start-all in an existing project"), step by
step, applied to a copy of examples/existing-django or examples/existing-fastapi. The tests
run these exactly as a user following the guide would make the edits."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
IGNORED = shutil.ignore_patterns("var", "staticfiles", "reports", "__pycache__", "*.start-all")

# docs/deploy.md, step 3: the two lines at the end of settings.py
SETTINGS_LINES = """
from supervisor.contrib.django import start_all_settings  # noqa: E402

start_all_settings(globals())
"""
# docs/deploy.md, step 4 (optional): the periodic job as code, same function as the app's row
SCHEDULES = """
START_ALL_SCHEDULES = [
    {"name": "weekly-digest", "func": "newsletter.tasks.send_digest", "cron": "0 7 * * 1"},
]
"""
# docs/deploy.md, FastAPI: the Celery switch
CELERY_SWITCH = {
    "app/worker.py": [("from celery import Celery", "from supervisor.native import Celery")],
    "app/main.py": [
        ("from celery.result import AsyncResult\n", ""),
        ("from app.worker import celery_app\n",
         "from app.worker import celery_app\n"
         "from supervisor.contrib.asgi import HealthMiddleware\n"
         "from supervisor.native import AsyncResult\n"),
    ],
}
HEALTH_WRAP = "\napp = HealthMiddleware(app)\n"


def copy_example(name: str, into: Path) -> Path:
    project = into / name
    shutil.copytree(EXAMPLES / name, project, ignore=IGNORED)
    return project


def take_over(project: Path, *names: str) -> None:
    """Step 2: after reviewing `diff -u NAME NAME.start-all`, use start-all's version."""
    for name in names:
        (project / f"{name}.start-all").replace(project / name)


def add_writable_dir(project: Path, directory: str) -> None:
    """Step 2: the app writes to DIRECTORY: one more word on the Dockerfile's line."""
    dockerfile = project / "Dockerfile"
    text = dockerfile.read_text()
    assert 'ARG WRITABLE_DIRS="data"' in text
    dockerfile.write_text(text.replace('ARG WRITABLE_DIRS="data"',
                                       f'ARG WRITABLE_DIRS="data {directory}"'))


def require_start_all(project: Path, extra: str) -> None:
    """Step 5: start-all in requirements.txt (a wheel next to it until it is on the index)."""
    path = project / "requirements.txt"
    path.write_text(path.read_text() + f"start-all[{extra}]\n")


def edit_django_settings(project: Path, schedules: bool = True) -> None:
    settings = project / "newsletter_site" / "settings.py"
    settings.write_text(settings.read_text() + (SCHEDULES if schedules else "") + SETTINGS_LINES)


def switch_celery_imports(project: Path) -> None:
    for name, replacements in CELERY_SWITCH.items():
        path = project / name
        text = path.read_text()
        for old, new in replacements:
            assert old in text, f"{old!r} not in {name}"
            text = text.replace(old, new)
        if name == "app/main.py":
            text += HEALTH_WRAP
        path.write_text(text)
