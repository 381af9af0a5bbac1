"""The database going away under a real worker: a private cluster (tests/pgcluster.py) is
stopped and started for real. The worker never exits, keeps its heartbeat file fresh with a
"database-unreachable" state, keeps finished results until they can be written, and resumes.
Timings are printed (run with -s to see them), never asserted tightly."""

from __future__ import annotations

import signal
import sys
import time

from conftest import lines, rows

from tests.conftest import need, wait_for
from tests.pgcluster import Pgbouncer


def beat_state(path) -> str:
    try:
        return path.read_text().split(" ", 1)[0].strip()
    except FileNotFoundError:
        return ""


def test_waits_for_a_database_that_is_down_at_start(oapp, cluster_url, outage_cluster,
                                                    start_worker, tmp_path):
    beat = tmp_path / "beat"
    outage_cluster.stop()
    worker = start_worker("-c", "1", ready=False,
                          env={"NATIVE_TEST_DB_URL": cluster_url,
                               "START_ALL_HEARTBEAT_FILE": str(beat)})
    wait_for(lambda: beat_state(beat) == "database-unreachable", 20, "unreachable heartbeat")
    first = beat.stat().st_mtime
    wait_for(lambda: beat.stat().st_mtime > first, 10, "heartbeat kept fresh while away")
    assert worker.proc.poll() is None, worker.output
    assert "database unreachable (connection refused)" in worker.output
    assert "Traceback" not in worker.output
    outage_cluster.start()
    up = time.time()
    worker.wait_ready()
    wait_for(lambda: beat_state(beat) == "ok", 10, "heartbeat ok again")
    started = oapp.stamp.delay().get(timeout=20)
    print(f"\ndown at start: first task started {started - up:.3f} s after the database "
          f"accepted connections", file=sys.stderr)
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0


def test_outage_mid_run_keeps_results_and_resumes(oapp, cluster_url, outage_cluster, start_worker,
                                                  tmp_path):
    beat, marks = tmp_path / "beat", tmp_path / "marks"
    worker = start_worker("-c", "2", env={"NATIVE_TEST_DB_URL": cluster_url,
                                          "START_ALL_HEARTBEAT_FILE": str(beat)})
    held = [oapp.hold.delay(f"h{i}", str(marks), 1.0) for i in range(2)]
    wait_for(lambda: sum(line.startswith("start") for line in lines(marks)) == 2, 20, "both run")
    outage_cluster.stop()
    down = time.monotonic()
    # the two tasks finish while the database is away: their results are kept
    wait_for(lambda: sum(line.startswith("end") for line in lines(marks)) == 2, 20, "both end")
    wait_for(lambda: beat_state(beat) == "database-unreachable", 10, "unreachable heartbeat")
    wait_for(lambda: time.monotonic() - down >= 3.0, 10, "a 3 s outage")
    assert worker.proc.poll() is None, worker.output
    outage_cluster.start()
    up = time.time()
    wait_for(lambda: rows(cluster_url, "SELECT count(*) FROM start_all.jobs "
                                       "WHERE status = 'SUCCESS'")[0][0] == 2, 20,
             f"kept results written:\n{worker.output}")
    written = rows(cluster_url, "SELECT extract(epoch FROM max(finished_at))::float8 "
                                "FROM start_all.jobs")[0][0]
    assert [r.get(timeout=5) for r in held] == ["h0", "h1"]
    assert rows(cluster_url, "SELECT sum(recoveries) FROM start_all.jobs")[0][0] == 0
    assert len(lines(marks)) == 4, "each ran once"
    started = oapp.stamp.delay().get(timeout=20)
    wait_for(lambda: beat_state(beat) == "ok", 10, "heartbeat ok again")
    print(f"\nmid-run outage of {time.monotonic() - down:.1f} s: kept results written "
          f"{written - up:.3f} s and a new task started {started - up:.3f} s after the "
          f"database accepted connections", file=sys.stderr)
    assert "reachable again" in worker.output and "Traceback" not in worker.output
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0


def test_listen_connection_alone_cut(qapp, db, start_worker):
    worker = start_worker("-c", "1")
    assert qapp.add.delay(1, 1).get(timeout=10) == 2
    listen = "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' " \
             "AND datname = current_database()"
    old = {r[0] for r in db.execute(listen).fetchall()}
    assert old, "a LISTEN connection"
    for pid in old:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: "LISTEN connection restored" in worker.output, 20, worker.output)
    assert "LISTEN connection lost" in worker.output
    assert "database unreachable" not in worker.output, "the main connection was left alone"
    new = {r[0] for r in db.execute(listen).fetchall()}
    assert new and not new & old
    assert [qapp.add.delay(i, 1).get(timeout=10) for i in range(3)] == [1, 2, 3]


