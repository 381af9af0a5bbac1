"""Pure functions: backoff arithmetic, schedules, argument checks, cron slots. No services."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from supervisor.native.cron import Cron, parse
from supervisor.native.exceptions import ConfigError, EncodeError
from supervisor.native.schedules import crontab, normalize
from supervisor.native.serial import dumps_call, exception_from_dict, exception_to_dict
from supervisor.native.task import backoff_interval


def test_backoff_without_jitter_is_exponential_and_capped():
    assert [backoff_interval(1, n, 600, False) for n in range(5)] == [1, 2, 4, 8, 16]
    assert backoff_interval(3, 10, 600, False) == 600
    assert backoff_interval(2, 2, 5, False) == 5


def test_full_jitter_stays_within_zero_and_the_cap():
    draws = [backoff_interval(1, 4, 600, True) for _ in range(500)]
    assert min(draws) >= 0 and max(draws) <= 16
    assert len(set(draws)) > 5, "spread over the whole range"
    assert {backoff_interval(1, 30, 7, True) for _ in range(300)} <= set(range(8))


def test_non_json_arguments_name_the_culprit():
    with pytest.raises(EncodeError, match=r"args\[1\]\['when'\] = set"):
        dumps_call("proj.send", [1, {"when": {1, 2}}], {})
    with pytest.raises(EncodeError, match=r"kwargs\['blob'\] = object"):
        dumps_call("proj.send", [], {"blob": object()})
    assert dumps_call("t", (1, "a"), {"k": [None]}) == (json.dumps([1, "a"]),
                                                         json.dumps({"k": [None]}))


def test_exceptions_round_trip():
    again = exception_from_dict(exception_to_dict(KeyError("k")))
    assert type(again) is KeyError and again.args == ("k",)
    missing = exception_from_dict({"exc_type": "Gone", "exc_module": "nowhere.mod",
                                   "exc_message": ["x"]})
    assert type(missing).__name__ == "Gone" and str(missing) == "x"


def test_schedule_shapes():
    assert normalize(crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")) == (
        "*/15 9-17 * * mon-fri")
    assert normalize("0 3 * * *") == "0 3 * * *"
    assert normalize(30) == 30.0 and normalize(timedelta(minutes=2)) == 120.0
    with pytest.raises(ValueError):
        normalize("not a cron")
    with pytest.raises(ConfigError, match="nightly"):
        parse({"nightly": {"task": "t", "schedule": "61 * * * *"}})


def test_cron_slots_fire_once_per_slot_in_a_process():
    cron = Cron(parse({"e": {"task": "t", "schedule": "*/5 * * * *"},
                       "i": {"task": "t", "schedule": 10}}))
    base = datetime(2026, 1, 1, 12, 5, 0, tzinfo=UTC).timestamp()
    first = {(e.name, slot) for e, slot in cron.due(base + 1)}
    assert first == {("e", base), ("i", base)}
    assert cron.due(base + 2) == []
    assert {(e.name, s) for e, s in cron.due(base + 11)} == {("i", base + 10)}
    assert cron.seconds_to_next(base + 11) == pytest.approx(9)
    # a slot missed by more than a minute (worker down) is skipped, not fired late
    assert {e.name for e, _ in cron.due(base + 600 + 120)} == {"i"}


def test_transaction_pooler_detection_and_sqlite_paths():
    from supervisor.native.sqlite_store import _path
    from supervisor.native.store import is_pooler

    assert is_pooler("postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres")
    assert not is_pooler("postgresql://u:p@db.example.com:5432/postgres")
    assert not is_pooler("dbname=app host=localhost")
    assert _path("sqlite:///queue.sqlite3") == "queue.sqlite3"
    assert _path("sqlite:////var/data/q.db") == "/var/data/q.db"
    with pytest.raises(ConfigError, match="needs a file"):
        _path("sqlite:///:memory:")


def test_slots_missed_while_frozen_fire_once_on_wake():
    """The catch-up policy: a process frozen through several slots (a sleeping instance) fires
    the latest one once when it wakes; slots from before it started only within CATCH_UP."""
    cron = Cron(parse({"e": {"task": "t", "schedule": "*/5 * * * *"},
                       "i": {"task": "t", "schedule": 10}}))
    base = datetime(2026, 1, 1, 12, 5, 0, tzinfo=UTC).timestamp()
    cron.since = base - 30  # the process started 30 s before the 12:05 slot
    assert {e.name for e, _ in cron.due(base + 1)} == {"e", "i"}
    # frozen for 12 minutes: two */5 slots and 72 interval slots missed; one of each fires
    woke = cron.due(base + 720)
    assert sorted((e.name, s - base) for e, s in woke) == [("e", 600.0), ("i", 720.0)]
    assert cron.due(base + 721) == []
    # a fresh process (started now) does not replay a slot older than CATCH_UP
    fresh = Cron(parse({"e": {"task": "t", "schedule": "*/5 * * * *"}}))
    fresh.since = base + 720
    assert fresh.due(base + 720) == []


def test_add_to_chord_needs_a_chord_and_refuses_lazy():
    from supervisor.native import Celery

    app = Celery("units-add-to-chord", broker="postgresql://u@127.0.0.1/none",
                 set_as_current=False)  # later tests keep their current app

    @app.task(bind=True)
    def grow(self, lazy=False):
        return self.add_to_chord(grow.si(), lazy=lazy)

    with pytest.raises(ValueError, match="not member of any chord"):
        grow.apply().get()
    with pytest.raises(NotImplementedError, match="lazy=True.*not supported"):
        grow.apply(kwargs={"lazy": True}).get()
    app.close()


def test_signature_args_are_a_tuple_as_in_celery():
    from supervisor.native import Celery, signature

    app = Celery("units-args", broker="postgresql://u@127.0.0.1/none", set_as_current=False)

    @app.task
    def add(x, y):
        return x + y

    sig = add.s(1, 2)
    assert sig.args == (1, 2)
    assert add.s(2).clone((1,)).args == (1, 2)  # partial arguments go first
    assert signature(dict(sig), app=app).args == (1, 2)  # rebuilt from its JSON form
    app.close()


def test_requests_keep_their_own_mutable_defaults_and_adopt_takes_the_dict():
    """Context's defaults are class attributes (one dict update per job in the worker): the
    mutable ones are still each request's own, and adopt() uses the given dict itself."""
    import uuid

    from supervisor.native.job import new_ids
    from supervisor.native.task import Context

    a, b = Context(), Context(id="x", time_limit=5)
    a.args.append(1)
    a.delivery_info["k"] = 1
    assert (b.args, b.delivery_info, b.properties, b.kwargs) == ([], {}, {}, {})
    assert (a.id, b.id, b.retries, b.called_directly, b.timelimit) == (None, "x", 0, True,
                                                                       (5, None))
    fields = {"id": "y", "group_id": "g", "soft_time_limit": 2}
    c = Context.adopt(fields)
    assert c.__dict__ is fields and c.group == "g" and c.timelimit == (None, 2)
    assert c.args == [] and c.get("retries") == 0 and c.get("nope", 3) == 3
    ids = new_ids(500)
    assert len(set(ids)) == 500
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
