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
# Every promise here holds for a worker of one slot and of several.
SLOTS = [1, 3]


@pytest.mark.parametrize("slots", SLOTS)
def test_job_longer_than_its_lease_runs_once(q: Any, tmp_path: Path, slots: int) -> None:
    q.config("lease_seconds", 1)
    runs = tmp_path / "runs"
    # Two idle workers polling every 50 ms: without heartbeats the second would take the job over
    # (and the first would too, from itself) as soon as the 1 s lease expired.
    a = start(q, "--slots", str(slots))
    b = start(q, "--slots", str(slots))
    q.wait_for(lambda: len(q.json("status")["workers"]) == 2, timeout=60, what="two live workers")
    q.run("enqueue", "--id", "long", "--cmd", f"echo run $QUEUECTL_ATTEMPT >> {runs}; sleep 5")
    job = q.wait_state("long", "completed", timeout=60)
    assert job["attempts"] == 1, job
    assert runs.read_text() == "run 1\n"
    for proc, out in (a, b):
        assert "lease lost" not in "".join(out.lines)
        stop(proc, out)


@pytest.mark.parametrize("slots", SLOTS)
def test_sigkilled_worker_takes_its_jobs_down_and_each_is_rerun(q: Any, tmp_path: Path, slots: int) -> None:
    q.config("lease_seconds", 1)
    finished = tmp_path / "finished"
    victims = [f"victim{i}" for i in range(slots)]
    for victim in victims:
        q.run("enqueue", "--id", victim, "--cmd", f"echo $$ > {tmp_path}/pid_$QUEUECTL_JOB_ID$QUEUECTL_ATTEMPT;"
              f" sleep 3; echo $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT >> {finished}")
    first, _ = start(q, "--slots", str(slots))
    pgids = q.wait_for(lambda: all(pid_from(tmp_path / f"pid_{v}1") for v in victims)
                       and [pid_from(tmp_path / f"pid_{v}1") for v in victims], timeout=60, what="the jobs to start")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    # The janitor takes each job's whole process group down with the worker.
    for pgid in pgids:
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what="the orphaned job to be stopped")
    assert q.counts()["processing"] == slots  # until their leases expire

    second, out = start(q, "--slots", str(slots))
    for victim in victims:
        job = q.wait_state(victim, "completed", timeout=60)
        assert job["attempts"] == 2, job
    # The first runs, stopped 3 s before they would have written, never finished on their own.
    assert sorted(finished.read_text().splitlines()) == [f"{v} 2" for v in victims]
    stop(second, out)


# The subprocess executor, as a third party would wrap it, reporting each spawn 5 s late: a worker
# killed in between has not yet told its janitor the job's process group.
LATE_SPAWN = '''
import dataclasses
import time

from queuectl_core.api import hookimpl
from queuectl_plugins.subprocess_executor import _make


class LateSpawn:
    def __init__(self, inner):
        self.inner = inner

    def run(self, job, ctx):
        def on_spawn(pgid):
            time.sleep(5)
            ctx.on_spawn(pgid)

        return self.inner.run(job, dataclasses.replace(ctx, on_spawn=on_spawn))


@hookimpl
def queuectl_register_executors(register):
    register("late-spawn", lambda config: LateSpawn(_make(config)))
'''


@pytest.mark.parametrize("slots", SLOTS)
def test_a_worker_killed_before_the_janitor_knows_the_job_still_takes_it_down(
        q: Any, tmp_path: Path, slots: int) -> None:
    """Between a job's start and its group reaching the janitor, a SIGKILLed worker used to leave the
    job running unsupervised, to be run again once its lease expired. The janitor now finds it by
    the job's id and attempt in its environment."""
    from process_helpers import install_plugin

    q.env["PYTHONPATH"] = str(install_plugin(tmp_path / "site", "latespawn", LATE_SPAWN))
    q.config("executor", "late-spawn")
    q.run("enqueue", "--id", "early", "--cmd", f"echo $$ > {tmp_path}/pid; sleep 3; touch {tmp_path}/ran-on")
    worker, _ = start(q, "--slots", str(slots))
    pgid = q.wait_for(lambda: pid_from(tmp_path / "pid"), timeout=60, what="the job to start")
    os.kill(worker.pid, signal.SIGKILL)  # within the 5 s before on_spawn
    worker.wait(timeout=30)
    q.wait_for(lambda: not group_alive(pgid), timeout=10, what="the orphaned job to be stopped")
    time.sleep(3.5)
    assert not (tmp_path / "ran-on").exists()