def test_outage_through_a_transaction_pooler(oapp, cluster_url, outage_cluster, start_worker,
                                             tmp_path):
    need(Pgbouncer.available(), "pgbouncer (apt-get install pgbouncer)")
    pooler = Pgbouncer(outage_cluster.port)
    pooler.start()
    try:
        via_pooler = pooler.url_for(cluster_url.rsplit("/", 1)[1])
        marks = tmp_path / "marks"
        worker = start_worker("-c", "1", "--poll-only",
                              env={"NATIVE_TEST_DB_URL": via_pooler, "NATIVE_TEST_POLL": "0.1"})
        assert "poll-only" in worker.output
        assert [oapp.add.delay(i, i).get(timeout=20) for i in range(10)] == list(range(0, 20, 2))
        held = oapp.hold.delay("p", str(marks), 1.0)
        wait_for(lambda: any(line.startswith("start") for line in lines(marks)), 20, "start")
        outage_cluster.stop()
        down = time.monotonic()
        wait_for(lambda: "database unreachable" in worker.output, 20, worker.output)
        wait_for(lambda: time.monotonic() - down >= 3.0, 10, "a 3 s outage")
        assert worker.proc.poll() is None, worker.output
        outage_cluster.start()
        up = time.time()
        assert held.get(timeout=30) == "p"
        started = oapp.stamp.delay().get(timeout=30)
        print(f"\npooler outage: a new task started {started - up:.3f} s after the database "
              f"accepted connections", file=sys.stderr)
        assert len(lines(marks)) == 2, "ran once"
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        pooler.close()


def test_frozen_database_host(oapp, cluster_url, outage_cluster, start_worker, tmp_path):
    """Every server process stopped (SIGSTOP), as a paused container or a frozen host: calls
    hang instead of failing. The heartbeat still says database-unreachable, the worker cuts the
    stuck connection after a lease and resumes when the host thaws."""
    import os
    import subprocess

    beat = tmp_path / "beat"
    worker = start_worker("-c", "1", env={"NATIVE_TEST_DB_URL": cluster_url,
                                          "START_ALL_HEARTBEAT_FILE": str(beat)})
    assert oapp.add.delay(1, 2).get(timeout=10) == 3
    postmaster = int(open(f"{outage_cluster.data}/postmaster.pid").read().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                              text=True).stdout.split()
    frozen = [postmaster, *map(int, children)]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: beat_state(beat) == "database-unreachable", 20,
                 f"database-unreachable heartbeat while frozen:\n{worker.output}")
        first = beat.stat().st_mtime
        wait_for(lambda: beat.stat().st_mtime > first, 10, "heartbeat kept fresh while frozen")
        assert worker.proc.poll() is None, worker.output
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    up = time.time()
    started = oapp.stamp.delay().get(timeout=30)
    wait_for(lambda: beat_state(beat) == "ok", 20, "heartbeat ok again")
    print(f"\nfrozen host: a new task started {started - up:.3f} s after the thaw",
          file=sys.stderr)
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0


def worker_behind_cutter(start_worker, pg_url):
    """A worker whose connections go through tests/netcut.py, with nothing periodic to say
    (no heartbeat, no poll for 30 s), so that after arm() the next statement is the test's."""
    from urllib.parse import urlsplit, urlunsplit

    from tests.netcut import CutAfterReply

    server = urlsplit(pg_url)
    proxy = CutAfterReply(server.hostname, server.port or 5432)
    netloc = server.netloc.rpartition("@")[0] + f"@127.0.0.1:{proxy.port}"
    worker = start_worker("-c", "1", env={
        "NATIVE_TEST_DB_URL": urlunsplit(server._replace(netloc=netloc)),
        "NATIVE_TEST_HEARTBEAT": "30", "NATIVE_TEST_LEASE": "90", "NATIVE_TEST_POLL": "30"})
    return worker, proxy


def test_a_claim_whose_answer_is_lost(qapp, db, start_worker, pg_url, tmp_path):
    """The connection fails right after the server committed a claim: the worker never learns
    which rows it got. On reconnecting it hands them back by that claim's lease token, so the
    job runs at once (once), not after its 90 s lease."""
    worker, proxy = worker_behind_cutter(start_worker, pg_url)
    marks = tmp_path / "marks"
    try:
        proxy.arm(b"SET status = 'RESERVED'")  # the claim of this job
        job = qapp.mark.delay("a", str(marks))
        assert job.get(timeout=10) == "a"
        assert proxy.cut.is_set(), "the claim's answer was dropped"
        assert len(lines(marks)) == 1, "ran once"
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        proxy.close()


def test_a_result_write_whose_answer_is_lost(qapp, db, start_worker, pg_url, tmp_path):
    """The connection fails right after the server committed a result write: its answer never
    arrives (tests/netcut.py drops it and cuts the connection). The worker writes the result
    again on a new connection and the fence refuses it: the job is not run again, and the
    worker does not call its result discarded."""
    from conftest import job_row

    worker, proxy = worker_behind_cutter(start_worker, pg_url)
    marks = tmp_path / "marks"
    try:
        job = qapp.hold.delay("a", str(marks), 0.5)
        wait_for(lambda: lines(marks), 10, f"the task started:\n{worker.output}")
        proxy.arm(b"finished_at = now()")  # the write of its result
        assert job.get(timeout=20) == "a"
        assert proxy.cut.is_set(), "the result write's answer was dropped"
        wait_for(lambda: "not written again" in worker.output, 10, worker.output)
        assert "were no longer ours" not in worker.output, worker.output
        assert job_row(db, job.id)["status"] == "SUCCESS"
        assert qapp.add.delay(1, 2).get(timeout=10) == 3, "and the worker goes on"
        assert len(lines(marks)) == 2, "ran once"
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        proxy.close()
