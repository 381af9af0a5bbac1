"""The demo image on start-all's native worker (Procfile.native, host PostgreSQL): a task
longer than the stop budget is returned to the queue on `podman stop`, and runs again."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.container.conftest import podman

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]  # incl. waiting for the lock


def test_task_longer_than_the_budget_is_requeued_and_rerun(demo_image, start_container, pg_url):
    env = {"DATABASE_URL": pg_url, "TASK_QUEUE": "native", "START_ALL_PROCFILE": "Procfile.native"}
    app = start_container(demo_image, env, host_network=True)
    report = app.wait_ready()
    assert {p["name"]: p["kind"] for p in report["processes"]} == {
        "web.1": "gunicorn",
        "worker.1": "native",
    }
    job = app.post_json("/summaries", {"text": "four words right here", "seconds": 12})
    wait_for(
        lambda: app.get_json(f"/summaries/{job['id']}")["status"] == "running",
        60,
        "the long task to start",
    )

    elapsed = app.stop(grace=10)  # start-all's budget is 8 s: the task cannot finish

    assert app.state("ExitCode") == "0", app.logs()[-3000:]
    assert elapsed < 9.5, f"stop took {elapsed:.1f} s of the 10 s grace"
    assert "returned 1 job(s) to the queue" in app.logs()
    podman("start", app.name)
    app.wait_ready()
    done = wait_for(
        lambda: (s := app.get_json(f"/summaries/{job['id']}"))["status"] == "done" and s,
        90,
        "the returned job to run again and finish",
    )
    assert done["attempts"] == 2
    assert done["result"] == "4 words: four words right here"
