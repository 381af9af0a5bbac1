"""Children's output through the multiplexer: prefixes, partial lines, raw bytes, floods."""

from __future__ import annotations

import json
import signal

from supervisor.logs import MAX_LINE, LogMux
from tests.conftest import wait_for

FLOOD_LINES = 200_000


def test_prefix_partial_lines_and_non_utf8_bytes(run_supervisor, tmp_path):
    sup = run_supervisor(
        "web: printf 'caf\\351 \\377\\376 raw\\nno newline at the end' && sleep 30\n"
        "worker: python3 -c \"import os; print('unbuffered=' + os.environ['PYTHONUNBUFFERED'])"
        "; import time; time.sleep(30)\"\n"
    )
    sup.wait_line("unbuffered=1")
    sup.wait_line("web.1 .* caf")
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    raw = sup.log_path.read_bytes()
    assert b"web.1     | caf\xe9 \xff\xfe raw\n" in raw  # bytes untouched, name aligned
    assert b"web.1     | no newline at the end\n" in raw  # flushed when its pipe closed


def test_a_flood_neither_loses_lines_nor_stalls_the_others(run_supervisor, tmp_path):
    sup = run_supervisor(
        f"flood: yes 'flood line' | head -n {FLOOD_LINES} && sleep 30\n"
        "ticker: python3 -c \"import time; [print('tick', i) or time.sleep(0.01)"
        " for i in range(1000)]\" && sleep 30\n"
    )
    sup.wait_line("ticker.1 .* tick 999", timeout=60)
    wait_for(
        lambda: sup.output.count("flood.1   | flood line\n") == FLOOD_LINES, 30, "every flood line"
    )
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    lines = sup.log_path.read_bytes().split(b"\n")
    assert lines.count(b"flood.1   | flood line") == FLOOD_LINES
    ticks = [line for line in lines if line.startswith(b"ticker.1  | tick ")]
    assert [int(t.rsplit(b" ", 1)[1]) for t in ticks] == list(range(1000))


def test_json_lines_keep_bytes_reversibly(run_supervisor, tmp_path):
    sup = run_supervisor(
        "web: printf 'ok \\377\\n' && sleep 30\n", args=["--log-format", "json"]
    )
    sup.wait_line('"process": "web.1"')
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    records = [json.loads(line) for line in sup.output.splitlines()]
    web = [r for r in records if r["process"] == "web.1"]
    assert web[0]["line"].encode("utf-8", "surrogateescape") == b"ok \xff"
    assert any(r["process"] == "start-all" and "exit 0" in r["line"] for r in records)


def test_no_prefix(run_supervisor, tmp_path):
    sup = run_supervisor("web: echo plain && sleep 30\n", args=["--no-prefix"])
    sup.wait_line("^plain$")
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0


def test_overlong_line_is_cut_not_held(tmp_path):
    path = tmp_path / "out"
    with open(path, "wb") as sink:
        mux = LogMux(["web.1"], fd=sink.fileno(), color="never")
        mux.feed("web.1", b"x" * (MAX_LINE + 10))
        mux.flush()
    assert path.read_bytes() == b"web.1     | " + b"x" * MAX_LINE + b"\n"
    mux.close("web.1")
    assert mux.pending == [b"web.1     | " + b"x" * 10 + b"\n"]
