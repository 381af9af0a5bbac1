"""The chaos suite's short mode, run for real (bench/chaos.py --short): worker SIGKILLs under
wrk load, SIGKILLs during a drain, a private PostgreSQL stopped and its connections cut, SIGTERM
with tasks running. The zero figures are asserted here; the other figures are measurements
(the full mode is `bash bench/run chaos`). About 100 s."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests import pgcluster
from tests.conftest import ROOT, need, port_open


@pytest.mark.timeout(400)
def test_chaos_short(tmp_path):
    need(port_open(5432), "PostgreSQL on 127.0.0.1:5432")
    need(shutil.which("wrk") is not None, "wrk")
    need(pgcluster.available(), "PostgreSQL server binaries (initdb, pg_ctl)")
    out = tmp_path / "chaos.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--short",
                             "--json", str(out)], capture_output=True, text=True, timeout=390)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    zero = figures["zero"]
    problems = {k: v for k, v in zero.items()
                if (v is not True if k.endswith("container_alive")
                    else (isinstance(v, bool) or v != 0))}
    assert not problems, f"{problems}\n{result.stdout}"
    results = figures["results"]
    kills = results["kills"]
    assert kills["kills"] == 20 and kills["restarts"] == kills["kills"]
    assert kills["requests"] > 0
    for mode in ("random", "rapid"):
        tasks = results["tasks"][mode]
        assert tasks["kills"] > 0, result.stdout  # the faults happened
        # what runs again is what the kills cut off, plus results still in flight at the kill
        assert tasks["reruns"] == tasks["cut_off"] + tasks["finished_again"], result.stdout
    outage = results["outage"]
    assert outage["check"]["degraded_within_3s"] == outage["check"]["rounds"]
    assert outage["check"]["ok_within_3s"] == outage["check"]["rounds"]
    assert outage["stop"]["healthz_during"] == ["degraded 200"], outage["stop"]["healthz"]
    sigterm = results["sigterm"]
    assert sigterm["finished"] == 25 and sigterm["stop_s"] < sigterm["budget_s"] + 0.5
    assert "| scenario | figure | measured | target |" in result.stdout
