"""`worker start --slots N`: one worker process running several jobs at once, each with its own
lease, heartbeat, timeout, log, fencing and cancel, through the same real signals and crashes as a
one-job worker: Ctrl+C, SIGTERM, `worker stop` (and --now), SIGKILL (the janitor), SIGSTOP."""

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


@pytest.mark.parametrize("how", ["ctrl-c", "worker-stop"])  # SIGTERM takes Ctrl+C's path
def test_graceful_stop_lets_every_running_job_finish_and_claims_nothing_more(q: Any, tmp_path: Path,
                                                                            how: str) -> None:
    go = tmp_path / "go"  # the jobs end once the worker has taken the stop request in
    for i in range(SLOTS):
        q.run("enqueue", "--id", f"run{i}", "--priority", "10", "--cmd",
              f"while [ ! -e {go} ]; do sleep 0.05; done; echo done > {tmp_path}/done{i}")
    q.run("enqueue", "--id", "later", "--cmd", f"echo ran > {tmp_path}/later")
    proc, out = start(q, "--slots", str(SLOTS))
    q.wait_for(lambda: q.counts()["processing"] == SLOTS, timeout=60, what=f"{SLOTS} jobs processing")
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        assert "asked 1 worker(s)" in q.run("worker", "stop").stdout
    q.wait_for(lambda: out.count("stopping:") >= 1, timeout=30, what="the worker to take the stop in")
    go.touch()
    assert proc.wait(timeout=60) == 0, out.text()
    for i in range(SLOTS):
        job = q.job(f"run{i}")
        assert (job["state"], job["attempts"]) == ("completed", 1), job
        assert (tmp_path / f"done{i}").read_text() == "done\n"
    later = q.job("later")
    assert (later["state"], later["attempts"]) == ("pending", 0), later
    assert not (tmp_path / "later").exists()
    assert "Traceback" not in out.text()


@pytest.mark.parametrize("how", ["second-ctrl-c", "worker-stop-now"])
def test_an_immediate_stop_stops_every_running_job_and_releases_it(q: Any, tmp_path: Path, how: str) -> None:
    q.config("subprocess.kill_grace_seconds", 1)
    for i in range(SLOTS):
        q.run("enqueue", "--id", f"job{i}", "--cmd", f"echo $$ > {tmp_path}/pid{i}; sleep 60; touch {tmp_path}/done{i}")
    proc, out = start(q, "--slots", str(SLOTS))
    pgids = q.wait_for(lambda: all(pid_from(tmp_path / f"pid{i}") for i in range(SLOTS))
                       and [pid_from(tmp_path / f"pid{i}") for i in range(SLOTS)], timeout=60, what="every job started")
    t0 = time.monotonic()
    if how == "second-ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
        q.wait_for(lambda: out.count("stopping:") >= 1, timeout=30, what="the worker to acknowledge Ctrl+C")
        os.killpg(proc.pid, signal.SIGINT)
    else:
        q.run("worker", "stop", "--now")
    assert proc.wait(timeout=30) == 0, out.text()
    assert time.monotonic() - t0 < 15, "an immediate stop must not wait for the jobs"
    for pgid in pgids:
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what=f"job group {pgid} to be gone")
    for i in range(SLOTS):
        job = q.job(f"job{i}")
        assert (job["state"], job["attempts"]) == ("pending", 0), job
        assert f"released: job{i}" in out.text()
        assert not (tmp_path / f"done{i}").exists()
    assert "Traceback" not in out.text()


def test_sigkill_takes_every_running_job_down_and_each_is_rerun_once(q: Any, tmp_path: Path) -> None:
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


def test_a_frozen_worker_resumed_cannot_overwrite_the_newer_claims(q: Any, tmp_path: Path) -> None:
    q.config("lease_seconds", 1)
    # Attempt 1 fails, attempt 2 succeeds: a stale write getting through would leave a job failed.
    for i in range(2):
        q.run("enqueue", "--id", f"c{i}", "--max-retries", "5", "--cmd",
              'sleep 2; echo "attempt $QUEUECTL_ATTEMPT"; test "$QUEUECTL_ATTEMPT" -ge 2')
    stale, stale_out = start(q, "--slots", "2")
    q.wait_for(lambda: all(q.job(f"c{i}")["worker_id"] == f"worker-{stale.pid}" for i in range(2)),
               timeout=60, what="both claims")
    os.kill(stale.pid, signal.SIGSTOP)
    try:
        fresh, fresh_out = start(q, "--slots", "2")
        newer = [q.wait_state(f"c{i}", "completed", timeout=60) for i in range(2)]
        for job in newer:
            assert job["attempts"] == 2 and job["worker_id"] == f"worker-{fresh.pid}", job
        time.sleep(0.5)  # the first attempts have exited by now, unreaped by their frozen worker
    finally:
        os.kill(stale.pid, signal.SIGCONT)
    for i in range(2):
        q.wait_for(lambda: stale_out.count(f"lease lost: c{i}") == 1, timeout=30,
                   what=f"the stale worker to notice it lost c{i}")
    assert [q.job(f"c{i}") for i in range(2)] == newer
    assert q.run("logs", "c0").stdout == "attempt 2\n"
    stop(stale, stale_out)
    stop(fresh, fresh_out)


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
