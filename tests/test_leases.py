"""Leases, heartbeats and fencing with real processes: long jobs are never stolen, a SIGKILLed
worker takes its jobs down and they are re-run once the lease expires, and a frozen (SIGSTOP)
worker that wakes up cannot overwrite the newer claim's result."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("process_helpers")  # its asserts report like a test's own
from process_helpers import alive, group_alive, pid_from, proc_stat, start, stop  # noqa: E402


# -- tests -------------------------------------------------------------------------------------
def test_job_longer_than_its_lease_runs_once(q: Any, tmp_path: Path) -> None:
    q.config("lease_seconds", 1)
    runs = tmp_path / "runs"
    # Two idle workers polling every 50 ms: without heartbeats the second would take the job over
    # (and the first would too, from itself) as soon as the 1 s lease expired.
    a = start(q)
    b = start(q)
    q.wait_for(lambda: len(q.json("status")["workers"]) == 2, timeout=60, what="two live workers")
    q.run("enqueue", "--id", "long", "--cmd", f"echo run $QUEUECTL_ATTEMPT >> {runs}; sleep 5")
    job = q.wait_state("long", "completed", timeout=60)
    assert job["attempts"] == 1, job
    assert runs.read_text() == "run 1\n"
    for proc, out in (a, b):
        assert "lease lost" not in "".join(out.lines)
        stop(proc, out)


def test_sigkilled_worker_takes_its_job_down_and_the_job_is_rerun(q: Any, tmp_path: Path) -> None:
    q.config("lease_seconds", 1)
    finished = tmp_path / "finished"
    q.run("enqueue", "--id", "victim", "--cmd",
          f"echo $$ > {tmp_path}/pid$QUEUECTL_ATTEMPT; sleep 3; echo finished $QUEUECTL_ATTEMPT >> {finished}")
    first, _ = start(q)
    pgid = q.wait_for(lambda: pid_from(tmp_path / "pid1"), timeout=60, what="the job to start")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    # The janitor takes the job's whole process group down with the worker.
    q.wait_for(lambda: not group_alive(pgid), timeout=10, what="the orphaned job to be stopped")
    assert q.job("victim")["state"] == "processing"  # until its lease expires

    second, out = start(q)
    job = q.wait_state("victim", "completed", timeout=60)
    assert job["attempts"] == 2, job
    # The first run, stopped 3 s before it would have written, never finished on its own.
    assert finished.read_text() == "finished 2\n"
    stop(second, out)


def test_crash_never_leaves_a_job_processing_forever(q: Any, tmp_path: Path) -> None:
    q.config("lease_seconds", 1)
    q.run("enqueue", "--id", "retried", "--cmd", f'echo $$ > {tmp_path}/pid; [ "$QUEUECTL_ATTEMPT" -ge 2 ] || sleep 60')
    q.run("enqueue", "--id", "last-chance", "--max-retries", "0", "--cmd",
          f"echo $$ > {tmp_path}/pid_last; sleep 60")
    procs = [start(q)[0] for _ in range(2)]
    pgids = q.wait_for(lambda: (a := pid_from(tmp_path / "pid")) and (b := pid_from(tmp_path / "pid_last"))
                       and (a, b), timeout=60, what="both jobs to start")
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)  # each worker's whole process group
        proc.wait(timeout=30)
    for pgid in pgids:
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what=f"job group {pgid} to be stopped")

    # A burst worker waits for the expired leases, recovers them and finishes the queue.
    q.run("worker", "start", "--burst", timeout=120)
    retried = q.job("retried")
    assert (retried["state"], retried["attempts"]) == ("completed", 2), retried
    last = q.job("last-chance")
    assert (last["state"], last["attempts"]) == ("dead", 1), last
    assert "lease expired" in last["last_error"]
    assert q.counts()["processing"] == 0


def test_frozen_worker_cannot_overwrite_the_newer_claim(q: Any, tmp_path: Path) -> None:
    q.config("lease_seconds", 1)
    # Attempt 1 fails and attempt 2 succeeds: if the stale worker's write got through, the job
    # would end up failed, with its exit code, error and log.
    q.run("enqueue", "--id", "contested", "--max-retries", "5", "--cmd",
          'sleep 2; echo "attempt $QUEUECTL_ATTEMPT"; test "$QUEUECTL_ATTEMPT" -ge 2')
    stale, stale_out = start(q)
    stale_worker = f"worker-{stale.pid}"
    q.wait_for(lambda: q.job("contested")["worker_id"] == stale_worker, timeout=60, what="the first claim")
    os.kill(stale.pid, signal.SIGSTOP)
    try:
        fresh, fresh_out = start(q)
        newer = q.wait_state("contested", "completed", timeout=60)
        assert newer["attempts"] == 2 and newer["worker_id"] == f"worker-{fresh.pid}", newer
        time.sleep(0.5)  # the first attempt's process has exited by now, unreaped by its frozen worker
    finally:
        os.kill(stale.pid, signal.SIGCONT)

    q.wait_for(lambda: stale_out.count("lease lost: contested") == 1, timeout=30,
               what="the stale worker to notice it lost the lease")
    assert q.job("contested") == newer
    assert q.run("logs", "contested").stdout == "attempt 2\n"
    # The resumed worker carries on as a healthy worker.
    q.run("enqueue", "--id", "after", "--cmd", "true")
    q.wait_state("after", "completed", timeout=60)
    stop(stale, stale_out)
    stop(fresh, fresh_out)


def test_sigkilled_supervisor_takes_its_workers_and_jobs_down(q: Any, tmp_path: Path) -> None:
    q.config("lease_seconds", 1)
    finished = tmp_path / "finished"
    for name in ("a", "b"):
        q.run("enqueue", "--id", name, "--cmd",
              f"echo $$ > {tmp_path}/pid_$QUEUECTL_JOB_ID; sleep 3; echo $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT >> {finished}")
    proc, _ = start(q, "--count", "2")
    pgids = q.wait_for(lambda: (a := pid_from(tmp_path / "pid_a")) and (b := pid_from(tmp_path / "pid_b"))
                       and (a, b), timeout=60, what="both jobs to start")
    workers = [w["pid"] for w in q.json("status")["workers"]]
    assert len(workers) == 2 and proc.pid not in workers

    os.kill(proc.pid, signal.SIGKILL)  # the supervisor alone
    proc.wait(timeout=30)
    for pid in workers:
        q.wait_for(lambda: not alive(pid), timeout=10, what=f"worker {pid} to die with its supervisor")
    for pgid in pgids:
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what=f"job group {pgid} to be stopped")

    q.run("worker", "start", "--burst", timeout=120)
    assert sorted(finished.read_text().splitlines()) == ["a 2", "b 2"]


@pytest.mark.slow
def test_lease_renewal_holds_under_many_competing_workers(q: Any, tmp_path: Path) -> None:
    """Four idle workers hammer the database while two long jobs outlive their 1 s lease tenfold."""
    q.config("lease_seconds", 1)
    runs = tmp_path / "runs"
    workers = [start(q, "--count", "2") for _ in range(2)]
    q.wait_for(lambda: len(q.json("status")["workers"]) == 4, timeout=60, what="four live workers")
    for name in ("x", "y"):
        q.run("enqueue", "--id", name, "--cmd", f"echo $QUEUECTL_JOB_ID >> {runs}; sleep 10")
    for name in ("x", "y"):
        assert q.wait_state(name, "completed", timeout=90)["attempts"] == 1
    assert sorted(runs.read_text().split()) == ["x", "y"]
    for proc, out in workers:
        stop(proc, out)


def test_supervisor_replaces_a_killed_worker_and_its_job_is_recovered(q: Any, tmp_path: Path) -> None:
    q.config("lease_seconds", 1)
    q.run("enqueue", "--id", "orphan", "--cmd",
          f'echo $$ > {tmp_path}/pid$QUEUECTL_ATTEMPT; [ "$QUEUECTL_ATTEMPT" -ge 2 ] || sleep 60')
    proc, out = start(q, "--count", "2")
    pgid = q.wait_for(lambda: pid_from(tmp_path / "pid1"), timeout=60, what="the job to start")
    holder = int(q.job("orphan")["worker_id"].removeprefix("worker-"))
    os.kill(holder, signal.SIGKILL)  # one worker, as the OOM killer would
    q.wait_for(lambda: not group_alive(pgid), timeout=10, what="the dead worker's job to be stopped")
    job = q.wait_state("orphan", "completed", timeout=60)
    assert job["attempts"] == 2, job
    # The supervisor started a replacement: two workers under it again (the janitors are theirs).
    q.wait_for(lambda: len([p for p in os.listdir("/proc") if p.isdigit()
                            and (st := proc_stat(int(p))) and st[1] == proc.pid and st[0] != "Z"]) == 2,
               timeout=30, what="a replacement worker")
    stop(proc, out)


@pytest.mark.slow
def test_chaos_random_worker_kills_lose_no_job_and_never_run_one_beyond_its_attempts(
        q: Any, tmp_path: Path) -> None:
    import random

    q.config("lease_seconds", 1)
    q.config("max_retries", 10)
    runs = tmp_path / "runs"
    ids = [f"k{n:03d}" for n in range(120)]
    lines = "".join(f'{{"id": "{i}", "command": "sleep 0.1; echo $QUEUECTL_JOB_ID >> {runs}"}}\n' for i in ids)
    q.run("enqueue", "--file", "-", input=lines)
    supervisors = [start(q, "--count", "2") for _ in range(2)]
    rng = random.Random(7)
    for _ in range(5):  # at most 5: a supervisor gives up after 5 restarts a minute
        time.sleep(0.7)
        workers = [w["pid"] for w in q.json("status")["workers"] if alive(w["pid"])]
        if workers:
            try:
                os.kill(rng.choice(workers), signal.SIGKILL)
            except ProcessLookupError:
                pass
    q.wait_for(lambda: q.counts()["completed"] == len(ids), timeout=180, what="every job completed")
    executed = runs.read_text().split()
    jobs = {j["id"]: j for j in q.json("list")}
    for i in ids:
        assert 1 <= executed.count(i) <= jobs[i]["attempts"], (i, executed.count(i), jobs[i])
    for proc, out in supervisors:
        stop(proc, out)
