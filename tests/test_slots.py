"""`worker start --slots N`: one worker process running several jobs at once, each with its own
lease, timeout, log and cancel. (Signals, `worker stop`, SIGKILL, SIGSTOP, outages and cancels are
tried with one slot and with several in test_worker_lifecycle.py, test_leases.py, test_outage.py,
test_cancel.py and test_robustness.py.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("process_helpers")  # its asserts report like a test's own
from process_helpers import group_alive, pid_from, start, stop  # noqa: E402

SLOTS = 3


def _spans(tmp_path: Path, job_id: str) -> tuple[float, float]:
    start_s, end_s = (tmp_path / f"span_{job_id}").read_text().split()
    return float(start_s), float(end_s)


def test_one_worker_runs_its_slots_at_once_each_job_with_its_own_lease_and_log(q: Any, tmp_path: Path) -> None:
    qb = q
    for i in range(SLOTS):
        qb.run("enqueue", "--id", f"j{i}", "--cmd",
               f"s=$(date +%s.%N); sleep 1; echo out $QUEUECTL_JOB_ID; echo $s $(date +%s.%N) > {tmp_path}/span_j{i}")
    qb.run("worker", "start", "--slots", str(SLOTS), "--burst", timeout=120)
    spans = [_spans(tmp_path, f"j{i}") for i in range(SLOTS)]
    # They overlapped: every one started before any one ended.
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans
    for i in range(SLOTS):
        job = qb.job(f"j{i}")
        assert (job["state"], job["attempts"]) == ("completed", 1), job
        assert qb.run("logs", f"j{i}").stdout == f"out j{i}\n"


def test_sigkill_takes_more_jobs_down_than_the_janitors_default_table_holds(q: Any, tmp_path: Path) -> None:
    q.config("lease_seconds", 1)
    n = 70  # more than the janitor's default table of 64 process groups
    finished = tmp_path / "finished"
    lines = "".join(f'{{"id": "v{i:02d}", "command": "echo $$ > {tmp_path}/pid_v{i:02d}_$QUEUECTL_ATTEMPT; sleep 3;'
                    f' echo $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT >> {finished}"}}\n' for i in range(n))
    q.run("enqueue", "--file", "-", input=lines)
    first, _ = start(q, "--slots", str(n))
    pgids = q.wait_for(lambda: all(pid_from(tmp_path / f"pid_v{i:02d}_1") for i in range(n))
                       and [pid_from(tmp_path / f"pid_v{i:02d}_1") for i in range(n)], timeout=60,
                       what="every job started")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    # The janitor takes every running job's process group down with the worker.
    for pgid in pgids:
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what=f"job group {pgid} to be stopped")
    assert q.counts()["processing"] == n  # until their leases expire

    q.run("worker", "start", "--slots", str(n), "--burst", timeout=120)
    assert q.counts()["completed"] == n
    assert {j["attempts"] for j in q.json("list")} == {2}
    # None of the first runs finished on its own; each second run finished once.
    assert sorted(finished.read_text().splitlines()) == [f"v{i:02d} 2" for i in range(n)]


def test_timeout_and_cancel_hit_one_job_and_leave_the_others_running(qb: Any, tmp_path: Path) -> None:
    qb.run("enqueue", "--id", "slow", "--max-retries", "0", "--timeout", "1", "--cmd", "sleep 30")
    qb.run("enqueue", "--id", "victim", "--cmd", f"echo $$ > {tmp_path}/pid; sleep 30")
    qb.run("enqueue", "--id", "fine", "--cmd", f"sleep 3; echo ok > {tmp_path}/fine")
    proc, out = start(qb, "--slots", str(SLOTS))
    pgid = qb.wait_for(lambda: pid_from(tmp_path / "pid"), timeout=60, what="the victim to start")
    qb.run("cancel", "victim")
    sent = time.monotonic()
    cancelled = qb.wait_state("victim", "cancelled", timeout=15)
    assert time.monotonic() - sent < 5
    assert cancelled["last_error"] == "cancelled"
    qb.wait_for(lambda: not group_alive(pgid), timeout=10, what="the cancelled job's group to be stopped")
    slow = qb.wait_state("slow", "dead", timeout=30)
    assert "timed out after 1s" in slow["last_error"], slow
    fine = qb.wait_state("fine", "completed", timeout=30)
    assert fine["attempts"] == 1 and (tmp_path / "fine").read_text() == "ok\n"
    stop(proc, out)
    assert "Traceback" not in out.text()


def test_slots_default_comes_from_the_worker_slots_setting(q: Any, tmp_path: Path) -> None:
    q.config("worker_slots", 2)
    for i in range(2):
        q.run("enqueue", "--id", f"d{i}", "--cmd",
              f"s=$(date +%s.%N); sleep 1; echo $s $(date +%s.%N) > {tmp_path}/span_d{i}")
    out = q.run("worker", "start", "--burst", timeout=120).stdout
    assert "started: burst, 2 slots" in out  # the log says how many jobs it may run at once
    (s0, e0), (s1, e1) = _spans(tmp_path, "d0"), _spans(tmp_path, "d1")
    assert max(s0, s1) < min(e0, e1)
    assert "must be >= 1" in q.run("config", "set", "worker_slots", "0", check=False).stderr