@pytest.mark.parametrize("slots", SLOTS)
def test_crash_never_leaves_a_job_processing_forever(q: Any, tmp_path: Path, slots: int) -> None:
    q.config("lease_seconds", 1)
    q.run("enqueue", "--id", "retried", "--cmd", f'echo $$ > {tmp_path}/pid; [ "$QUEUECTL_ATTEMPT" -ge 2 ] || sleep 60')
    q.run("enqueue", "--id", "last-chance", "--max-retries", "0", "--cmd",
          f"echo $$ > {tmp_path}/pid_last; sleep 60")
    procs = [start(q, "--slots", str(slots))[0] for _ in range(2)]
    pgids = q.wait_for(lambda: (a := pid_from(tmp_path / "pid")) and (b := pid_from(tmp_path / "pid_last"))
                       and (a, b), timeout=60, what="both jobs to start")
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)  # each worker's whole process group
        proc.wait(timeout=30)
    for pgid in pgids:
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what=f"job group {pgid} to be stopped")

    # A burst worker waits for the expired leases, recovers them and finishes the queue.
    q.run("worker", "start", "--burst", "--slots", str(slots), timeout=120)
    retried = q.job("retried")
    assert (retried["state"], retried["attempts"]) == ("completed", 2), retried
    last = q.job("last-chance")
    assert (last["state"], last["attempts"]) == ("dead", 1), last
    assert "lease expired" in last["last_error"]
    assert q.counts()["processing"] == 0


@pytest.mark.parametrize("slots", [1, 2])
def test_frozen_worker_cannot_overwrite_the_newer_claims(q: Any, tmp_path: Path, slots: int) -> None:
    q.config("lease_seconds", 1)
    # Attempt 1 fails and attempt 2 succeeds: if the stale worker's write got through, a job would
    # end up failed, with its exit code, error and log. One job per slot.
    ids = [f"c{i}" for i in range(slots)]
    for job_id in ids:
        q.run("enqueue", "--id", job_id, "--max-retries", "5", "--cmd",
              'sleep 2; echo "attempt $QUEUECTL_ATTEMPT"; test "$QUEUECTL_ATTEMPT" -ge 2')
    stale, stale_out = start(q, "--slots", str(slots))
    q.wait_for(lambda: all(q.job(i)["worker_id"] == f"worker-{stale.pid}" for i in ids), timeout=60,
               what="the first claims")
    os.kill(stale.pid, signal.SIGSTOP)
    try:
        fresh, fresh_out = start(q, "--slots", str(slots))
        newer = [q.wait_state(i, "completed", timeout=60) for i in ids]
        for job in newer:
            assert job["attempts"] == 2 and job["worker_id"] == f"worker-{fresh.pid}", job
        time.sleep(0.5)  # the first attempts' processes have exited by now, unreaped by their frozen worker
    finally:
        os.kill(stale.pid, signal.SIGCONT)

    for job_id in ids:
        q.wait_for(lambda: stale_out.count(f"lease lost: {job_id}") == 1, timeout=30,
                   what=f"the stale worker to notice it lost {job_id}")
    assert [q.job(i) for i in ids] == newer
    assert q.run("logs", "c0").stdout == "attempt 2\n"
    # The resumed worker carries on as a healthy worker.
    q.run("enqueue", "--id", "after", "--cmd", "true")
    q.wait_state("after", "completed", timeout=60)
    stop(stale, stale_out)
    stop(fresh, fresh_out)


@pytest.mark.parametrize("slots", SLOTS)
def test_sigkilled_supervisor_takes_its_workers_and_jobs_down(q: Any, tmp_path: Path, slots: int) -> None:
    q.config("lease_seconds", 1)
    finished = tmp_path / "finished"
    names = ["a", "b"] + [f"x{i}" for i in range(2 * slots - 2)]  # one job per slot
    for name in names:
        q.run("enqueue", "--id", name, "--cmd",
              f"echo $$ > {tmp_path}/pid_$QUEUECTL_JOB_ID; sleep 3; echo $QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT >> {finished}")
    proc, _ = start(q, "--count", "2", "--slots", str(slots))
    pgids = q.wait_for(lambda: all(pid_from(tmp_path / f"pid_{n}") for n in names)
                       and [pid_from(tmp_path / f"pid_{n}") for n in names], timeout=60, what="every job to start")
    workers = [w["pid"] for w in q.json("status")["workers"]]
    assert len(workers) == 2 and proc.pid not in workers

    os.kill(proc.pid, signal.SIGKILL)  # the supervisor alone
    proc.wait(timeout=30)
    for pid in workers:
        q.wait_for(lambda: not alive(pid), timeout=10, what=f"worker {pid} to die with its supervisor")
    for pgid in pgids:
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what=f"job group {pgid} to be stopped")

    q.run("worker", "start", "--burst", "--slots", str(slots), timeout=120)
    assert sorted(finished.read_text().splitlines()) == sorted(f"{n} 2" for n in names)


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
