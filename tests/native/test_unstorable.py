"""Values PostgreSQL refuses though Python's JSON has them: a NUL character, a lone surrogate,
NaN and Infinity (jsonb and text hold none of them), and a due time past its calendar. Such a
value once made the worker's write of a whole batch of results fail; the worker took that for
the database being away and retried it for ever, so every task behind it waited (found by a
task returning a string with a NUL in it, as a parser of binary data will). Also what the
worker cannot decode once claimed: that job fails, not the worker."""

from __future__ import annotations

import math

import pytest

from supervisor.native.serial import dumps, loads, storable_text
from tests.conftest import wait_for

ODD_VALUES = [
    "a\x00b",
    "\ud800",  # a lone surrogate
    "\ud83d\ude00",  # the two halves of a pair as separate characters
    "😀 é",  # plain non-ASCII, astral included: left as it is
    b"bytes \x00 with a NUL",
    [1.5, {"k": "x\x00y"}, ("t", "\x00")],
    "\\u0000 as six characters",
    "C:\\udata",
]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, tuple):
        a = list(a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("value", ODD_VALUES + [float("nan"), float("inf"), -float("inf")],
                         ids=repr)
def test_a_value_travels_through_jsonb_unchanged(db, value):
    text = dumps(value)
    stored = db.execute("SELECT %s::jsonb::text", (text,)).fetchone()[0]
    assert same(value, loads(stored)), (value, text, stored)


def test_plain_values_are_encoded_as_before():
    assert dumps({"a": [1, "é", "😀"]}) == '{"a": [1, "\\u00e9", "\\ud83d\\ude00"]}'


def test_a_key_postgresql_cannot_hold_is_a_clear_encode_error(qapp):
    from supervisor.native.exceptions import EncodeError

    with pytest.raises(EncodeError, match=r"kwargs\[.value.\]\[.d.\] key 'k\\x00'"):
        qapp.echo.delay(value={"d": {"k\x00": 1}})


def test_free_text_is_made_storable():
    assert storable_text("tb \x00 \ud800 é") == "tb \\x00 \\ud800 é"
    assert storable_text("plain") == "plain"


def test_the_worker_stores_them_and_goes_on(qapp, db, start_worker):
    worker = start_worker("-c", "2")
    before = [qapp.add.delay(i, 1) for i in range(5)]
    odd = [qapp.echo.delay(v) for v in ODD_VALUES]
    nan = qapp.nan_result.delay()
    raised = qapp.raise_with.delay("bad \x00 byte \ud800")
    beyond = qapp.retry_beyond_the_calendar.delay()
    after = [qapp.add.delay(i, 100) for i in range(5)]
    assert [r.get(timeout=15) for r in before] == [1, 2, 3, 4, 5]
    for value, r in zip(ODD_VALUES, odd, strict=True):
        assert same(value, r.get(timeout=10)), value
    got = nan.get(timeout=10)
    assert math.isnan(got["nan"]) and got["inf"] == math.inf and got["neg"] == -math.inf
    with pytest.raises(ValueError) as error:
        raised.get(timeout=10)
    assert error.value.args == ("bad \x00 byte \ud800",)
    assert "\\x00" in raised.traceback  # the traceback is text: escaped, not refused
    with pytest.raises(Exception, match="retry could not be stored: DatetimeFieldOverflow"):
        beyond.get(timeout=10)
    assert beyond.state == "FAILURE"
    assert [r.get(timeout=10) for r in after] == [100, 101, 102, 103, 104]
    assert "database unreachable" not in worker.output
    assert "Traceback" not in worker.output
    assert worker.proc.poll() is None


def test_they_flow_through_chains_and_chords(qapp, db, start_worker):
    from supervisor.native import chain, chord

    worker = start_worker("-c", "2")
    assert chain(qapp.echo.s("a\x00"), qapp.echo.s()).apply_async().get(timeout=15) == "a\x00"
    got = chord([qapp.echo.s(float("nan")), qapp.echo.s("\ud800")],
                qapp.echo.s()).apply_async().get(timeout=15)
    assert math.isnan(got[0]) and got[1] == "\ud800"
    failing = chord([qapp.echo.s(1), qapp.raise_with.s("x\x00")], qapp.echo.s()).apply_async()
    with pytest.raises(ValueError) as error:
        failing.get(timeout=15)
    assert error.value.args == ("x\x00",)
    # a workflow job's refused retry takes the other path (its finish carries its follow-ups)
    refused = chain(qapp.retry_beyond_the_calendar.s(), qapp.echo.s()).apply_async()
    with pytest.raises(Exception, match="retry could not be stored: DatetimeFieldOverflow"):
        refused.get(timeout=15)
    assert "database unreachable" not in worker.output


def test_a_dict_shaped_like_an_envelope_comes_back_as_sent(qapp, db, start_worker):
    """{"__type__": "datetime", "__value__": "not a date"} is a caller's own dict: its
    decoder raising crashed the worker that claimed it (a traceback, every job it held stuck
    until their leases ran out, then the next worker the same)."""
    start_worker("-c", "1")
    shaped = {"__type__": "datetime", "__value__": "not a date"}
    assert qapp.echo.delay(shaped).get(timeout=10) == shaped
    assert qapp.add.delay(1, 2).get(timeout=10) == 3


def test_a_row_whose_arguments_cannot_be_decoded_fails_alone(qapp, db, start_worker):
    """Arguments nested deeper than Python's JSON parser goes (a row written by other means
    than .delay(), which cannot encode them): that job ends FAILURE, the worker goes on.
    The depth is checked first, so a Python that decodes it says so instead of timing out."""
    import uuid

    task_id = str(uuid.uuid4())
    # deeper than Python's parser goes (1,000 levels on 3.11, under 10,000 on 3.13), not
    # deeper than PostgreSQL's (about 15,000 with its default 2 MB stack)
    deep = "[" * 12000 + "]" * 12000
    with pytest.raises(RecursionError):
        loads(deep)

    def outcome():  # not the args: this process's parser cannot read them either
        return db.execute("SELECT status, result FROM start_all.jobs WHERE task_id = %s",
                          (task_id,)).fetchone()

    db.execute("INSERT INTO start_all.jobs (task_id, name, queue, args) "
               "VALUES (%s, 'qtasks.echo', 'celery', %s::jsonb)", (task_id, f"[{deep}]"))
    before = qapp.add.delay(1, 2)
    worker = start_worker("-c", "1")
    assert before.get(timeout=10) == 3
    wait_for(lambda: outcome()[0] == "FAILURE", 10, worker.output)
    assert outcome()[1]["exc_type"] == "DecodeError"
    assert "cannot be decoded (RecursionError" in worker.output
    assert qapp.add.delay(3, 4).get(timeout=10) == 7
    assert worker.proc.poll() is None and "Traceback" not in worker.output


def test_a_result_past_a_jsonb_limit_fails_alone(qapp, db, start_worker):
    """A jsonb string holds at most 256 MB: PostgreSQL answers a longer one with a program
    limit error (class 54, not 22), which the worker also took for an outage and retried for
    ever. About 1 GB of memory for a moment (the text, its JSON, the statement). The lease is
    the default's: the tests' 2 s one would cut a write of that size as a stuck call."""
    worker = start_worker("-c", "1", env={"NATIVE_TEST_LEASE": "30"})
    big = qapp.long_text.delay(270_000_000)
    with pytest.raises(Exception, match="could not be stored: ProgramLimitExceeded"):
        big.get(timeout=60)
    assert qapp.add.delay(1, 2).get(timeout=10) == 3
    assert "database unreachable" not in worker.output
