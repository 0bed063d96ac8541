"""A person's queue, with real `queuectl` processes on SQLite and on PostgreSQL: `show`,
history kept across `restart` and `dlq retry` (every attempt's record and output), job JSON that
round-trips into `enqueue`, orphaned jobs made visible, and `list` showing priority and tags."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("process_helpers")
from process_helpers import group_alive, pid_from, start, stop  # noqa: E402

ATTEMPT_KEYS = {"attempt", "started_at", "finished_at", "duration", "exit_code", "signal", "worker_id", "host",
                "error", "cpu_seconds", "max_rss_bytes"}
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def show(q: Any, job_id: str) -> dict[str, Any]:
    return json.loads(q.run("show", "--json", job_id).stdout)


# -- history is never lost ----------------------------------------------------------------------------
def test_restart_keeps_every_attempts_record_and_output(qb: Any) -> None:
    qb.run("enqueue", "--id", "j", "--cmd", "echo out-$QUEUECTL_ATTEMPT; sleep 0.2; exit $((QUEUECTL_ATTEMPT - 1))",
           "--max-retries", "0")
    qb.run("worker", "start", "--burst", timeout=60)
    assert qb.job("j")["state"] == "completed"
    qb.run("restart", "j")
    # What describes the last run is cleared until it runs again; the record of attempt 1 stays.
    job = show(qb, "j")
    assert (job["state"], job["last_error"], job["last_exit_code"], job["last_duration"]) == (
        "pending", None, None, None)
    [one] = job["attempts"]
    assert set(one) >= ATTEMPT_KEYS and (one["attempt"], one["exit_code"], one["signal"]) == (1, 0, None)
    assert TIME_RE.match(one["started_at"]) and TIME_RE.match(one["finished_at"]) and one["duration"] >= 0.2
    assert one["worker_id"].startswith("worker-") and one["host"]
    assert qb.run("logs", "j").stdout == "out-1\n"  # not "has not run yet": it ran
    listed = qb.job("j")
    assert (listed["last_error"], listed["last_duration"]) == (None, None)

    qb.run("worker", "start", "--burst", timeout=60)  # attempt 2 exits 1: dead (no retries)
    job = show(qb, "j")
    assert job["state"] == "dead" and job["attempts"][0] == one
    assert [(a["attempt"], a["exit_code"], a["error"]) for a in job["attempts"]] == [(1, 0, None), (2, 1, "exit 1")]
    # Each attempt's output is its own: the second run did not overwrite the first.
    assert qb.run("logs", "j", "--attempt", "1").stdout == "out-1\n"
    assert qb.run("logs", "j", "--attempt", "2").stdout == "out-2\n"
    assert qb.run("logs", "j").stdout == "out-2\n"

    qb.run("dlq", "retry", "j")
    assert qb.job("j")["last_error"] is None
    qb.run("worker", "start", "--burst", timeout=60)
    job = show(qb, "j")
    assert [a["attempt"] for a in job["attempts"]] == [1, 2, 3] and job["attempts"][2]["exit_code"] == 2
    assert [qb.run("logs", "j", "--attempt", str(n)).stdout for n in (1, 2, 3)] == ["out-1\n", "out-2\n", "out-3\n"]
    text = qb.run("show", "j").stdout
    rows = [line.split() for line in text.splitlines() if re.match(r"\s*[123]\s+\d\d:\d\d:\d\d", line)]
    # Each row: number, start, took, CPU (and peak memory, when measured), then how it ended.
    assert [(r[0], r[r.index("exit"):r.index("exit") + 2]) for r in rows] == [
        ("1", ["exit", "0"]), ("2", ["exit", "1"]), ("3", ["exit", "2"])]
    # Output size, from the log files on this host ("out-N\n": 6 bytes).
    assert all("6 B" in line for line in text.splitlines() if re.match(r"\s*[123]\s+\d\d:", line))


def test_a_released_job_keeps_the_run_it_had(qb: Any, tmp_path: Path) -> None:
    qb.run("enqueue", "--id", "long", "--cmd", f"echo started; echo $$ > {tmp_path}/pid; sleep 60")
    worker, out = start(qb)
    pid = qb.wait_for(lambda: pid_from(tmp_path / "pid"), what="the job to start")
    qb.run("worker", "stop", "--now")
    assert worker.wait(timeout=60) == 0, out.text()
    qb.wait_for(lambda: not group_alive(pid), what="the job to be stopped")
    job = show(qb, "long")
    assert (job["state"], job["attempts"][0]["attempt"]) == ("pending", 1)
    assert qb.run("logs", "long").stdout == "started\n"
    qb.run("cancel", "long")
    assert [a["attempt"] for a in show(qb, "long")["attempts"]] == [1]


# -- show ----------------------------------------------------------------------------------------------
def test_show_tells_everything_about_a_job_at_80_and_200_columns(qb: Any, tmp_path: Path) -> None:
    qb.run("enqueue", "--id", "parent", "--cmd", "true", "--delay", "1h")
    spec = {"id": "child", "command": "echo hi", "priority": 7, "tags": ["nightly", "db"], "cwd": str(tmp_path),
            "env": {"API_TOKEN": "s3cret", "MODE": "full"}, "after": ["parent"], "unique_key": "backup",
            "retry_on": [75], "timeout": 30, "max_retries": 2, "queue": "slow"}
    qb.run("enqueue", json.dumps(spec))
    for width in (80, 200):
        text = qb.run("show", "child", env={"COLUMNS": str(width)}).stdout
        assert all(len(line) <= width for line in text.splitlines()), text
        fields = {line.split(None, 1)[0]: line for line in text.splitlines() if line.strip()}
        assert "waits on parent" in fields["state"] and "echo hi" in fields["command"]
        assert "slow" in fields["queue"] and "7" in fields["priority"] and "nightly, db" in fields["tags"]
        assert str(tmp_path) in fields["cwd"] and "API_TOKEN=***" in fields["env"] and "MODE=full" in fields["env"]
        assert "s3cret" not in text and "backup" in text and "30s" in fields["timeout"]
        assert "2 retries" in fields["retries"] and "75" in fields["retries"] and "no attempts yet" in text
    job = show(qb, "child")
    assert (job["after"], job["orphaned"], job["attempts"]) == (["parent"], False, [])
    assert "waits_on" not in job
    qb.run("show", "nope", check=False).stderr.startswith("Error: ")


def test_show_json_round_trips_into_enqueue(qb: Any, tmp_path: Path) -> None:
    qb.run("enqueue", "--id", "parent", "--cmd", "true", "--delay", "1h")
    spec = {"id": "a", "command": "echo hi", "priority": 7, "tags": ["nightly"], "cwd": str(tmp_path),
            "env": {"MODE": "full"}, "after": ["parent"], "unique_key": "k1", "retry_on": [75],
            "timeout": 30, "max_retries": 2, "queue": "slow"}
    qb.run("enqueue", json.dumps(spec))
    printed = show(qb, "a")
    for key in ("command", "queue", "priority", "max_retries", "timeout", "cwd", "env", "tags", "after",
                "unique_key", "retry_on", "no_retry_on", "run_at"):
        assert key in printed, key
    again = {**printed, "id": "b", "unique_key": "k2"}  # read-only keys (state, attempts, times...) are ignored
    assert qb.run("enqueue", json.dumps(again)).stdout.split() == ["b"]
    del printed["id"]
    printed["unique_key"] = "k3"
    [new_id] = qb.run("enqueue", "--file", "-", input=json.dumps(printed)).stdout.split()
    listed = {j["id"]: j for j in qb.json("list")}
    for job_id in ("b", new_id):
        for key, value in spec.items():
            if key not in ("id", "unique_key"):
                assert listed[job_id][key] == value, (job_id, key)
    # Unknown keys are still refused.
    assert qb.run("enqueue", json.dumps({"command": "true", "stat": "x"}), check=False).returncode != 0


def test_list_shows_priority_and_tags_only_where_set(q: Any) -> None:
    q.run("enqueue", "--id", "plain", "--cmd", "true")
    header = q.run("list").stdout.splitlines()[0].split()
    assert "PRI" not in header and "TAGS" not in header
    q.run("enqueue", "--id", "urgent", "--cmd", "true", "--priority", "9", "--tag", "hot")
    lines = q.run("list", env={"COLUMNS": "200"}).stdout.splitlines()
    header = lines[0].split()
    assert "PRI" in header and "TAGS" in header
    urgent = next(line for line in lines if line.startswith("urgent"))
    assert " 9 " in urgent and "hot" in urgent


# -- orphans -------------------------------------------------------------------------------------------
def test_a_sigkilled_workers_job_is_shown_orphaned(qb: Any, tmp_path: Path) -> None:
    qb.config("lease_seconds", 12)  # long enough to look at it before it is taken back
    qb.run("enqueue", "--id", "victim", "--cmd",
           f"[ $QUEUECTL_ATTEMPT -gt 1 ] && exit 0; echo $$ > {tmp_path}/pid; sleep 60")
    qb.run("enqueue", "--id", "bystander", "--cmd", "true", "--delay", "1h")
    worker, _ = start(qb)
    pgid = qb.wait_for(lambda: pid_from(tmp_path / "pid"), what="the job to start")
    assert qb.job("victim")["orphaned"] is False and "orphaned" not in qb.run("list").stdout
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    qb.wait_for(lambda: not group_alive(pgid), timeout=10, what="the janitor to stop the job")
    job = qb.job("victim")
    assert job["state"] == "processing" and job["orphaned"] is True
    assert qb.job("bystander")["orphaned"] is False
    listed = next(line for line in qb.run("list").stdout.splitlines() if line.startswith("victim"))
    assert "orphaned" in listed and "worker gone" in listed
    status = qb.run("status").stdout
    assert re.search(r"orphaned\s+1\s+worker gone; taken back once a worker runs", status), status
    assert qb.json("status")["orphaned"] == ["victim"]
    text = qb.run("show", "victim").stdout
    assert "orphaned: its worker is gone" in text and "lease ends in" in text
    assert show(qb, "victim")["orphaned"] is True
    # A worker takes it back once its lease has expired, and runs it again (attempt 2).
    second, out = start(qb)
    job = qb.wait_state("victim", "completed", timeout=60)
    assert job["orphaned"] is False
    first, again = show(qb, "victim")["attempts"]
    assert (first["attempt"], again["attempt"], again["exit_code"]) == (1, 2, 0)
    assert "lease expired" in first["error"] and first["duration"] is None
    stop(second, out)


def test_a_sigkilled_worker_under_a_host_name_of_its_own_is_known_gone_at_once(qb: Any, tmp_path: Path) -> None:
    """With worker.host set (not the machine's name), the CLI on the same machine still looks up
    that host's workers' processes: a SIGKILLed one is gone, not live until its row ages out."""
    qb.config("worker.host", "build-box-7")
    qb.config("lease_seconds", 30)  # the lease cannot be what tells
    qb.run("enqueue", "--id", "victim", "--cmd", f"echo $$ > {tmp_path}/pid; sleep 60")
    worker, _ = start(qb)
    pgid = qb.wait_for(lambda: pid_from(tmp_path / "pid"), what="the job to start")
    assert [w["hostname"] for w in qb.json("status")["workers"]] == ["build-box-7"]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    qb.wait_for(lambda: not group_alive(pgid), timeout=10, what="the janitor to stop the job")
    assert qb.job("victim")["orphaned"] is True
    status = qb.json("status")
    assert status["orphaned"] == ["victim"] and status["workers"] == []


def test_show_names_each_attempts_end_once(q: Any) -> None:
    q.run("enqueue", "--id", "missing", "--max-retries", "0", "--", "./no-such-script.sh")
    q.run("enqueue", "--id", "three", "--max-retries", "0", "--", "sh", "-c", "exit 3")
    q.run("worker", "start", "--burst")
    missing = q.run("show", "missing").stdout.splitlines()[-1]
    assert "exit 127: command not found" in missing and "exit 127: exit 127" not in missing, missing
    assert re.search(r"\bexit 3\b", q.run("show", "three").stdout.splitlines()[-1])
