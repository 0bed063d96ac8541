"""Issue 6, CLI side: private files, a sane lease minimum, durations with units, hints for common
mistakes, a supervisor that keeps every worker, and `logs` of a log the disk cut short."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import QUEUECTL, Q

from queuectl_core.jobs.timeutil import parse_duration, parse_time


# -- durations ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [("90", 90), ("1.5s", 1.5), ("250ms", 0.25), ("5m", 300),
                                           ("1h30m", 5400), ("7d", 604800), ("1d2h3m4s5ms", 93784.005),
                                           (" 2H ", 7200), ("0", 0), ("1e3", 1000), (".5s", 0.5)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "-5", "-1m", "5x", "1h 30m", "nan", "inf", "1e400", "5m5", "m5"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_time_without_a_zone_is_local_only_when_asked() -> None:
    with pytest.raises(ValueError, match="no zone"):
        parse_time("2030-01-01T10:00:00")
    local = parse_time("2030-01-01T10:00:00", local_if_naive=True)
    assert local == datetime(2030, 1, 1, 10, 0).astimezone()


def test_flags_and_duration_config_keys_take_units(q: Q) -> None:
    q.run("enqueue", "--id", "d", "--cmd", "true", "--delay", "1h30m", "--timeout", "5m")
    job = q.job("d")
    assert job["timeout"] == 300
    delay = datetime.fromisoformat(job["run_at"]).timestamp() - datetime.fromisoformat(job["created_at"]).timestamp()
    assert abs(delay - 5400) < 5
    q.run("enqueue", "--id", "r", "--cmd", "true", "--run-at", "2030-01-01T10:00:00", env={"TZ": "Asia/Tokyo"})
    assert q.job("r")["run_at"] == "2030-01-01T01:00:00.000Z"
    assert q.run("config", "set", "lease_seconds", "2m").stdout.strip() == "lease_seconds = 2m"
    assert q.run("config", "set", "poll_interval_ms", "1.5s").stdout.strip() == "poll_interval_ms = 1.5s"
    assert q.json("config", "show")["settings"]["lease_seconds"]["value"] == 120


# -- lease minimum ------------------------------------------------------------------------------
def test_lease_seconds_below_one_second_is_refused(q: Q) -> None:
    before = (q.home / "config.toml").read_bytes()
    for value in ("1e-9", "0.5", "999ms"):
        out = q.run("config", "set", "lease_seconds", value, check=False)
        assert out.returncode == 1 and out.stderr.startswith("Error: lease_seconds must be >= 1"), out.stderr
    assert (q.home / "config.toml").read_bytes() == before
    out = q.run("status", check=False, env={"QUEUECTL_LEASE_SECONDS": "1e-9"})
    assert out.returncode == 1 and "QUEUECTL_LEASE_SECONDS" in out.stderr and out.stderr.count("\n") == 1
    q.run("config", "set", "lease_seconds", "1")


# -- hints --------------------------------------------------------------------------------------
def test_a_shell_command_as_the_argument_suggests_cmd(q: Q) -> None:
    out = q.run("enqueue", "echo hi", check=False)
    assert out.stderr == ("Error: 'echo hi' is not a JSON job; to enqueue a shell command use: "
                          "queuectl enqueue --cmd 'echo hi'\n")
    bad_json = q.run("enqueue", '{"command": }', check=False)
    assert "invalid JSON job" in bad_json.stderr and "--cmd" not in bad_json.stderr


def test_an_unknown_config_key_suggests_the_closest(q: Q) -> None:
    out = q.run("config", "set", "max_retry", "3", check=False)
    assert out.returncode == 1 and "did you mean 'max_retries'?" in out.stderr, out.stderr
    far = q.run("config", "set", "zzz", "3", check=False)
    assert "`queuectl config show` lists every key" in far.stderr and "notify." in far.stderr
    assert len(far.stderr) < 400  # one readable line, however many settings the plugins add


# -- permissions --------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_and_config_are_private_whatever_the_umask(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    for umask in (0o022, 0o000):
        subprocess.run(["rm", "-rf", str(home)], check=True)
        subprocess.run([*QUEUECTL, "config", "set", "max_retries", "2"], env=env, check=True, capture_output=True,
                       preexec_fn=lambda u=umask: os.umask(u))  # type: ignore[misc]
        assert _mode(home) == 0o700 and _mode(home / "config.toml") == 0o600
        subprocess.run(["rm", "-rf", str(home)], check=True)
        subprocess.run([*QUEUECTL, "status"], env=env, check=True, capture_output=True,
                       preexec_fn=lambda u=umask: os.umask(u))  # type: ignore[misc]
        assert not home.exists()  # a read creates nothing
        subprocess.run([*QUEUECTL, "enqueue", "--cmd", "true"], env=env, check=True, capture_output=True,
                       preexec_fn=lambda u=umask: os.umask(u))  # type: ignore[misc]
        assert _mode(home) == 0o700 and _mode(home / "queue.db") == 0o600


def test_existing_home_and_config_are_tightened_on_start_up(q: Q) -> None:
    os.chmod(q.home, 0o755)
    os.chmod(q.home / "config.toml", 0o644)
    q.run("status")
    assert _mode(q.home) == 0o700 and _mode(q.home / "config.toml") == 0o600


# -- supervisor ---------------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(x) for x in text.split()}


def test_the_supervisor_keeps_every_worker_through_repeated_kills(q: Q) -> None:
    proc = q.start_worker("--count", "4")
    q.wait_for(lambda: len(_children(proc.pid)) == 4, timeout=20, what="4 workers")
    kills = 0
    deadline = time.monotonic() + 60
    while kills < 10 and time.monotonic() < deadline:
        alive = _children(proc.pid)
        if not alive:
            time.sleep(0.05)
            continue
        os.kill(sorted(alive)[kills % len(alive)], signal.SIGKILL)
        kills += 1
        time.sleep(0.3)
    assert kills == 10
    assert proc.poll() is None, "the supervisor gave up"
    # Every worker is replaced (the delay grows per place, capped; 10 kills over 4 places stay well under it).
    q.wait_for(lambda: len(_children(proc.pid)) == 4, timeout=30, what="every worker replaced")
    q.run("enqueue", "--id", "after", "--cmd", "true")
    q.wait_state("after", "completed")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    restarts = [line for line in err.splitlines() if "restarting in" in line]
    assert len(restarts) == 10 and all("of 4) killed by SIGKILL" in line for line in restarts), err
    assert "Traceback" not in err


# -- logs of a log the disk cut short -----------------------------------------------------------
def test_a_log_file_the_disk_cuts_short_leaves_the_stored_output_whole(q: Q) -> None:
    q.config("subprocess.log_file", "always")  # the worker's own file is what this tests
    # A file-size limit makes the log write fail part-way (EFBIG), as a full disk would (ENOSPC);
    # Python ignores SIGXFSZ, so the worker carries on. The storage keeps the output (its start
    # and its end, within logs.max_bytes, kept small here so the database stays under the limit)
    # and says why the local file is short.
    q.config("logs.max_bytes", 16384)
    q.run("enqueue", "--id", "big", "--cmd", "seq 1 200000; echo THE-END", "--max-retries", "0")
    limit = 256 * 1024

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    subprocess.run([*QUEUECTL, "worker", "start", "--burst"], env=q.env, check=True, capture_output=True,
                   timeout=60, preexec_fn=cap)
    job = q.job("big")
    assert job["state"] == "completed", job
    log = Path(job["log_path"]) if job.get("log_path") else q.home / "logs" / "big.1.log"
    assert log.stat().st_size <= limit
    out = q.run("logs", "big")
    assert out.stdout.startswith("1\n2\n3\n") and "bytes cut]" in out.stdout
    assert "THE-END" in out.stdout  # the real end, from the database
    assert "cannot write the log file" in out.stdout and "File too large" in out.stdout, out.stdout
