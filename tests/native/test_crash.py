"""A database server that crashes (pg_ctl stop -m immediate: no shutdown checkpoint, crash
recovery at the next start), on a private cluster with PostgreSQL's durable defaults: fsync
and synchronous_commit on (the other private clusters turn both off for speed, and a commit
that is never flushed says nothing about what a crash keeps)."""

from __future__ import annotations

import re
import signal
import sys
import time
import uuid

import psycopg
import pytest
from conftest import lines, rows

from tests.conftest import need, wait_for


@pytest.fixture(scope="module")
def outage_cluster():
    """conftest's private cluster, with fsync and synchronous_commit as a real server has them."""
    from tests import pgcluster

    need(pgcluster.available(), "PostgreSQL server binaries (initdb, pg_ctl)")
    with pgcluster.PgCluster(settings={"fsync": "on", "synchronous_commit": "on"}) as cluster:
        yield cluster


def wal_syncs(conn) -> int:
    """The cluster's WAL fsyncs so far, this backend's pending counts included (a backend
    publishes its statistics at most once a second otherwise)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    return conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()[0]


def test_a_claim_does_not_wait_for_the_wal_flush_a_result_does(oapp, cluster_url):
    """store.CLAIM commits asynchronously (no fsync of its own: the pickup's second commit);
    a result (FINISH_SAME) is flushed before the worker counts it. Counted on the private
    cluster, where nothing else writes."""
    from supervisor.native import store

    n = 40
    for i in range(n):
        oapp.add.delay(i, 0)
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        before = wal_syncs(conn)
        claims = []
        for _ in range(n):
            token = uuid.uuid4()
            claimed = conn.execute(store.CLAIM_ONE, {"token": token, "worker": "test",
                                                      "lease": 60, "queue": "celery",
                                                      "limit": 1}).fetchall()
            assert len(claimed) == 1
            claims.append((claimed[0][0], token))
        by_claims = wal_syncs(conn) - before
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on", \
            "the claim's setting must end with its own transaction"
        for job_id, token in claims:
            written = conn.execute(store.FINISH_SAME, {"ids": str(job_id), "token": str(token),
                                                       "status": "SUCCESS", "result": "null"})
            assert written.fetchone()[0] == 1
        by_results = wal_syncs(conn) - before - by_claims
    print(f"\nWAL fsyncs: {by_claims} for {n} claims, {by_results} for {n} results",
          file=sys.stderr)
    assert by_results >= n // 2, "results must be flushed one commit at a time"
    assert by_claims <= n // 8, "claims must not wait for their own flush"


def test_database_crash_mid_drain_loses_nothing(oapp, cluster_url, outage_cluster, start_worker,
                                                tmp_path):
    """PostgreSQL crashes mid-drain (pg_ctl stop -m immediate: no shutdown checkpoint, crash
    recovery at the next start). Nothing is lost, nothing fails. A task may run twice only if
    its claim and its result were both unflushed at the crash (store.CLAIM): at most what the
    worker held."""
    from supervisor.native import group
    from supervisor.native.worker import PREFETCH_CAP

    marks, n, threads = tmp_path / "marks", 2000, 2
    worker = start_worker("-c", str(threads), env={"NATIVE_TEST_DB_URL": cluster_url})
    group(oapp.hold.s(f"t{i}", str(marks), 0.003) for i in range(n)).apply_async()

    def ended() -> list[str]:
        return [line.split()[1] for line in lines(marks) if line.startswith("end")]

    wait_for(lambda: len(ended()) >= n // 5, 30, "a fifth of the drain")
    outage_cluster.stop(mode="immediate")
    at_crash = len(ended())
    wait_for(lambda: "database unreachable" in worker.output, 20, worker.output)
    outage_cluster.start()
    up = time.monotonic()
    wait_for(lambda: rows(cluster_url, "SELECT count(*) FROM start_all.jobs "
                                       "WHERE status = 'SUCCESS'")[0][0] == n, 60,
             f"every task done after the crash:\n{worker.output}")
    drained = time.monotonic() - up
    left = rows(cluster_url, "SELECT count(*) FROM start_all.jobs WHERE status <> 'SUCCESS'")
    assert left[0][0] == 0
    tags = ended()
    assert set(tags) == {f"t{i}" for i in range(n)}, "every task ran"
    twice = len(tags) - len(set(tags))
    print(f"\ncrash after {at_crash} of {n} tasks: all done {drained:.2f} s after the restart, "
          f"{twice} ran twice", file=sys.stderr)
    assert twice <= threads * PREFETCH_CAP
    # a result the worker calls discarded is one whose job ran again
    discarded = sum(int(m) for m in re.findall(r"(\d+) finished job\(s\) were no longer ours",
                                               worker.output))
    assert discarded <= twice, worker.output
    assert worker.proc.poll() is None and "Traceback" not in worker.output, worker.output
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
