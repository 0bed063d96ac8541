"""Failures around the queue that must never cost a job: signals from service managers and
closed terminals, a broken log directory, out-of-range settings, odd commands."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest


def _wait_running(q: Any, job_id: str) -> None:
    q.wait_state(job_id, "processing", timeout=30)


@pytest.mark.parametrize("slots", [1, 3])
def test_sighup_is_a_graceful_stop(q: Any, tmp_path: Path, slots: int) -> None:
    for i in range(slots):
        q.run("enqueue", "--id", f"hup{i}", "--cmd", f"sleep 1; touch {tmp_path}/done{i}")
    worker = q.start_worker("--slots", str(slots))
    for i in range(slots):
        _wait_running(q, f"hup{i}")
    os.kill(worker.pid, signal.SIGHUP)  # the terminal went away
    assert worker.wait(timeout=30) == 0
    for i in range(slots):
        assert (tmp_path / f"done{i}").exists() and q.job(f"hup{i}")["state"] == "completed"


def test_a_stop_sent_to_every_process_once_is_still_graceful(q: Any, tmp_path: Path) -> None:
    # systemd's default KillMode, `kill -- -PGID` of everything: each worker gets SIGTERM directly
    # and again, forwarded, from its supervisor. That is one request, not two.
    for n in range(2):
        q.run("enqueue", "--id", f"svc{n}", "--cmd", f"sleep 1.5; touch {tmp_path}/svc{n}")
    supervisor = q.start_worker("--count", "2")
    q.wait_for(lambda: q.counts()["processing"] == 2, timeout=30, what="both jobs running")
    workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == supervisor.pid]
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.05)
    os.kill(supervisor.pid, signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    assert q.counts()["completed"] == 2, q.json("list")
    assert (tmp_path / "svc0").exists() and (tmp_path / "svc1").exists()


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_an_unwritable_log_directory_does_not_fail_jobs(q: Any) -> None:
    q.config("subprocess.log_file", "always")  # the worker's own file is what this tests
    q.config("subprocess.log_dir", "/proc/queuectl-no-such-dir")
    q.run("enqueue", "--id", "nolog", "--cmd", "echo still here", "--max-retries", "0")
    q.run("worker", "start", "--burst")
    assert q.job("nolog")["state"] == "completed"
    logs = q.run("logs", "nolog")
    assert "still here" in logs.stdout and "cannot write the log file" in logs.stdout


def test_out_of_range_settings_are_refused(q: Any) -> None:
    before = (q.home / "config.toml").read_bytes()
    for key, value in (("max_retries", "99999999999999999999"), ("lease_seconds", "1e30"),
                       ("poll_interval_ms", "100000000000")):
        out = q.run("config", "set", key, value, check=False)
        assert out.returncode != 0 and out.stderr.startswith("Error:") and "<=" in out.stderr, out.stderr
    assert (q.home / "config.toml").read_bytes() == before


def test_an_uncreatable_database_directory_is_one_line(q: Any) -> None:
    # Nobody may create anything in /proc/self, root included: opening refuses it, reads too.
    q.config("sqlite.path", "/proc/self/queuectl-nope/queue.db")
    for args in (("status",), ("enqueue", "--cmd", "true")):
        out = q.run(*args, check=False)
        assert out.returncode != 0 and "Traceback" not in out.stderr, args
        assert out.stderr.startswith("Error: cannot open SQLite database") and out.stderr.count("\n") == 1, out.stderr
    # Root may create in /proc as far as permissions go, and mkdir fails there: then the write says so.
    q.config("sqlite.path", "/proc/queuectl-nope/queue.db")
    out = q.run("enqueue", "--cmd", "true", check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("Error: cannot open SQLite database") and out.stderr.count("\n") == 1


def test_a_script_without_a_shebang_still_runs(q: Any, tmp_path: Path) -> None:
    script = tmp_path / "noshebang"
    script.write_text(f"touch {tmp_path}/ran\n")
    script.chmod(0o755)
    q.run("enqueue", "--id", "script", "--cmd", str(script), "--max-retries", "0")
    q.run("worker", "start", "--burst")
    assert q.job("script")["state"] == "completed", q.job("script")
    assert (tmp_path / "ran").exists()


def test_config_show_masks_every_form_of_dsn_password(q: Any) -> None:
    for dsn in ("postgresql://alice@db/q?password=hunter2", "postgresql://alice:p@ss2@db/q",
                "host=db user=alice password=hunter2"):
        shown = q.run("config", "show", env={"QUEUECTL_POSTGRES_DSN": dsn}).stdout
        assert "hunter2" not in shown and "ss2@" not in shown and "****" in shown, shown


def test_an_in_process_worker_leaves_signal_handling_as_it_found_it(tmp_path: Path, monkeypatch: Any) -> None:
    # Plugin authors and tests run workers inside their own process (queuectl_core.testing).
    from click.testing import CliRunner

    from queuectl_core.cli.main import cli

    monkeypatch.setenv("QUEUECTL_HOME", str(tmp_path / "home"))
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    runner = CliRunner()
    assert runner.invoke(cli, ["enqueue", "--cmd", "true"]).exit_code == 0
    assert runner.invoke(cli, ["worker", "start", "--burst"]).exit_code == 0
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert signal.set_wakeup_fd(-1) == -1  # no wake-up fd left pointing at a closed pipe
