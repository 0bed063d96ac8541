"""Control and visibility, with real `queuectl` processes on SQLite and on PostgreSQL:
where a job runs, cancel, remove, restart, the DLQ commands, purge and retention, logs -f, list,
status, worker stop --now, config get and completion."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("process_helpers")
from conftest import QUEUECTL  # noqa: E402
from process_helpers import group_alive, pid_from, start, stop  # noqa: E402


def one_error(proc: Any, *needles: str) -> None:
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def states(q: Any) -> dict[str, str]:
    return {j["id"]: j["state"] for j in q.json("list")}


# -- where a job runs --------------------------------------------------------------------------------
def test_a_job_runs_where_it_was_enqueued_with_its_env_and_tags(qb: Any, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "README").write_text("read me\n")
    env = {**qb.env, "MYVAR": "from-shell"}
    proc = subprocess.run(
        [*QUEUECTL, "enqueue", "--id", "here", "--cmd", "pwd; cat README; echo $MYVAR $OTHER",
         "--env", "MYVAR", "--env", "OTHER=given", "--env", "API_TOKEN=s3cret", "--tag", "nightly"],
        cwd=proj, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    qb.run("enqueue", "--id", "elsewhere", "--cmd", "pwd", "--cwd", str(tmp_path))
    qb.run("worker", "start", "--burst", timeout=60)
    assert qb.run("logs", "here").stdout == f"{proj}\nread me\nfrom-shell given\n"
    assert qb.run("logs", "elsewhere").stdout == f"{tmp_path}\n"
    job = qb.job("here")
    assert job["state"] == "completed" and job["cwd"] == str(proj) and job["tags"] == ["nightly"]
    assert job["env"] == {"MYVAR": "from-shell", "OTHER": "given", "API_TOKEN": "***"}  # secrets masked
    assert job["queue"] == "default" and job["last_duration"] >= 0
    assert [j["id"] for j in qb.json("list", "--tag", "nightly")] == ["here"]


def test_a_missing_cwd_is_a_failed_attempt_with_the_reason(qb: Any, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    qb.run("enqueue", "--id", "lost", "--cmd", "touch made", "--cwd", str(gone), "--max-retries", "0")
    gone.rmdir()
    qb.run("worker", "start", "--burst", timeout=60)
    job = qb.job("lost")
    assert job["state"] == "dead" and "does not exist" in job["last_error"] and str(gone) in job["last_error"]


def test_enqueue_refuses_a_bad_cwd_or_unset_env_and_changes_nothing(q: Any, tmp_path: Path) -> None:
    one_error(q.run("enqueue", "--cmd", "true", "--cwd", str(tmp_path / "nope"), check=False), "--cwd")
    one_error(q.run("enqueue", "--cmd", "true", "--env", "SURELY_NOT_SET_X", check=False), "SURELY_NOT_SET_X")
    one_error(q.run("enqueue", "--cmd", "true", "--tag", "a,b", check=False), "tag")
    assert q.json("list") == []


# -- cancel ------------------------------------------------------------------------------------------
def test_cancel_stops_a_running_job_within_a_second_and_cancels_waiting_ones(qb: Any, tmp_path: Path) -> None:
    qb.config("lease_seconds", 60)  # heartbeats 20 s apart: the cancel must not wait for one
    qb.run("enqueue", "--id", "long", "--cmd", f"echo $$ > {tmp_path}/pid; sleep 60; touch {tmp_path}/finished",
           "--priority", "5")
    qb.run("enqueue", "--id", "waiting", "--cmd", "true", "--delay", "1h")
    proc, out = start(qb)
    pgid = qb.wait_for(lambda: pid_from(tmp_path / "pid"), timeout=60, what="the job to start")
    sent = time.monotonic()
    said = qb.run("cancel", "long", "waiting").stdout
    assert "long: running" in said and "waiting: cancelled" in said
    qb.wait_state("long", "cancelled", timeout=15)
    assert time.monotonic() - sent < 3
    qb.wait_for(lambda: not group_alive(pgid), timeout=10, what="the job's process group to stop")
    assert not (tmp_path / "finished").exists()
    assert states(qb) == {"long": "cancelled", "waiting": "cancelled"}
    assert qb.counts()["cancelled"] == 2
    # A finished job cannot be cancelled; one refusal changes nothing.
    qb.run("enqueue", "--id", "other", "--cmd", "true", "--delay", "1h")
    one_error(qb.run("cancel", "other", "long", check=False), "long", "finished")
    one_error(qb.run("cancel", "other", "nosuch", check=False), "nosuch")
    assert qb.job("other")["state"] == "pending"
    stop(proc, out)
    assert "cancelled: long" in out.text()


# -- remove, restart, the DLQ, purge ---------------------------------------------------------------
def test_remove_restart_dlq_retry_remove_and_purge(qb: Any) -> None:
    qb.config("subprocess.log_file", "always")  # the worker's own file is what this tests
    qb.run("enqueue", "--id", "ok", "--cmd", "echo fine")
    qb.run("enqueue", "--id", "bad1", "--cmd", "echo bad; exit 3", "--max-retries", "0")
    qb.run("enqueue", "--id", "bad2", "--cmd", "exit 4", "--max-retries", "0")
    qb.run("enqueue", "--id", "wait", "--cmd", "true", "--delay", "1h")
    qb.run("cancel", "wait")
    qb.run("worker", "start", "--burst", timeout=60)
    assert states(qb) == {"ok": "completed", "bad1": "dead", "bad2": "dead", "wait": "cancelled"}
    log = Path(qb.job("ok")["log_path"])
    assert log.exists()

    # restart: finished jobs back to pending, attempts 0, optionally a new command
    qb.run("enqueue", "--id", "pending", "--cmd", "true", "--delay", "1h")
    one_error(qb.run("restart", "ok", "pending", check=False), "pending", "not finished")
    assert qb.job("ok")["state"] == "completed"
    assert qb.run("restart", "ok", "--cmd", "echo again").stdout.split() == ["ok"]
    job = qb.job("ok")
    assert (job["state"], job["attempts"], job["command"]) == ("pending", 0, "echo again")
    qb.run("cancel", "pending")

    # dlq retry --cmd, then --all
    assert qb.run("dlq", "retry", "bad1", "--cmd", "echo fixed").stdout.split() == ["bad1"]
    one_error(qb.run("dlq", "retry", "bad1", "bad2", check=False), "bad1", "not in the DLQ")
    assert qb.job("bad2")["state"] == "dead"
    qb.run("worker", "start", "--burst", timeout=60)
    assert qb.run("logs", "ok").stdout == "again\n" and qb.run("logs", "bad1").stdout == "fixed\n"
    assert qb.run("dlq", "retry", "--all").stdout.split() == ["bad2"]
    qb.run("worker", "start", "--burst", timeout=60)
    one_error(qb.run("dlq", "retry", "bad2", "--all", check=False), "--all")

    # remove: finished jobs and their logs, all or nothing
    qb.run("enqueue", "--id", "todo", "--cmd", "true", "--delay", "1h")
    one_error(qb.run("remove", "ok", "todo", check=False), "todo", "cancel it first")
    assert log.exists() and qb.job("ok")
    assert qb.run("remove", "ok").stdout.strip() == "ok: removed"
    assert "ok" not in states(qb) and not log.exists()
    one_error(qb.run("remove", "ok", check=False), "no job")

    # dlq remove
    assert qb.job("bad2")["state"] == "dead"
    one_error(qb.run("dlq", "remove", "bad2", "wait", check=False), "wait")
    assert qb.run("dlq", "remove", "--all").stdout.strip() == "removed 1 job(s)"
    assert qb.json("dlq", "list") == []

    # purge: finished jobs older than the age given, only the states given
    one_error(qb.run("purge", "--older-than", "soon", check=False), "--older-than")
    assert qb.run("purge", "--older-than", "1h").stdout.strip() == "purged 0 job(s)"
    time.sleep(0.05)
    assert qb.run("purge", "--older-than", "0", "--state", "cancelled").stdout.strip() == "purged 2 job(s)"
    assert states(qb) == {"bad1": "completed", "todo": "pending"}
    assert qb.run("purge", "--older-than", "0s").stdout.strip() == "purged 1 job(s)"


def test_retention_is_applied_by_running_workers(qb: Any) -> None:
    qb.config("subprocess.log_file", "always")  # the worker's own file is what this tests
    qb.run("enqueue", "--id", "old", "--cmd", "echo x")
    qb.run("enqueue", "--id", "dead", "--cmd", "exit 1", "--max-retries", "0")
    qb.run("worker", "start", "--burst", timeout=60)
    log = Path(qb.job("old")["log_path"])
    assert log.exists()
    qb.config("retention.completed", "1s")
    assert qb.run("config", "get", "retention.completed").stdout.strip() == "1s"  # shown with units, as typed
    time.sleep(1.2)
    qb.run("worker", "start", "--burst", timeout=60)  # retention.dead is 0 by default: kept
    assert states(qb) == {"dead": "dead"} and not log.exists()


# -- logs --------------------------------------------------------------------------------------------
def test_logs_follow_a_running_attempt_and_earlier_attempts(qb: Any, tmp_path: Path) -> None:
    counter = tmp_path / "n"
    qb.config("backoff_base", 0.01)
    cmd = (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
           f"for i in 1 2 3; do echo attempt $n tick $i; sleep 0.4; done; [ $n -ge 2 ]")
    qb.run("enqueue", "--id", "tick", "--cmd", cmd)
    one_error(qb.run("logs", "tick", check=False), "not run yet", "logs -f")
    follower = subprocess.Popen([*QUEUECTL, "logs", "-f", "tick"], env=qb.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    proc, out = start(qb)
    # The first attempt fails: -f follows it to its end and exits 1.
    text, err = follower.communicate(timeout=30)
    assert follower.returncode == 1, err
    assert text == "attempt 1 tick 1\nattempt 1 tick 2\nattempt 1 tick 3\n"
    # While the second attempt runs, plain `logs` shows it so far; -f follows it to completion: 0.
    qb.wait_for(lambda: qb.job("tick")["attempts"] == 2 and "tick 1" in qb.run("logs", "tick").stdout,
                timeout=30, what="the second attempt's first line")
    so_far = qb.run("logs", "tick").stdout
    assert so_far.startswith("attempt 2 tick 1\n")
    followed = qb.run("logs", "-f", "tick", timeout=30)
    assert followed.returncode == 0 and followed.stdout.endswith("attempt 2 tick 3\n")
    assert qb.run("logs", "tick", "--attempt", "1").stdout == text
    assert qb.run("logs", "tick", "--tail", "1").stdout == "attempt 2 tick 3\n"
    assert qb.run("logs", "tick", "--attempt", "1", "--tail", "2").stdout == "attempt 1 tick 2\nattempt 1 tick 3\n"
    one_error(qb.run("logs", "tick", "--attempt", "3", check=False), "no attempt 3")
    assert qb.run("logs", "-f", "tick").returncode == 0  # finished: printed, exit by outcome
    stop(proc, out)


def test_logs_of_an_attempt_running_on_another_host_come_from_the_storage(qb: Any, tmp_path: Path) -> None:
    qb.config("subprocess.log_file", "always")  # a local copy too, deleted below: the storage's is read
    qb.config("lease_seconds", 3)
    qb.run("enqueue", "--id", "far", "--cmd", "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.5; done")
    proc, out = start(qb)
    log = qb.home / "logs" / "far.1.log"
    qb.wait_for(log.exists, timeout=30, what="the log file")
    log.unlink()  # as on another host: the worker writes on, the file is not here
    seen = qb.wait_for(lambda: (r := qb.run("logs", "far")).stdout and r, timeout=10, what="output via heartbeat")
    assert seen.stdout.startswith("line 1\n") and seen.stderr == ""  # the storage keeps it: no file needed
    followed = qb.run("logs", "-f", "far", timeout=30)
    assert followed.returncode == 0 and followed.stdout.endswith("line 7\nline 8\n"), followed
    assert followed.stdout.count("line 8") == 1
    stop(proc, out)


# -- list ----------------------------------------------------------------------------------------------
def test_list_newest_first_limited_with_a_footer_fitted_to_the_width(q: Any) -> None:
    long = "echo " + "x" * 300
    lines = "".join(json.dumps({"id": f"j{n:03d}", "command": long if n % 2 else "true", "tags": ["t"] if n < 5 else []})
                    + "\n" for n in range(60))
    q.run("enqueue", "--file", "-", input=lines)
    for columns in ("80", "200"):
        out = q.run("list", env={"COLUMNS": columns}).stdout.splitlines()
        assert out[0].split()[:3] == ["ID", "STATE", "TRIES"] and "LAST ERROR" in out[0]
        assert [line.split()[0] for line in out[1:51]] == [f"j{n:03d}" for n in range(59, 9, -1)]
        assert "10 more" in out[51] and len(out) == 52
        assert all(len(line) <= int(columns) for line in out), out
        assert "…" in out[1] and "\x1b" not in "".join(out)  # not a terminal: no colour
    assert len(q.run("list", "--all").stdout.splitlines()) == 61
    assert len(q.run("list", "--limit", "5").stdout.splitlines()) == 7
    assert len(q.json("list")) == 60 and len(q.json("list", "--limit", "3")) == 3
    assert [j["id"] for j in q.json("list", "--tag", "t")] == ["j004", "j003", "j002", "j001", "j000"]
    assert q.json("list", "--queue", "other") == [] and len(q.json("list", "--queue", "default")) == 60
    assert q.run("list", "--state", "dead").stdout.strip() == "no jobs match"


# -- status and workers --------------------------------------------------------------------------------
def test_status_shows_the_running_job_from_its_claim_and_drops_a_killed_worker(qb: Any, tmp_path: Path) -> None:
    qb.run("enqueue", "--id", "soon", "--cmd", "true", "--delay", "1h")
    proc, out = start(qb)
    qb.wait_for(lambda: qb.json("status")["workers"], timeout=20, what="a live worker")
    qb.run("enqueue", "--id", "busy", "--cmd", f"echo $$ > {tmp_path}/pid; sleep 30")
    qb.wait_for(lambda: pid_from(tmp_path / "pid"), timeout=30, what="the job to start")
    data = qb.json("status")
    (w,) = data["workers"]
    assert w["current_job"] == "busy" and w["current_job_since"] and w["host"] and w["last_seen_at"]
    assert data["counts"]["processing"] == 1 and data["pending"] == {"ready": 0, "scheduled": 1, "waiting": 0}
    assert data["queues"]["default"]["processing"] == 1 and data["queues"]["default"]["paused"] is False
    text = qb.run("status").stdout
    assert re.search(r"^  scheduled\s+1$", text, re.M) and re.search(r"worker-\d+ .* busy ", text), text
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert qb.json("status")["workers"] == []  # at once, not 15 s later


def test_status_lists_every_job_a_slotted_worker_runs(q: Any, tmp_path: Path) -> None:
    """`worker start --slots 7` running 7 jobs: status --json lists all 7, newest claim first; the
    table shows the first 4 on lines of their own and "+3 more"."""
    for i in range(7):
        q.run("enqueue", "--id", f"s{i}", "--cmd", f"echo $$ > {tmp_path}/pid{i}; sleep 60")
    proc, out = start(q, "--slots", "7")
    try:
        q.wait_for(lambda: all(pid_from(tmp_path / f"pid{i}") for i in range(7)), timeout=60, what="7 jobs started")
        (w,) = q.json("status")["workers"]
        ids = [j["id"] for j in w["jobs"]]
        assert sorted(ids) == [f"s{i}" for i in range(7)] and w["current_job"] == ids[0], w
        assert [j["since"] for j in w["jobs"]] == sorted((j["since"] for j in w["jobs"]), reverse=True), w
        lines = q.run("status").stdout.splitlines()
        at = next(n for n, line in enumerate(lines) if " worker-" in line)  # after its HOST
        assert [line.split()[-2] for line in lines[at:at + 4]] == ids[:4], lines
        assert lines[at + 4].split() == ["+3", "more"], lines
    finally:
        q.run("worker", "stop", "--now")
        assert proc.wait(timeout=60) == 0, out.text()


def test_worker_stop_now_releases_the_running_job(qb: Any, tmp_path: Path) -> None:
    qb.run("enqueue", "--id", "slow", "--cmd", f"echo $$ > {tmp_path}/pid; sleep 60")
    proc, out = start(qb)
    pgid = qb.wait_for(lambda: pid_from(tmp_path / "pid"), timeout=30, what="the job to start")
    assert qb.run("worker", "stop", "--now").stdout.strip() == "asked 1 worker(s) to stop now"
    assert proc.wait(timeout=20) == 0
    qb.wait_for(lambda: not group_alive(pgid), timeout=10, what="the job's group to stop")
    job = qb.job("slow")
    assert (job["state"], job["attempts"]) == ("pending", 0)
    assert "released: slow" in out.text()


# -- config get, completion, worker log lines ----------------------------------------------------------
def test_config_get(q: Any) -> None:
    assert q.run("config", "get", "max-retries").stdout == "3\n"
    q.config("max_retries", 5)
    assert q.run("config", "get", "max_retries").stdout == "5\n"
    assert q.run("config", "get", "retention.dead").stdout == "0\n"  # a span: 0 keeps them
    assert json.loads(q.run("config", "get", "max_retries", "--json").stdout) == 5
    one_error(q.run("config", "get", "max_retry", check=False), "did you mean 'max_retries'")


def test_completion_scripts_and_job_ids(q: Any) -> None:
    for shell in ("bash", "zsh", "fish"):
        assert "_QUEUECTL_COMPLETE" in q.run("completion", shell).stdout
    q.run("enqueue", "--id", "alpha1", "--cmd", "true")
    q.run("enqueue", "--id", "beta", "--cmd", "true")
    got = q.run(env={"_QUEUECTL_COMPLETE": "bash_complete", "COMP_WORDS": "queuectl logs al", "COMP_CWORD": "2"})
    assert "alpha1" in got.stdout and "beta" not in got.stdout
    one_error(q.run("completion", "tcsh", check=False), "tcsh")


def test_worker_log_lines_start_with_a_local_time_and_show_durations(q: Any) -> None:
    q.run("enqueue", "--id", "nap", "--cmd", "sleep 0.3")
    out = q.run("worker", "start", "--burst", timeout=60).stdout
    line = next(ln for ln in out.splitlines() if "completed: nap" in ln)
    assert re.match(r"\d\d:\d\d:\d\d \[worker-\d+\] completed: nap in \d+ms$", line), line

