"""Many worker processes on one SQLite queue: every job executed exactly once, and lock
contention (SQLITE_BUSY) never turns into a failed job or a dead worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("process_helpers")  # its asserts report like a test's own
from process_helpers import assert_each_ran_once, enqueue_many, start  # noqa: E402


def test_five_workers_while_jobs_arrive_execute_each_job_once(q: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    command = f"echo $QUEUECTL_JOB_ID >> {runs}"
    # --count 4 under one supervisor, plus a separate worker process next to it.
    workers = [start(q, "--count", "4"), start(q)]
    q.wait_for(lambda: len(q.json("status")["workers"]) == 5, timeout=60, what="five live workers")
    ids = [f"job{n:04d}" for n in range(300)]
    for batch in range(3):  # while the workers are busy, so claims race with inserts and each other
        enqueue_many(q, ids[batch * 100:(batch + 1) * 100], command)
    q.wait_for(lambda: q.counts()["completed"] == len(ids), timeout=120, what="every job completed")
    for proc, out in workers:
        os.killpg(proc.pid, signal.SIGINT)
    for proc, out in workers:
        assert proc.wait(timeout=60) == 0, out.text()
        assert "Traceback" not in out.text()
    assert_each_ran_once(q, runs, ids)


def test_burst_workers_share_the_queue_and_all_exit_zero(q: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    ids = [f"b{n:04d}" for n in range(200)]
    enqueue_many(q, ids, f"echo $QUEUECTL_JOB_ID >> {runs}")
    workers = [start(q, "--count", "2", "--burst") for _ in range(2)]
    for proc, out in workers:
        assert proc.wait(timeout=120) == 0, out.text()
    assert_each_ran_once(q, runs, ids)


def test_sqlite_busy_is_never_a_job_failure(q: Any, tmp_path: Path) -> None:
    # SQLite's busy handler is off (the storage polls the lock itself), so with six workers lock
    # contention surfaces as SQLITE_BUSY constantly: storage must retry it, never fail a job, lose
    # a result or crash a worker over it.
    q.config("lease_seconds", 2)
    runs = tmp_path / "runs"
    ids = [f"c{n:04d}" for n in range(400)]
    enqueue_many(q, ids, f"echo $QUEUECTL_JOB_ID >> {runs}")
    workers = [start(q, "--burst") for _ in range(4)] + [start(q, "--count", "2", "--burst")]
    for proc, out in workers:
        assert proc.wait(timeout=300) == 0, out.text()
        text = out.text()
        assert "Traceback" not in text and "storage unavailable" not in text, text[-2000:]
    assert_each_ran_once(q, runs, ids)
    assert q.counts()["failed"] == 0 and q.counts()["dead"] == 0
