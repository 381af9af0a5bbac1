"""Schedules as code: validation, idempotent sync to django-q2 rows, the native beat shape."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from supervisor.kit.schedules import ScheduleError, load_entries, to_beat_schedule
from tests.conftest import wait_for
from tests.kit.conftest import kit_env, start_all

V1 = """
[[schedule]]
name = "a"
func = "bookings.tasks.cleanup_old_records"
cron = "0 3 * * *"
kwargs = { days = 30 }

[[schedule]]
name = "b"
func = "bookings.tasks.send_confirmation"
every = 300
args = [1]
"""
V2 = """
[[schedule]]
name = "a"
func = "bookings.tasks.cleanup_old_records"
cron = "30 4 * * *"
kwargs = { days = 30 }

[[schedule]]
name = "c"
func = "bookings.tasks.cleanup_old_records"
cron = "*/5 * * * *"
kwargs = { days = 7 }
"""
DUMP = """
import json
from django_q.models import Schedule
print(json.dumps([dict(id=s.id, name=s.name, func=s.func, type=s.schedule_type, cron=s.cron,
      minutes=s.minutes, args=s.args, kwargs=s.kwargs, next_run=s.next_run.isoformat())
      for s in Schedule.objects.order_by("name", "id")]))
"""


@pytest.mark.parametrize(
    "raw, message",
    [
        ([{"name": "x", "func": "a.b"}], "give exactly one of 'cron' or 'every'"),
        ([{"name": "x", "func": "a.b", "cron": "61 * * * *"}], "invalid cron expression"),
        ([{"name": "x", "func": "a.b", "cron": "* * * * * *"}], "invalid cron expression"),
        ([{"name": "x", "func": "nodots", "every": 60}], "'func' must be a dotted path"),
        ([{"name": "x", "func": "a.b", "every": -1}], "'every' must be a positive number"),
        ([{"name": "x", "func": "a.b", "every": 60, "args": [object()]}], "plain values"),
        ([{"name": "x", "func": "a.b", "every": 60, "when": 1}], "unknown key 'when'"),
        ([{"name": "x", "func": "a.b", "every": 60}] * 2, "'x' is defined twice"),
        ([{"func": "a.b", "every": 60}], "schedule #1: 'name' must be"),
        ("/nonexistent/schedules.toml", "cannot read schedules file"),
    ],
)
def test_invalid_entries_are_named_in_one_line(raw, message):
    with pytest.raises(ScheduleError) as error:
        load_entries(raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_same_list_in_the_native_workers_beat_schedule_shape(tmp_path):
    path = tmp_path / "schedules.toml"
    path.write_text(V1)
    beat = to_beat_schedule(load_entries(path))
    assert beat == {
        "a": {
            "task": "bookings.tasks.cleanup_old_records",
            "schedule": "0 3 * * *",
            "args": [],
            "kwargs": {"days": 30},
        },
        "b": {
            "task": "bookings.tasks.send_confirmation",
            "schedule": 300.0,
            "args": [1],
            "kwargs": {},
        },
    }
    # the native worker's own parser accepts it unchanged
    from supervisor.native.cron import parse

    parsed = {entry.name: entry for entry in parse(beat)}
    assert parsed["a"].schedule == "0 3 * * *" and parsed["a"].kwargs == {"days": 30}
    assert parsed["b"].schedule == 300.0 and parsed["b"].args == [1]


NATIVE_APP = """
import os
from supervisor.kit.schedules import load_entries, to_beat_schedule
from supervisor.native import Celery

app = Celery("kitbeat", broker=os.environ["DATABASE_URL"])
app.conf.beat_schedule = to_beat_schedule(load_entries(os.environ["SCHEDULES_FILE"]))


@app.task
def mark(tag, path):
    with open(path, "a") as f:
        f.write(tag + "\\n")
