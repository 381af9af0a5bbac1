"""Run in a subprocess: the django.tasks API against the native queue.

`before` (no worker yet): priorities and transactions; `after` (a worker runs): everything else.
Prints one JSON object.
"""

import asyncio
import json
import os
import sys
import time
from datetime import timedelta
from functools import partial

import django
import psycopg

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dtproj.settings")
django.setup()

from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from letters import tasks  # noqa: E402

try:
    from django.tasks import TaskResultStatus, default_task_backend
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:
    from django_tasks import TaskResultStatus, default_task_backend
    from django_tasks.exceptions import TaskResultDoesNotExist


def rows_elsewhere(result_id):
    with psycopg.connect(os.environ["NATIVE_TEST_DB_URL"]) as other:
        return other.execute(
            "SELECT count(*) FROM start_all.jobs WHERE task_id = %s", (result_id,)
        ).fetchone()[0]


def exists(result_id):
    try:
        default_task_backend.get_result(result_id)
        return True
    except TaskResultDoesNotExist:
        return False


def finished(result, timeout=30):
    deadline = time.monotonic() + timeout
    while not result.is_finished:
        if time.monotonic() > deadline:
            raise SystemExit(f"{result.task.name} {result.id} not finished: {result.status}")
        time.sleep(0.05)
        result.refresh()
    return result


class Rollback(Exception):
    pass


out = {"django": django.get_version(), "api": tasks.task.__module__}
phase = sys.argv[1]
if phase == "before":
    ids = {}
    for label, priority in (("low", -10), ("mid", 0), ("high", 50)):
        ids[label] = tasks.record.using(priority=priority).enqueue(label).id
    # Django's documented pattern: enqueue once the transaction commits
    enqueued = len(tasks._notes(signal="enqueued"))
    with transaction.atomic():
        transaction.on_commit(partial(tasks.record.enqueue, "on-commit"))
        out["on_commit_before_commit"] = len(tasks._notes(signal="enqueued")) - enqueued
    try:
        with transaction.atomic():
            transaction.on_commit(partial(tasks.record.enqueue, "on-commit-rolled-back"))
            raise Rollback
    except Rollback:
        pass
    # a plain enqueue inside a transaction rides it (same database): gone on rollback
    try:
        with transaction.atomic():
            rolled = tasks.record.enqueue("rolled-back")
            raise Rollback
    except Rollback:
        pass
    out["rolled_back_exists"] = exists(rolled.id) or rows_elsewhere(rolled.id) > 0
    with transaction.atomic():
        inside = tasks.add.enqueue(1, 1)
        out["visible_before_commit"] = rows_elsewhere(inside.id)
        out["result_before_commit"] = exists(inside.id)
    out["visible_after_commit"] = rows_elsewhere(inside.id)
    out["result_after_commit"] = exists(inside.id)
    out["enqueued_signals"] = sorted(
        r["task"] for r in tasks._notes(signal="enqueued"))
    out["ids"] = ids
else:
    r = tasks.add.enqueue(2, 3)
    out["enqueue_status"] = str(r.status)
    out["add"] = finished(r).return_value
    got = tasks.add.get_result(r.id)
    out["get_result"] = {
        "status": str(got.status), "args": got.args, "kwargs": got.kwargs,
        "attempts": got.attempts, "enqueued": got.enqueued_at is not None,
        "started": got.started_at is not None, "finished": got.finished_at is not None,
        "order": got.enqueued_at <= got.started_at <= got.finished_at,
    }
    later = timezone.now() + timedelta(seconds=1.5)
    deferred = tasks.add.using(run_after=later).enqueue(10, 20)
    flaky = tasks.flaky.enqueue("k1")
    boom = tasks.boom.enqueue()
    overrun = tasks.overrun.enqueue()

    async def via_aenqueue():
        result = await tasks.twice.aenqueue(21)
        return result.id

    twice_id = asyncio.run(via_aenqueue())
    out["twice"] = finished(default_task_backend.get_result(twice_id)).return_value
    out["flaky"] = finished(flaky).return_value
    out["flaky_attempts"] = [r["attempt"] for r in tasks._notes(flaky="k1")]
    failed = finished(boom)
    out["boom"] = {"status": str(failed.status), "attempts": failed.attempts,
                   "error": failed.errors[0].exception_class_path,
                   "traceback": "ValueError: boom" in failed.errors[0].traceback}
    limited = finished(overrun)
    out["overrun"] = {"status": str(limited.status),
                      "error": limited.errors[0].exception_class_path,
                      "seconds": (limited.finished_at - limited.started_at).total_seconds()}
    finished(deferred)
    out["run_after_respected"] = deferred.started_at >= later
    out["deferred"] = deferred.return_value
    try:
        default_task_backend.get_result("no-such-id")
        out["missing"] = "found"
    except TaskResultDoesNotExist:
        out["missing"] = "TaskResultDoesNotExist"
    out["statuses"] = sorted({str(s) for s in TaskResultStatus})
print(json.dumps(out))
