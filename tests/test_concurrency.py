"""Many worker processes on one SQLite queue: every job executed exactly once, and lock
contention (SQLITE_BUSY) never turns into a failed job or a dead worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

class Output:
    """Drains a worker's stdout/stderr in the background: hundreds of log lines would otherwise
    fill the pipe and block the worker."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s,), daemon=True)
                         for s in (proc.stdout, proc.stderr)]
        for t in self._threads:
            t.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        for t in self._threads:
            t.join(timeout=5)
        return "".join(self.lines)


def start(q: Any, *args: str) -> tuple[subprocess.Popen[str], Output]:
    proc = q.start_worker(*args)
    return proc, Output(proc)


def enqueue_many(q: Any, ids: list[str], command: str) -> None:
    lines = "".join(json.dumps({"id": i, "command": command}) + "\n" for i in ids)
    out = q.run("enqueue", "--file", "-", input=lines).stdout
    assert out.split() == ids


def assert_each_ran_once(q: Any, runs: Path, ids: list[str]) -> None:
    executed = runs.read_text().split()
    assert len(executed) == len(ids), f"{len(executed)} executions for {len(ids)} jobs"
    assert sorted(executed) == sorted(ids)
    jobs = q.json("list")
    assert {j["id"]: (j["state"], j["attempts"]) for j in jobs} == {i: ("completed", 1) for i in ids}


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