"""


def test_native_worker_fires_a_schedule_declared_as_code(tmp_path, pg_url):
    (tmp_path / "kitbeat.py").write_text(NATIVE_APP)
    marks = tmp_path / "marks"
    (tmp_path / "schedules.toml").write_text(
        textwrap.dedent(f"""
        [[schedule]]
        name = "tick"
        func = "kitbeat.mark"
        every = 1
        args = ["tick", "{marks}"]
    """)
    )
    env = kit_env(
        tmp_path,
        DATABASE_URL=pg_url,
        SCHEDULES_FILE=str(tmp_path / "schedules.toml"),
        PYTHONPATH=str(tmp_path),
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "supervisor.native", "worker", "-A", "kitbeat:app", "-c", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: marks.exists() and marks.read_text().count("tick") >= 2,
            30,
            "the schedule to fire twice in the native worker",
        )
    finally:
        worker.terminate()
        worker.wait(20)


@pytest.fixture
def q_project(example_project):
    """The example, its schedules read from a TOML file (START_ALL_SCHEDULES may be a path)."""
    (example_project / "demo" / "test_settings.py").write_text(
        "import os\nfrom demo.settings import *  # noqa\n"
        "START_ALL_SCHEDULES = os.environ['SCHEDULES_FILE']\n"
    )
    schedules = example_project / "schedules.toml"
    env = kit_env(
        example_project, DJANGO_SETTINGS_MODULE="demo.test_settings", SCHEDULES_FILE=str(schedules)
    )
    assert start_all(example_project, "migrate", env=env).returncode == 0
    return example_project, schedules, env


def shell(project, env, code: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-startup", "-v", "0", "-c", code],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rows(project, env) -> list[dict]:
    return json.loads(shell(project, env, DUMP))


def sync(project, env):
    return start_all(project, "schedules", "sync", env=env)


def test_sync_is_idempotent_follows_edits_and_leaves_other_rows_alone(q_project):
    project, schedules, env = q_project
    shell(
        project,
        env,
        "from django_q.models import Schedule\n"
        "Schedule.objects.create(name='hand-made', func='x.y', schedule_type='D')",
    )
    schedules.write_text(V1)

    first = sync(project, env)
    assert first.returncode == 0, first.stderr
    assert "2 created, 0 updated, 0 deleted, 0 unchanged" in first.stdout
    before = rows(project, env)
    assert [r["name"] for r in before] == ["hand-made", "start-all:a", "start-all:b"]
    a, b = before[1], before[2]
    assert (a["type"], a["cron"], a["kwargs"]) == ("C", "0 3 * * *", "{'days': 30}")
    assert a["next_run"].endswith("03:00:00+00:00")  # the next cron slot, not "now"
    assert (b["type"], b["minutes"], b["args"]) == ("I", 5, "(1,)")

    again = sync(project, env)  # a redeploy
    assert "0 created, 0 updated, 0 deleted, 2 unchanged" in again.stdout
    assert rows(project, env) == before  # same ids, same next runs: no duplicates

    schedules.write_text(V2)
    edited = sync(project, env)
    assert "1 created, 1 updated, 1 deleted, 0 unchanged" in edited.stdout
    after = {r["name"]: r for r in rows(project, env)}
    assert set(after) == {"hand-made", "start-all:a", "start-all:c"}
    assert after["start-all:a"]["id"] == a["id"]
    assert after["start-all:a"]["next_run"].endswith("04:30:00+00:00")
    assert after["hand-made"] == before[0]

    # a duplicate left by an older deploy is removed
    shell(
        project,
        env,
        "from django_q.models import Schedule\n"
        "Schedule.objects.create(name='start-all:a', func='x.y', schedule_type='D')",
    )
    assert "1 deleted, 2 unchanged" in sync(project, env).stdout
    assert [r["name"] for r in rows(project, env)].count("start-all:a") == 1


def test_django_q2_enqueues_a_synced_row(q_project):
    project, schedules, env = q_project
    schedules.write_text(V2)
    assert sync(project, env).returncode == 0
    out = shell(
        project,
        env,
        """
import json
from datetime import timedelta
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import OrmQ, Schedule
from django_q.scheduler import scheduler
from django_q.signing import SignedPackage
Schedule.objects.filter(name="start-all:c").update(next_run=timezone.now() - timedelta(seconds=5))
scheduler(broker=get_broker())
task = SignedPackage.loads(OrmQ.objects.get().payload)
print(json.dumps({"func": task["func"], "kwargs": task["kwargs"]}))
""",
    )
    assert json.loads(out) == {"func": "bookings.tasks.cleanup_old_records", "kwargs": {"days": 7}}


def test_invalid_file_changes_nothing_and_exits_2(q_project):
    project, schedules, env = q_project
    schedules.write_text(V1)
    assert sync(project, env).returncode == 0
    before = rows(project, env)
    schedules.write_text(V1.replace("0 3 * * *", "0 25 * * *"))
    result = sync(project, env)
    assert result.returncode == 2
    assert "schedule 'a': invalid cron expression '0 25 * * *'" in result.stderr
    assert "Traceback" not in result.stderr
    assert rows(project, env) == before


def test_list_shows_next_runs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(V1)
    result = start_all(tmp_path, "schedules", "list", str(path))
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].startswith(
        "a: bookings.tasks.cleanup_old_records (cron 0 3 * * *), next "
    )
    assert "b: bookings.tasks.send_confirmation (every 300 s)" in result.stdout


def test_adopt_takes_the_apps_own_row_over_instead_of_doubling_it(q_project):
    project, schedules, env = q_project
    # the app's own row, as a data migration or the admin made it: same function as entry a
    shell(
        project,
        env,
        "from django_q.models import Schedule\n"
        "Schedule.objects.create(name='nightly cleanup', func='bookings.tasks.cleanup_old_records',"
        " kwargs=\"{'days': 30}\", schedule_type='C', cron='0 3 * * *')",
    )
    own_id = rows(project, env)[0]["id"]
    schedules.write_text(V1)

    plain = sync(project, env)  # without --adopt: said loudly, not hidden
    assert plain.returncode == 0
    assert "Schedule row 'nightly cleanup'" in plain.stderr and "runs twice" in plain.stderr
    assert "--adopt" in plain.stderr
    assert [r["func"] for r in rows(project, env)].count("bookings.tasks.cleanup_old_records") == 2

    # back to the app's row alone, then the documented path: --adopt
    shell(project, env, "from django_q.models import Schedule\n"
          "Schedule.objects.filter(name__startswith='start-all:').delete()")
    adopted = start_all(project, "schedules", "sync", "--adopt", env=env)
    assert adopted.returncode == 0, adopted.stderr
    # b is new; a is the adopted row, which already matched the entry
    assert "1 created, 0 updated, 0 deleted, 1 unchanged, 1 adopted" in adopted.stdout
    assert "adopted the app's own row for a (row 'nightly cleanup'" in adopted.stdout
    assert "runs twice" not in adopted.stderr
    after = {r["name"]: r for r in rows(project, env)}
    assert set(after) == {"start-all:a", "start-all:b"}
    assert after["start-all:a"]["id"] == own_id  # the same row, renamed: no duplicate
    again = sync(project, env)
    assert "0 created, 0 updated, 0 deleted, 2 unchanged, 0 adopted" in again.stdout
