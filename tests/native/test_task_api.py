"""Celery's task API on the native worker: real worker processes, real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from conftest import APPS, lines

from tests.conftest import ROOT, wait_for


@pytest.fixture
def flow(db, pg_url):
    sys.path.insert(0, str(APPS))
    import flowtasks

    flowtasks.app.close()
    flowtasks.app.conf.broker_url = pg_url
    flowtasks.app.set_current()  # shared tasks send through the current app
    yield flowtasks
    flowtasks.app.close()


def test_first_shared_task_and_bare_async_result_do_not_deadlock(tmp_path):
    """No app yet: @shared_task and AsyncResult(id) build the default app without hanging."""
    script = textwrap.dedent("""
        from supervisor.native import AsyncResult, shared_task

        @shared_task
        def hello(x):
            return x

        print(AsyncResult("some-id").id, hello.name, hello(3))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=20, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[0] == "some-id" and words[1].endswith(".hello") and words[2] == "3"


def test_caller_side_checks(flow):
    t = flow
    with pytest.raises(TypeError, match="flowtasks.add"):
        t.add.delay(1, 2, 3)  # arity, checked in the caller as Celery's typing=True does
    with pytest.raises(TypeError):
        t.add.delay(1, z=2)
    with pytest.raises(ValueError, match="soft_time_limit"):
        t.add.apply_async((1, 2), soft_time_limit=10, time_limit=5)
    with pytest.raises(TypeError, match="unsupported option"):
        t.add.apply_async((1, 2), not_an_option=1)
    # Celery settings the native queue ignores read as Celery's defaults
    assert t.app.conf.task_acks_late is False and t.app.conf.result_extended is False
    with pytest.raises(AttributeError):
        t.app.conf.not_a_setting  # noqa: B018


def test_task_api_on_a_real_worker(flow, start_worker, tmp_path):
    from supervisor.native.exceptions import MaxRetriesExceededError  # noqa: F401

    t = flow
    start_worker("-c", "4", app="flowtasks:app")
    # ignore_result: get() returns None at once, as in Celery
    ignored = t.ignored.delay(5)
    assert ignored.ignored and ignored.get(timeout=0.01) is None
    # class-based task registered with app.register_task, class-level autoretry_for
    tries = tmp_path / "tries"
    assert t.ClassBased().delay(str(tries)).get(timeout=30) == "done after retries"
    assert len(lines(tries)) == 3
    # Reject(requeue=True) puts the job back; it runs again
    assert t.reject_once.delay(str(tmp_path / "reject")).get(timeout=20) == "accepted"
    # an exception whose __init__ takes other arguments keeps its class
    with pytest.raises(t.CustomError) as caught:
        t.custom_error.delay().get(timeout=20)
    assert caught.value.args == (42, "custom")
    # shared_task through the current app
    assert t.shared_add.delay(2, 3).get(timeout=20) == 5
    # Celery's JSON types round-trip in arguments and results
    values = [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), uuid.uuid4(), Decimal("1.10"),
              b"\x00\xffraw", date(2026, 1, 2), time(12, 30)]
    assert t.typed.delay(*values).get(timeout=20) == values


def test_periodic_tasks_example_and_dash_a_package(tmp_path, start_worker, pg_url, db):
    """Celery's periodic-task example (on_after_configure + add_periodic_task) in a package
    found by `-A proj` at proj.celery:app."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "__init__.py").write_text("")
    (proj / "celery.py").write_text(textwrap.dedent("""
        import os

        from supervisor.native import Celery

        app = Celery("proj", broker=os.environ["NATIVE_TEST_DB_URL"])

        @app.on_after_configure.connect
        def setup_periodic_tasks(sender, **kwargs):
            sender.add_periodic_task(0.3, test.s("hello"), name="say hello often")

        @app.task
        def test(arg):
            with open(os.environ["NATIVE_TEST_MARKS"], "a") as f:
                f.write(arg + "\\n")
    """))
    start_worker(app="proj", cwd=tmp_path)
    marks = tmp_path / "marks"
    wait_for(lambda: len(lines(marks)) >= 2, 20, "the periodic task firing")
    assert set(lines(marks)) == {"hello"}


def test_pydantic_and_delay_on_commit(tmp_path, start_worker, pg_url, db):
    (tmp_path / "ptasks.py").write_text(textwrap.dedent("""
        import os

        from pydantic import BaseModel

        from supervisor.native import Celery

        app = Celery("ptasks", broker=os.environ["NATIVE_TEST_DB_URL"])

        class Order(BaseModel):
            item: str
            count: int

        class Receipt(BaseModel):
            total: int

        @app.task(pydantic=True)
        def price(order: Order) -> Receipt:
            assert isinstance(order, Order)
            return Receipt(total=order.count * 3)
    """))
    sys.path.insert(0, str(tmp_path))
    import os

    os.environ["NATIVE_TEST_DB_URL"] = pg_url
    import ptasks

    start_worker(app="ptasks:app", cwd=tmp_path)
    assert ptasks.price.delay({"item": "pen", "count": "4"}).get(timeout=20) == {"total": 12}
    # outside a Django transaction, delay_on_commit sends at once and returns None
    assert ptasks.price.delay_on_commit({"item": "ink", "count": 1}) is None
    wait_for(lambda: db.execute("SELECT count(*) FROM start_all.jobs WHERE status = "
                                "'SUCCESS'").fetchone()[0] == 2, 20, "the deferred task")
