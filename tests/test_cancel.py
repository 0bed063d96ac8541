"""A cancel request reaches the running worker (lifecycle.cancel on a processing job): the worker
stops the job's process group and records it cancelled, fenced by its lease. The CLI command comes
separately; this drives queuectl_core.control.actions against the real database a real worker uses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("process_helpers")
from process_helpers import group_alive, pid_from, start, stop  # noqa: E402


@pytest.mark.parametrize("slots", [1, 3])
def test_cancelling_a_running_job_stops_it_and_records_cancelled(q: Any, tmp_path: Path, slots: int) -> None:
    from queuectl_core.control import actions
    from queuectl_core.jobs.models import JobState
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    q.config("lease_seconds", 60)  # heartbeats every 20 s: the cancel must not wait for one
    q.run("enqueue", "--id", "long", "--cmd", f"echo $$ > {tmp_path}/pid; sleep 60; touch {tmp_path}/finished")
    q.run("enqueue", "--id", "next", "--cmd", "true")
    proc, out = start(q, "--slots", str(slots))
    pgid = q.wait_for(lambda: pid_from(tmp_path / "pid"), timeout=60, what="the job to start")
    storage = SQLiteStorage(q.home / "queue.db")
    try:
        asked = actions.cancel(storage, "long")
        assert asked.state == JobState.PROCESSING and asked.cancel_requested
        sent = time.monotonic()
        job = q.wait_state("long", "cancelled", timeout=15)
        assert time.monotonic() - sent < 5
        assert job["last_error"] == "cancelled"
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what="the job's process group to be stopped")
        assert not (tmp_path / "finished").exists()
        q.wait_state("next", "completed", timeout=30)  # the worker carries on
    finally:
        storage.close()
    stop(proc, out)
    assert "cancelled: long" in out.text()
