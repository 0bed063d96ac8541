"""Accounting with real processes, on SQLite and PostgreSQL: what each attempt used (wall time, CPU,
peak memory) and how it ended (exit code, or signal and why), in `show`, `show --json`, `list` and
`list --json`. The dashboard's API and /metrics are in test_dashboard.py."""

from __future__ import annotations

import re
import shlex
import sys
from typing import Any

MIB = 1024 * 1024
PY = shlex.quote(sys.executable)
# 200 MiB really touched (a page at a time), so it is resident, not only reserved.
ALLOCATE = PY + " -c " + shlex.quote("b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])")
# One second of CPU time (not of wall time: a loaded machine still burns a whole second).
BURN = PY + " -c " + shlex.quote("import time\nt = time.process_time()\nwhile time.process_time() - t < 1: pass")


def last_attempt(q: Any, job_id: str) -> dict[str, Any]:
    return q.json("show", job_id)["attempts"][-1]


def test_every_attempt_records_what_it_used_and_how_it_ended(qb: Any) -> None:
    q = qb
    q.run("enqueue", "--id", "mem", "--cmd", ALLOCATE)
    q.run("enqueue", "--id", "cpu", "--cmd", BURN)
    q.run("enqueue", "--id", "sleepy", "--cmd", "sleep 1")
    q.run("enqueue", "--id", "killed", "--max-retries", "0", "--cmd", "kill -9 $$")
    q.run("enqueue", "--id", "slow", "--max-retries", "0", "--timeout", "0.5", "--cmd", "sleep 30")
    q.run("worker", "start", "--burst", timeout=120)

    mem, cpu, sleepy = last_attempt(q, "mem"), last_attempt(q, "cpu"), last_attempt(q, "sleepy")
    assert mem["max_rss_bytes"] >= 150 * MIB and (mem["exit_code"], mem["signal"], mem["error"]) == (0, None, None)
    assert cpu["cpu_seconds"] >= 0.7 and cpu["duration"] >= cpu["cpu_seconds"] - 0.05
    assert sleepy["duration"] >= 0.9 and sleepy["cpu_seconds"] < 0.3
    killed = last_attempt(q, "killed")
    assert (killed["exit_code"], killed["signal"], killed["error"]) == (None, "SIGKILL", "killed by SIGKILL")
    assert killed["cpu_seconds"] is not None
    # queuectl ended it: the signal it sent, and why.
    slow = last_attempt(q, "slow")
    assert (slow["exit_code"], slow["signal"], slow["error"]) == (None, "SIGTERM", "timed out after 0.5s")
    assert 0.4 < slow["duration"] < 10

    # The last attempt's, on the job: `list --json` (and `show --json`).
    jobs = {j["id"]: j for j in q.json("list")}
    assert jobs["mem"]["last_max_rss_bytes"] == mem["max_rss_bytes"]
    assert jobs["cpu"]["last_cpu_seconds"] == cpu["cpu_seconds"] and jobs["cpu"]["last_duration"] == cpu["duration"]
    assert jobs["sleepy"]["last_max_rss_bytes"] is None  # no larger than the worker: not measurable so
    assert q.json("show", "mem")["last_max_rss_bytes"] == mem["max_rss_bytes"]

    # `list`: MEM beside TOOK, right-aligned under its header, in sizes people read.
    lines = q.run("list", env={"COLUMNS": "160"}).stdout.splitlines()
    header = lines[0]
    assert re.search(r"TOOK +MEM +COMMAND", header), header
    row = next(line for line in lines if line.startswith("mem "))
    size = re.search(r" (\d+M) ", row)
    assert size is not None and 150 <= int(size.group(1)[:-1]) < 400, row
    assert size.end(1) == header.index("MEM") + len("MEM"), (header, row)

    # `show`: a row per attempt with its CPU time and peak memory.
    shown = q.run("show", "mem", env={"COLUMNS": "160"}).stdout.splitlines()
    table = shown[shown.index("") + 1:]
    assert re.search(r"TOOK +CPU +MEM +EXIT", table[0]), table
    assert re.search(r"\d+ms +\d+ms +\d+M +exit 0", table[1]), table
    shown = q.run("show", "killed", env={"COLUMNS": "160"}).stdout
    assert "SIGKILL: killed by SIGKILL" in shown
    assert "SIGTERM: timed out after 0.5s" in q.run("show", "slow", env={"COLUMNS": "160"}).stdout


def test_an_attempt_stopped_by_queuectl_says_why(qb: Any, tmp_path: Any) -> None:
    q = qb
    q.run("enqueue", "--id", "cancelme", "--cmd", "sleep 30")
    worker = q.start_worker()
    q.wait_state("cancelme", "processing")
    q.run("cancel", "cancelme")
    q.wait_state("cancelme", "cancelled")
    cancelled = last_attempt(q, "cancelme")
    assert (cancelled["signal"], cancelled["error"]) == ("SIGTERM", "cancelled")
    assert cancelled["duration"] is not None and cancelled["cpu_seconds"] is not None

    q.run("enqueue", "--id", "stopme", "--cmd", "sleep 30")
    q.wait_state("stopme", "processing")
    q.run("worker", "stop", "--now")
    assert worker.wait(timeout=30) == 0
    stopped = last_attempt(q, "stopme")
    assert (stopped["signal"], stopped["error"]) == ("SIGTERM", "stopped: its worker was stopping at once")
    assert q.job("stopme")["state"] == "pending"
