"""`start-all init`: template sets copied into a project, never over existing files."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from supervisor.kit.init import TEMPLATES
from tests.conftest import ROOT
from tests.kit.conftest import kit_env, start_all


def django_project(path):
    (path / "mysite").mkdir(parents=True)
    (path / "mysite" / "__init__.py").write_text("")
    (path / "manage.py").write_text(
        'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")\n'
    )
    return path


def test_init_writes_the_set_and_lists_it(tmp_path):
    project = django_project(tmp_path / "p")
    result = start_all(project, "init", "django-qcluster")
    assert result.returncode == 0, result.stderr
    written = [
        line.removeprefix("wrote ") for line in result.stdout.splitlines() if "wrote" in line
    ]
    expected = ["Procfile", "Dockerfile", ".dockerignore", ".env.example", "gunicorn.conf.py"]
    assert sorted(written) == sorted(expected)
    # the settings edit is a next step, naming the settings module manage.py names
    assert "at the end of mysite/settings.py" in result.stdout
    assert "start_all_settings(globals())" in result.stdout
    assert (project / "Procfile").read_text() == (
        ROOT / "templates" / "procfiles" / "django-qcluster.Procfile"
    ).read_text()
    assert 'ENTRYPOINT ["start-all"]' in (project / "Dockerfile").read_text()


def test_init_keeps_existing_files_and_writes_its_version_beside(tmp_path):
    project = django_project(tmp_path / "p")
    (project / "Procfile").write_text("web: mine\n")
    (project / "Dockerfile").write_text("FROM python:3.12\n")
    result = start_all(project, "init", "django-native", "--diff")
    assert result.returncode == 0, result.stderr
    assert (project / "Procfile").read_text() == "web: mine\n"  # never overwritten
    assert (project / "Dockerfile").read_text() == "FROM python:3.12\n"
    template = (ROOT / "templates" / "procfiles" / "django-native.Procfile").read_text()
    assert (project / "Procfile.start-all").read_text() == template
    assert (project / ".dockerignore").is_file()  # what was missing is written
    assert "kept " in result.stdout and "Procfile.start-all" in result.stdout
    assert "+worker: python manage.py native_worker" in result.stdout  # the diff
    assert "review `diff -u Procfile Procfile.start-all`" in result.stdout
    again = start_all(project, "init", "django-native")  # twice: nothing new, nothing lost
    assert again.returncode == 0 and "unchanged " in again.stdout
    assert (project / "Procfile").read_text() == "web: mine\n"
    forced = start_all(project, "init", "django-native", "--force")
    assert forced.returncode == 0
    assert "native_worker" in (project / "Procfile").read_text()


def test_fastapi_procfile_has_a_release_line_only_with_alembic(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert start_all(bare, "init", "fastapi-native").returncode == 0
    text = (bare / "Procfile").read_text()
    assert not any(line.startswith("release:") for line in text.splitlines())
    with_alembic = tmp_path / "alembic"
    with_alembic.mkdir()
    (with_alembic / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    assert start_all(with_alembic, "init", "fastapi-native").returncode == 0
    text = (with_alembic / "Procfile").read_text()
    assert "release: start-all migrate -- alembic upgrade head" in text.splitlines()
    assert "--timeout-graceful-shutdown 7" in text  # the installed uvicorn has it


def test_fastapi_procfile_leaves_out_flags_an_old_pinned_uvicorn_lacks(tmp_path):
    (tmp_path / "requirements.txt").write_text("fastapi\nuvicorn==0.23.2\n")
    assert start_all(tmp_path, "init", "fastapi-native").returncode == 0
    web = next(line for line in (tmp_path / "Procfile").read_text().splitlines()
               if line.startswith("web:"))
    assert "uvicorn $ASGI_APP" in web and "--timeout-graceful-shutdown" not in web
    assert start_all(tmp_path, "check", env=kit_env(tmp_path, ASGI_APP="x:app")).returncode == 0


def test_unknown_template_is_one_line_with_the_known_ones(tmp_path):
    result = start_all(tmp_path, "init", "rails")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown template 'rails'" in result.stderr
    for name in TEMPLATES:
        assert name in result.stderr


@pytest.mark.parametrize(
    "template, kinds, env",
    [
        ("django-qcluster", {"web": "gunicorn", "worker": "qcluster"}, {}),
        ("django-native", {"web": "gunicorn", "worker": "native"}, {}),
        (
            "django-celery",
            {"web": "gunicorn", "worker": "celery-worker", "beat": "celery-beat"},
            {"CELERY_APP": "mysite.celery:app"},
        ),
        (
            "fastapi-native",
            {"web": "uvicorn", "worker": "native"},
            {"ASGI_APP": "app.main:app", "WORKER_APP": "app.tasks:app"},
        ),
    ],
)
def test_every_template_procfile_is_understood_by_start_all(tmp_path, template, kinds, env):
    project = django_project(tmp_path / "p")
    (project / "alembic.ini").write_text("[alembic]\n")  # fastapi: a release line with it
    assert start_all(project, "init", template).returncode == 0
    plan = start_all(project, "--dry-run", "--json", env=kit_env(project, **env))
    assert plan.returncode == 0, plan.stderr
    import json

    data = json.loads(plan.stdout)
    assert {p["name"]: p["kind"] for p in data["processes"]} == kinds
    assert data["release"] is not None and "start-all migrate" in data["release"]["command"]


def test_init_works_from_an_installed_wheel(tmp_path):
    """Templates ship as package data: init needs no source checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(wheels.glob("start_all-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for template in TEMPLATES.values():
        for source in template.values():  # every template is package data
            assert f"supervisor/kit/templates/{source}" in names
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    project = tmp_path / "fresh"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from supervisor.kit.init import main; "
            "import supervisor; print(supervisor.__file__, file=sys.stderr); "
            "sys.exit(main(['fastapi-native', sys.argv[1]]))",
            str(project),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stderr  # the installed copy, not the checkout
    assert "uvicorn" in (project / "Procfile").read_text()


def test_the_example_uses_the_templates_unchanged():
    example = ROOT / "examples" / "koyeb"
    templates = ROOT / "templates"
    assert (example / "Dockerfile").read_text() == (templates / "Dockerfile").read_text()
    assert (example / ".dockerignore").read_text() == (templates / "dockerignore").read_text()
    assert (example / "gunicorn.conf.py").read_text() == (
        templates / "gunicorn.conf.py"
    ).read_text()
    assert "start_all_settings(globals())" in (example / "demo" / "settings.py").read_text()


def test_the_root_procfile_runs_the_example(tmp_path):
    import json

    plan = start_all(ROOT, "--dry-run", "--json", env=kit_env(tmp_path))
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    assert {p["name"]: p["kind"] for p in data["processes"]} == {
        "web": "gunicorn",
        "worker": "qcluster",
    }
    assert data["release"]["command"] == "cd examples/koyeb && start-all migrate --sync-schedules"


def test_a_project_made_from_the_template_passes_check_strict(tmp_path):
    project = django_project(tmp_path / "p")
    (project / "mysite" / "settings.py").write_text(
        'SECRET_KEY = "x"\nALLOWED_HOSTS = ["myapp.koyeb.app"]\n'
        'INSTALLED_APPS = ["django.contrib.contenttypes", "django_q"]\n'
        'MIDDLEWARE = ["supervisor.contrib.django.HealthMiddleware"]\n'
        "from supervisor.contrib.django import start_all_settings\n"
        "start_all_settings(globals())\n"
    )
    assert start_all(project, "init", "django-qcluster").returncode == 0
    url = "postgresql://app:pw@db.internal:5432/app"  # (a Supabase URL warns of pausing)
    result = start_all(project, "check", "--strict", env=kit_env(project, DATABASE_URL=url))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "0 error(s), 0 warning(s)"
