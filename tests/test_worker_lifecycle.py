"""Worker lifecycle with real processes and real signals: graceful shutdown (Ctrl+C to the whole
process group, SIGTERM, `worker stop`), the immediate second Ctrl+C (and `worker stop --now`),
--burst, and restarts. Each stop is tried with one worker of one slot, several worker processes
(--count), and one worker of several slots (--slots)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("process_helpers")  # its asserts report like a test's own
from process_helpers import children, group_alive, pid_from, start  # noqa: E402

# (worker processes, slots each): every stop behaves the same whatever runs the jobs.
LAYOUTS = [pytest.param((1, 1), id="1 slot"), pytest.param((3, 1), id="count 3"), pytest.param((1, 3), id="slots 3")]


# -- graceful shutdown -------------------------------------------------------------------------
def _send_stop(q: Any, proc: subprocess.Popen[str], how: str, count: int) -> None:
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    elif how == "sigterm":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        out = q.run("worker", "stop").stdout
        assert f"asked {count} worker(s)" in out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "worker-stop"])
def test_graceful_shutdown_lets_running_jobs_finish(q: Any, tmp_path: Path, how: str, layout: tuple[int, int]) -> None:
    count, slots = layout
    markers = [tmp_path / f"done{i}" for i in range(count * slots)]
    for i, marker in enumerate(markers):
        q.run("enqueue", "--id", f"run{i}", "--priority", "10", "--cmd", f"sleep 2; echo done > {marker}")
    later = tmp_path / "later"
    q.run("enqueue", "--id", "later", "--cmd", f"echo ran > {later}")
    proc, out = start(q, "--count", str(count), "--slots", str(slots))
    q.wait_for(lambda: q.counts()["processing"] == len(markers), timeout=60, what=f"{len(markers)} jobs processing")

    _send_stop(q, proc, how, count)

    assert proc.wait(timeout=60) == 0, out.text()
    for i, marker in enumerate(markers):
        job = q.job(f"run{i}")
        assert job["state"] == "completed", job
        assert job["attempts"] == 1
        assert marker.read_text() == "done\n"
    # Nothing more was claimed once the stop was asked for.
    job = q.job("later")
    assert (job["state"], job["attempts"]) == ("pending", 0), job
    assert not later.exists()
    assert "Traceback" not in out.text()
    assert q.json("status")["workers"] == []


@pytest.mark.parametrize("slots", [1, 3])
def test_worker_stop_between_short_jobs_claims_nothing_more(q: Any, tmp_path: Path, slots: int) -> None:
    starts = tmp_path / "starts"
    lines = "".join(f'{{"id": "s{n:02d}", "command": "date +%s%N >> {starts}; sleep 0.3"}}\n' for n in range(30))
    q.run("enqueue", "--file", "-", input=lines)
    proc, out = start(q, "--slots", str(slots))
    q.wait_for(lambda: starts.exists() and len(starts.read_text().split()) >= 3, timeout=60,
               what="a few jobs to run")
    q.run("worker", "stop")
    stopped_ns = time.time_ns()  # the request is committed once `worker stop` has returned
    assert proc.wait(timeout=60) == 0, out.text()
    late = [t for t in map(int, starts.read_text().split()) if t > stopped_ns]
    # The job running at the time finishes; the next claim must see the request. (A request
    # landing between the worker's check and its claim starts a job before `stopped_ns` anyway.)
    assert late == [], f"{len(late)} jobs started after `worker stop` returned"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("how", ["second-ctrl-c", "worker-stop-now"])
def test_an_immediate_stop_stops_the_jobs_at_once_and_releases_them(q: Any, tmp_path: Path, how: str,
                                                                    layout: tuple[int, int]) -> None:
    count, slots = layout
    q.config("subprocess.kill_grace_seconds", 1)
    duration = tmp_path / "duration"
    duration.write_text("60")  # long enough that only a forced stop ends the first run
    n = count * slots
    for i in range(n):
        q.run("enqueue", "--id", f"job{i}", "--cmd",
              f"echo $$ > {tmp_path}/pid{i}; sleep $(cat {duration}); echo done > {tmp_path}/done{i}")
    proc, out = start(q, "--count", str(count), "--slots", str(slots))
    pgids: list[int] = q.wait_for(
        lambda: all(pid_from(tmp_path / f"pid{i}") for i in range(n))
        and [pid_from(tmp_path / f"pid{i}") for i in range(n)],
        timeout=60, what="every job started")

    if how == "second-ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
        # Two signals delivered back to back could be coalesced; wait until each worker saw the first.
        q.wait_for(lambda: out.count("stopping:") >= count, timeout=30, what="workers to acknowledge Ctrl+C")
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
    else:
        t0 = time.monotonic()
        assert f"asked {count} worker(s) to stop now" in q.run("worker", "stop", "--now").stdout
    assert proc.wait(timeout=30) == 0, out.text()
    assert time.monotonic() - t0 < 15, "an immediate stop must not wait for the jobs"
    assert "Traceback" not in out.text()

    for pgid in pgids:
        q.wait_for(lambda: not group_alive(pgid), timeout=10, what=f"job group {pgid} to be gone")
    for i in range(n):
        job = q.job(f"job{i}")
        assert (job["state"], job["attempts"]) == ("pending", 0), job
        assert not (tmp_path / f"done{i}").exists()
        assert f"released: job{i}" in out.text()

    # Released jobs are runnable at once by another worker.
    duration.write_text("0")
    q.run("worker", "start", "--burst", timeout=120)
    for i in range(n):
        job = q.job(f"job{i}")
        assert (job["state"], job["attempts"]) == ("completed", 1), job
        assert (tmp_path / f"done{i}").read_text() == "done\n"


def test_signals_while_idle_exit_zero_promptly(q: Any) -> None:
    proc, out = start(q, "--count", "2")
    q.wait_for(lambda: len(q.json("status")["workers"]) == 2, timeout=60, what="two live workers")
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 0, out.text()
    assert time.monotonic() - t0 < 10
    assert "Traceback" not in out.text()


# -- burst -------------------------------------------------------------------------------------
def test_burst_drains_the_queue_then_exits_zero(q: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i in range(5):
        q.run("enqueue", "--id", f"j{i}", "--cmd", f"echo $QUEUECTL_JOB_ID >> {runs}")
    result = q.run("worker", "start", "--burst", timeout=120)
    assert result.returncode == 0
    assert sorted(runs.read_text().split()) == [f"j{i}" for i in range(5)]
    assert q.counts()["completed"] == 5


def test_burst_waits_for_scheduled_retries_and_delayed_jobs(q: Any, tmp_path: Path) -> None:
    q.config("backoff_base", 1.5)  # first retry 1.5 s after the failure
    # Fails on its first attempt, succeeds on the retry.
    q.run("enqueue", "--id", "flaky", "--max-retries", "2", "--cmd", 'test "$QUEUECTL_ATTEMPT" -ge 2')
    q.run("enqueue", "--id", "delayed", "--delay", "2", "--cmd", f"touch {tmp_path}/delayed")
    t0 = time.monotonic()
    q.run("worker", "start", "--burst", timeout=120)
    assert time.monotonic() - t0 >= 1.5
    flaky = q.job("flaky")
    assert (flaky["state"], flaky["attempts"]) == ("completed", 2), flaky
    assert q.job("delayed")["state"] == "completed"
    assert (tmp_path / "delayed").exists()


def test_burst_ends_with_dead_jobs_left_in_the_dlq(q: Any) -> None:
    q.config("backoff_base", 0.1)
    q.run("enqueue", "--id", "bad", "--max-retries", "1", "--cmd", "exit 3")
    q.run("worker", "start", "--burst", timeout=120)
    job = q.job("bad")
    assert (job["state"], job["attempts"], job["last_exit_code"]) == ("dead", 2, 3), job


# -- durability --------------------------------------------------------------------------------
def test_completed_job_stays_completed_across_worker_restarts(q: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    q.run("enqueue", "--id", "once", "--cmd", f"echo ran >> {runs}")
    q.run("worker", "start", "--burst", timeout=120)
    before = q.job("once")
    assert before["state"] == "completed"

    # A worker killed hard and a fresh one started: the finished job is neither lost nor re-run.
    proc, _ = start(q)
    q.wait_for(lambda: len(q.json("status")["workers"]) == 1, timeout=60, what="a live worker")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    q.run("worker", "start", "--burst", timeout=120)

    after = q.job("once")
    assert after == before
    assert runs.read_text() == "ran\n"


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_while_workers_are_starting_is_still_graceful(q: Any, attempt: int) -> None:
    """A Ctrl+C forwarded to a worker before it has its own handlers must be neither fatal, nor
    lost (the worker would run on and the supervisor wait forever), nor doubled."""
    proc, out = start(q, "--count", "3")
    deadline = time.monotonic() + 60
    while len(children(proc.pid)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        pass  # no sleep: signal the moment the workers exist, before they are ready
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 0, out.text()
    assert "Traceback" not in out.text()
