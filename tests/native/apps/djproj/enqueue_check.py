"""Run in a subprocess: enqueue from Django, inside and outside transaction.atomic()."""

import json
import os

import django
import psycopg

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")
django.setup()

from django.db import transaction  # noqa: E402
from djproj.celery import app  # noqa: E402
from shop.tasks import double  # noqa: E402


def visible_elsewhere(task_id):
    with psycopg.connect(os.environ["NATIVE_TEST_DB_URL"]) as other:
        return other.execute(
            "SELECT count(*) FROM start_all.jobs WHERE task_id = %s", (task_id,)
        ).fetchone()[0] == 1


out = {"queue_setting": app.conf.task_default_queue}
out["plain"] = double.delay(21).get(timeout=20)


class Rollback(Exception):
    pass


try:
    with transaction.atomic():
        rolled = double.delay(1)
        raise Rollback
except Rollback:
    pass
out["rolled_back_state"] = app.AsyncResult(rolled.id).state
out["rolled_back_row"] = visible_elsewhere(rolled.id)

with transaction.atomic():
    committed = double.delay(5)
    out["visible_before_commit"] = visible_elsewhere(committed.id)
out["visible_after_commit"] = visible_elsewhere(committed.id)
out["committed_result"] = committed.get(timeout=20)
print(json.dumps(out))
