"""Through a real transaction-mode pooler (pgbouncer, like Supabase's) on a free port: the worker
detects it, polls instead of LISTEN, and producers and worker run without prepared statements.
Supabase's port 6543 is how a pooler is recognised unless START_ALL_TRANSACTION_POOLER_PORT
names another one; the test declares its own port, so it never needs 6543 free."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from conftest import APPS

from tests import pgcluster
from tests.conftest import need


def test_a_pooler_is_known_by_its_port(monkeypatch):
    from supervisor.native.store import is_pooler

    monkeypatch.delenv("START_ALL_TRANSACTION_POOLER_PORT", raising=False)
    assert is_pooler("postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres")
    assert is_pooler("host=pooler port=6543 dbname=app")
    assert not is_pooler("postgresql://u:p@db.example.com:6432/app")
    monkeypatch.setenv("START_ALL_TRANSACTION_POOLER_PORT", "6432")  # a pgbouncer of one's own
    assert is_pooler("postgresql://u:p@db.example.com:6432/app")
    assert not is_pooler("postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres")
    assert not is_pooler("postgresql://u:p@db.example.com:5432/app")


@pytest.fixture
def pooler_url(pg_url, monkeypatch):
    need(pgcluster.Pgbouncer.available(), "pgbouncer (apt-get install pgbouncer)")
    upstream = urlsplit(pg_url)
    bouncer = pgcluster.Pgbouncer(upstream.port or 5432, upstream.hostname or "127.0.0.1")
    # declared for the producers here and, through the environment, for the worker
    monkeypatch.setenv("START_ALL_TRANSACTION_POOLER_PORT", str(bouncer.port))
    try:
        bouncer.start()
        yield bouncer.url_for(upstream.path.lstrip("/"))
    finally:
        bouncer.close()


def test_worker_and_producers_through_a_transaction_pooler(db, pooler_url, start_worker,
                                                           monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    import qtasks

    qtasks.app.close()
    qtasks.app.conf.broker_url = pooler_url
    try:
        worker = start_worker("-c", "2", env={"NATIVE_TEST_DB_URL": pooler_url,
                                              "NATIVE_TEST_POLL": "0.1"})
        assert "poll-only" in worker.output, "the declared port detected as a pooler"
        # more calls than psycopg's prepare threshold: prepared statements would break here
        results = [qtasks.add.delay(i, i) for i in range(30)]
        assert [r.get(timeout=20) for r in results] == [2 * i for i in range(30)]
        assert qtasks.app.AsyncResult("unknown").state == "PENDING"
        # a write refused for its data leaves the pooled connection usable (it is not an outage)
        refused = qtasks.retry_beyond_the_calendar.delay()
        with pytest.raises(Exception, match="retry could not be stored"):
            refused.get(timeout=20)
        assert qtasks.echo.delay("a\x00b").get(timeout=20) == "a\x00b"
        assert "database unreachable" not in worker.output
    finally:
        qtasks.app.close()
