"""The subprocess executor with real processes: sessions, timeouts that take the whole process
group down, bounded output, readable errors, and a worker that no job can kill or litter."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("process_helpers")  # its asserts report like a test's own
from process_helpers import alive, children, group_alive, pid_from, proc_stat, start, stop  # noqa: E402


# -- helpers -----------------------------------------------------------------------------------
def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# -- tests -------------------------------------------------------------------------------------
def test_job_runs_in_its_own_session_and_process_group(q: Any, tmp_path: Path) -> None:
    q.run("enqueue", "--id", "own", "--cmd", f"echo $$ > {tmp_path}/pid; sleep 2; echo ok")
    proc, out = start(q)
    job_pid = q.wait_for(lambda: pid_from(tmp_path / "pid"), timeout=60, what="the job to start")
    state = proc_stat(job_pid)
    assert state is not None
    _, ppid, pgrp, session = state
    assert ppid == proc.pid  # the worker's own child, reaped by it
    assert pgrp == job_pid and session == job_pid  # a session of its own, out of reach of the terminal
    # The worker's start-up signal blocking is not inherited: a timeout's SIGTERM must reach the job.
    # (The shell blocks every signal for an instant around each fork, here `sleep`'s: look again.)
    def blocked() -> int:
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{job_pid}/status").read_text().splitlines()
                      if ":\t" in line)
        return int(status["SigBlk"], 16)

    q.wait_for(lambda: blocked() == 0, timeout=1.5, interval=0.01, what="the job's signal mask to be empty")
    # A terminal's Ctrl+C reaches the worker's group only; the job finishes normally.
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0, out.text()
    assert q.job("own")["state"] == "completed"
    assert q.run("logs", "own").stdout == "ok\n"


def test_timeout_kills_the_whole_process_group(q: Any, tmp_path: Path) -> None:
    q.run("enqueue", "--id", "slow", "--timeout", "1", "--max-retries", "0", "--cmd",
          f"echo $$ > {tmp_path}/pid; sleep 999 & echo $! > {tmp_path}/bg; sleep 999")
    q.run("worker", "start", "--burst", timeout=120)
    job = q.job("slow")
    assert job["state"] == "dead", job
    assert "timed out" in job["last_error"], job
    pgid, bg = pid_from(tmp_path / "pid"), pid_from(tmp_path / "bg")
    assert pgid and bg
    assert not alive(bg)  # the background sleep, too
    assert not group_alive(pgid)


def test_timeout_escalates_to_sigkill_after_the_grace(q: Any, tmp_path: Path) -> None:
    q.config("subprocess.kill_grace_seconds", 1)
    # SIGTERM is ignored by the shell and, inherited, by its sleep: only SIGKILL ends this one.
    q.run("enqueue", "--id", "stubborn", "--timeout", "1", "--max-retries", "0", "--cmd",
          f"trap '' TERM; echo $$ > {tmp_path}/pid; sleep 999")
    q.run("worker", "start", "--burst", timeout=120)
    job = q.job("stubborn")
    assert job["state"] == "dead" and "timed out" in job["last_error"], job
    assert not group_alive(pid_from(tmp_path / "pid") or 0)


def test_huge_output_is_bounded_in_the_log_memory_and_database(q: Any, tmp_path: Path) -> None:
    q.config("subprocess.log_file", "always")  # the worker's own file is what this tests
    limit = 64 * 1024
    q.config("subprocess.max_log_bytes", limit)
    q.config("logs.max_bytes", limit)  # what the storage keeps of it
    q.run("enqueue", "--id", "chatty", "--cmd", "echo first; yes queuectl | head -c 100000000; echo; echo last")
    q.run("enqueue", "--id", "binary", "--cmd", "head -c 100000000 /dev/zero")
    proc, out = start(q)
    job = q.wait_state("chatty", "completed", timeout=120)
    q.wait_state("binary", "completed", timeout=120)
    # Measured before the worker exits: its peak resident memory stayed far below 100 MB.
    hwm_mib = vm_hwm_kib(proc.pid) / 1024
    stop(proc, out)
    assert hwm_mib < 80, f"worker peaked at {hwm_mib:.0f} MiB"

    log = Path(job["log_path"])
    assert log.stat().st_size <= limit + 200  # plus the one-line "omitted" notice
    text = q.run("logs", "chatty").stdout
    assert text.startswith("first\nqueuectl\n")
    assert text.endswith("queuectl\nq\nlast\n")  # 10^8 % 9 == 1: head cut the last line to "q"
    assert f"[queuectl: {100_000_000 + 12 - limit:,} bytes cut]" in text
    assert Path(q.job("binary")["log_path"]).stat().st_size <= limit + 200
    db_bytes = sum(p.stat().st_size for p in q.home.glob("queue.db*"))
    assert db_bytes < 2 * 1024 * 1024, f"database is {db_bytes} bytes"


def test_command_not_found_is_a_failed_attempt(q: Any) -> None:
    q.run("enqueue", "--id", "missing", "--max-retries", "0", "--cmd", "no-such-command-queuectl-test")
    q.run("enqueue", "--id", "next", "--priority", "-1", "--cmd", "true")
    q.run("worker", "start", "--burst", timeout=120)
    job = q.job("missing")
    assert (job["state"], job["last_exit_code"]) == ("dead", 127), job
    assert "command not found" in job["last_error"]
    assert "not found" in q.run("logs", "missing").stdout  # the shell's own message is kept
    assert q.job("next")["state"] == "completed"


def test_command_not_executable_is_a_failed_attempt(q: Any, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    q.run("enqueue", "--id", "noexec", "--max-retries", "0", "--cmd", str(script))
    q.run("worker", "start", "--burst", timeout=120)
    job = q.job("noexec")
    assert (job["state"], job["last_exit_code"]) == ("dead", 126), job
    assert "not executable" in job["last_error"]


def test_job_killed_by_a_signal_reports_the_signal(q: Any) -> None:
    q.run("enqueue", "--id", "killed", "--max-retries", "0", "--cmd", "kill -KILL $$")
    q.run("enqueue", "--id", "segv", "--max-retries", "0", "--cmd", "kill -SEGV $$")
    q.run("enqueue", "--id", "exit3", "--max-retries", "0", "--cmd", "exit 3")
    q.run("worker", "start", "--burst", timeout=120)
    assert q.job("killed")["last_error"] == "killed by SIGKILL"
    assert q.job("segv")["last_error"] == "killed by SIGSEGV"
    exit3 = q.job("exit3")
    assert (exit3["last_exit_code"], exit3["last_error"]) == (3, "exit 3")


def test_worker_survives_hostile_jobs_and_leaves_no_zombies(q: Any, tmp_path: Path) -> None:
    q.config("subprocess.kill_grace_seconds", 0.5)
    hostile = {
        "notfound": "no-such-command-queuectl-test",
        "selfkill": "kill -KILL $$",
        "timeout": f"sleep 999 & echo $! > {tmp_path}/bg_timeout; sleep 999",
        "orphan": f"sleep 999 & echo $! > {tmp_path}/bg_orphan",  # leader exits, child lingers
        "closed": "exec >&- 2>&-; sleep 0.2",  # closes its output early
        "chatty": "yes | head -c 20000000",
        "badshell": "(",  # a syntax error
        "stdin": "cat",  # stdin is /dev/null: must not hang
    }
    proc, out = start(q)
    for name, cmd in hostile.items():
        extra = ["--timeout", "1"] if name == "timeout" else []
        q.run("enqueue", "--id", name, "--max-retries", "0", *extra, "--cmd", cmd)
    q.run("enqueue", "--id", "z-final", "--priority", "-1", "--cmd", "echo fine")
    q.wait_state("z-final", "completed", timeout=120)
    assert proc.poll() is None, out.text()

    states = {name: q.job(name)["state"] for name in hostile}
    assert states == {"notfound": "dead", "selfkill": "dead", "timeout": "dead", "orphan": "completed",
                      "closed": "completed", "chatty": "completed", "badshell": "dead", "stdin": "completed"}
    for name in ("timeout", "orphan"):
        bg = pid_from(tmp_path / f"bg_{name}")
        assert bg is not None
        q.wait_for(lambda: not alive(bg), timeout=10, what=f"{name}'s background process to be gone")
    # Every job reaped: the worker's only child is its janitor, and it is no zombie.
    kids = children(proc.pid)
    assert [state for _, state in kids if state == "Z"] == [], kids
    assert len(kids) == 1, kids
    stop(proc, out)
    assert "Traceback" not in out.text()


def test_a_log_file_that_cannot_be_written_never_fails_the_job(q: Any, tmp_path: Path) -> None:
    q.config("subprocess.log_file", "always")  # the worker's own file is what this tests
    # A directory where the attempt's log file should go: writing the first output fails. The job
    # is the user's work and must still run to its end; its output survives in the stored tail.
    (q.home / "logs" / "unloggable.1.log").mkdir(parents=True)
    done = tmp_path / "done"
    q.run("enqueue", "--id", "unloggable", "--max-retries", "0", "--cmd", f"echo hi; sleep 1; echo bye > {done}")
    q.run("enqueue", "--id", "z-next", "--priority", "-1", "--cmd", "true")
    proc, out = start(q)
    job = q.wait_state("unloggable", "completed", timeout=60)
    q.wait_state("z-next", "completed", timeout=60)
    assert done.exists(), job
    # The storage has the whole output, and says (as the stored tail does) why the local file is missing.
    logs = q.run("logs", "unloggable").stdout
    assert logs.startswith("hi\n[queuectl: cannot write the log file ") and "Is a directory" in logs
    import sqlite3

    with sqlite3.connect(q.home / "queue.db") as db:
        tail = db.execute("SELECT output_tail FROM jobs WHERE id = 'unloggable'").fetchone()[0]
    assert "hi" in tail and "cannot write the log file" in tail and "Is a directory" in tail
    assert [state for _, state in children(proc.pid) if state == "Z"] == []
    stop(proc, out)


def test_plain_commands_skip_the_shell_and_shell_syntax_keeps_it(q: Any, tmp_path: Path) -> None:
    from queuectl_plugins.subprocess_executor.executor import direct_argv

    # Plain words run directly (one exec instead of a shell's start-up plus an exec)...
    assert direct_argv("true") == [shutil.which("true")]
    assert direct_argv("sleep 2") == [shutil.which("sleep"), "2"]
    # ...anything a shell would interpret, builtins and unknown commands go through sh.
    for command in ("exit 4", "cd /tmp", "echo hi", "echo $HOME", "a | b", "sleep 1; true", "FOO=1 env",
                    "ls *.py", "ls ~", "cat < x", "no-such-command-xyz", "'quoted' word"):
        assert direct_argv(command) is None, command
    # And the user-visible results are the shell's either way.
    q.run("enqueue", "--id", "builtin", "--cmd", "exit 4", "--max-retries", "0")
    q.run("enqueue", "--id", "missing", "--cmd", "no-such-command-xyz", "--max-retries", "0")
    q.run("enqueue", "--id", "expand", "--cmd", "echo $QUEUECTL_JOB_ID")
    q.run("enqueue", "--id", "direct", "--cmd", "false", "--max-retries", "0")
    q.run("enqueue", "--id", "args", "--cmd", f"touch {tmp_path}/made")
    q.run("worker", "start", "--burst")
    assert q.job("builtin")["last_error"] == "exit 4"
    assert q.job("missing")["last_error"] == "exit 127: command not found"
    assert q.job("direct")["last_error"] == "exit 1"
    assert q.run("logs", "expand").stdout == "expand\n"
    assert (tmp_path / "made").exists() and q.job("args")["state"] == "completed"


def test_without_pidfd_the_executor_polls_for_the_exit(tmp_path: Path, monkeypatch: Any) -> None:
    # Systems without pidfd_open (macOS, Linux before 5.3) wait by polling; same results.
    from queuectl_core.interfaces import RunContext
    from queuectl_core.jobs.models import Job, JobState
    from queuectl_core.jobs.timeutil import now
    from queuectl_plugins.subprocess_executor.executor import SubprocessExecutor

    monkeypatch.delattr(os, "pidfd_open")
    executor = SubprocessExecutor(tmp_path / "logs", 1 << 20, 1.0, "/bin/sh")

    def job(job_id: str, command: str, timeout: float | None = None) -> Job:
        t = now()
        return Job(id=job_id, command=command, state=JobState.PROCESSING, attempts=1, max_retries=0, priority=0,
                   created_at=t, updated_at=t, run_at=t, timeout=timeout)

    ctx = RunContext(attempt=1, tick_interval=0.2, tick=lambda: False)
    ok = executor.run(job("a", "echo polled; exit 3"), ctx)
    assert (ok.exit_code, ok.error, ok.output_tail) == (3, "exit 3", "polled\n")
    slow = executor.run(job("b", "sleep 30", timeout=0.5), ctx)
    assert slow.error == "timed out after 0.5s" and slow.duration < 10
    # Reaped with wait4 there too: what the job used comes with it.
    assert ok.cpu_seconds is not None and slow.cpu_seconds is not None


def test_what_a_job_used_comes_from_wait4_and_a_peak_below_the_workers_is_unknown() -> None:
    from types import SimpleNamespace

    from queuectl_plugins.subprocess_executor.executor import usage_of

    usage = SimpleNamespace(ru_utime=0.5, ru_stime=0.25, ru_maxrss=300 * 1024)  # KiB, as Linux reports it
    assert usage_of(usage, 40 * 1024 * 1024) == (0.75, 300 * 1024 * 1024)
    # No larger than the worker's own peak: the job may be far smaller, so it is not said.
    assert usage_of(usage, 300 * 1024 * 1024) == (0.75, None)
    assert usage_of(None, 0) == (None, None)  # never reaped by wait4 (reaped elsewhere)


# -- secrets and permissions (issue 6) ----------------------------------------------------------
def test_jobs_do_not_inherit_queuectl_secrets_or_libpq_passwords(q: Any, tmp_path: Path) -> None:
    out = tmp_path / "env"
    q.run("enqueue", "--id", "env", "--cmd", f"env > {out}")
    secrets = {"PGPASSWORD": "pw-S3cr3t", "PGPASSFILE": "/tmp/pgpass-S3cr3t",
               "QUEUECTL_POSTGRES_DSN": "postgresql://u:dsn-S3cr3t@127.0.0.1:1/x"}
    # The DSN is set but unused (storage stays sqlite): it must still not reach the job.
    q.run("worker", "start", "--burst", env={**secrets, "JOB_VISIBLE": "yes"})
    assert q.job("env")["state"] == "completed"
    text = out.read_text()
    assert "S3cr3t" not in text, text
    assert "JOB_VISIBLE=yes" in text and "QUEUECTL_JOB_ID=env" in text and "QUEUECTL_ATTEMPT=1" in text


def test_a_symlink_at_the_log_path_is_not_written_through(q: Any, tmp_path: Path) -> None:
    q.config("subprocess.log_file", "always")  # the worker's own file is what this tests
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    logs = q.home / "logs"
    logs.mkdir(parents=True)
    (logs / "sym.1.log").symlink_to(victim)
    done = tmp_path / "done"
    q.run("enqueue", "--id", "sym", "--max-retries", "0", "--cmd", f"echo planted-output; touch {done}")
    q.run("worker", "start", "--burst")
    job = q.job("sym")
    assert job["state"] == "completed" and done.exists(), job  # the attempt still ran
    assert victim.read_text() == "precious\n"  # neither truncated nor written through
    assert not (logs / "sym.1.log").is_symlink()
    assert "planted-output" in q.run("logs", "sym").stdout  # the output is kept, in a file of our own


def test_log_files_are_0600_and_the_logs_dir_0700_whatever_the_umask(q: Any, tmp_path: Path) -> None:
    q.config("subprocess.log_file", "always")  # the worker's own file is what this tests
    logs = q.home / "logs"
    logs.mkdir(parents=True, mode=0o755)
    logs.chmod(0o755)  # an existing, too open directory is tightened
    stale = logs / "perm.1.log"
    stale.write_text("old")
    stale.chmod(0o644)  # a log file left from before is tightened when rewritten
    q.run("enqueue", "--id", "perm", "--cmd", "echo hi")
    q.run("enqueue", "--id", "perm2", "--cmd", "echo there")
    old = os.umask(0)
    try:
        q.run("worker", "start", "--burst")
    finally:
        os.umask(old)
    assert (logs.stat().st_mode & 0o777) == 0o700
    for name in ("perm.1.log", "perm2.1.log"):
        assert ((logs / name).stat().st_mode & 0o777) == 0o600, name
    assert (logs / "perm.1.log").read_text() == "hi\n"


def test_the_subprocess_executor_names_and_discards_its_own_logs(tmp_path: Path) -> None:
    """The AttemptLogs capability: core asks the executor where attempt N's log is and to delete a
    removed job's logs; it never builds a file name itself."""
    from types import SimpleNamespace

    from queuectl_core.control.joblogs import AttemptLogs, attempt_logs, discard_logs
    from queuectl_plugins.subprocess_executor.executor import SubprocessExecutor

    logs_dir, moved = tmp_path / "logs", tmp_path / "old-logs"
    executor = SubprocessExecutor(logs_dir, 4096, 1.0, "/bin/sh")
    assert isinstance(executor, AttemptLogs) and attempt_logs(executor) is executor
    never_ran = SimpleNamespace(id="a", log_path=None)
    ran_elsewhere = SimpleNamespace(id="b", log_path=str(moved / "b.2.log"))  # before log_dir changed
    assert executor.attempt_log(never_ran, 1) == str(logs_dir / "a.1.log")
    assert executor.attempt_log(ran_elsewhere, 1) == str(moved / "b.1.log")

    for where, names in ((logs_dir, ["a.1.log", "a.2.log", "ab.1.log", "b.3.log"]), (moved, ["b.1.log", "b.2.log"])):
        where.mkdir()
        for name in names:
            (where / name).write_text("x")
    assert discard_logs(executor, [("a", None), ("b", ran_elsewhere.log_path)]) == 5
    assert sorted(p.name for p in tmp_path.rglob("*.log")) == ["ab.1.log"]
    # An executor that keeps no files: nothing to delete, and core does not go looking.
    assert attempt_logs(object()) is None and discard_logs(object(), [("ab", None)]) == 0
