"""A person's queue: times for people, a DLQ that purge keeps, `logs -f` that says what it waits
for and how the job ended, schedules with the job options of enqueue, tables that fit the terminal,
config spans with units, errors naming the flag typed, a dashboard port in use, and a refused
command that leaves nothing on disk. Real `queuectl` processes; a real pty where output is for one."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import socket
import struct
import subprocess
import termios
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import QUEUECTL
from process_helpers import Output, read_until_closed, start, stop

from queuectl_core.cli import display
from queuectl_core.jobs.timeutil import now, parse_time

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ZONE = "Asia/Kolkata"  # +05:30 all year: a local clock that can never be mistaken for UTC


def one_error(proc: Any, *needles: str) -> str:
    assert proc.returncode != 0 and proc.stdout == "", (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def on_a_terminal(q: Any, *args: str, columns: int = 80, env: dict[str, str] | None = None) -> str:
    """`queuectl ARGS` on a pseudo-terminal ``columns`` wide; what it showed, colours removed."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    run_env = {k: v for k, v in q.env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([*QUEUECTL, *args], stdin=subprocess.DEVNULL, stdout=child, stderr=child,
                            env={**run_env, "TERM": "xterm", **(env or {})})
    os.close(child)
    out = read_until_closed(main)
    assert proc.wait(timeout=30) == 0, out
    return ANSI.sub("", out.decode()).replace("\r\n", "\n")


# -- times for people ---------------------------------------------------------------------------
def test_clock_is_local_time_with_the_date_only_on_another_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    try:
        t = now()
        local = t.astimezone(ZoneInfo(ZONE))
        assert display.clock(t, t) == local.strftime("%H:%M:%S")
        later = t + timedelta(days=2)
        assert display.clock(later, t) == later.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")
        assert display.moment(t + timedelta(minutes=4, seconds=2), t).startswith("in 4m (")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_worker_lines_and_schedule_list_speak_local_time(q: Any) -> None:
    """The worker's `retry` line and `schedule list` give relative and local clock times, never
    UTC ISO; --json keeps UTC ISO."""
    env = {"TZ": ZONE}
    q.config("backoff_base", 600)  # the retry is ten minutes away
    q.run("enqueue", "--id", "flaky", "--cmd", "exit 1", "--max-retries", "1")
    q.run("schedule", "add", "hourly", "--every", "1h", "--cmd", "true", env=env)
    proc = q.start_worker("--burst", env=env)
    out = Output(proc)
    q.wait_state("flaky", "failed")
    stop(proc, out)
    text = out.text()
    assert not ISO_UTC.search(text), text
    line = re.search(r"^(\d\d):(\d\d):(\d\d) \[worker-\d+\] failed 1/2: flaky \(exit 1\) in \S+; "
                     r"retry in (9m|10m)$", text, re.M)
    assert line, text
    # The line's time is the worker's local clock (TZ), not UTC.
    here = datetime.now(ZoneInfo(ZONE))
    said = here.replace(hour=int(line[1]), minute=int(line[2]), second=int(line[3]))
    apart = abs((here - said).total_seconds()) % 86400  # the line may be from just before midnight
    assert min(apart, 86400 - apart) < 30, (line[0], here)

    listed = q.run("schedule", "list", env=env).stdout
    assert not ISO_UTC.search(listed), listed
    tick = parse_time(q.json("schedule", "list")[0]["next_tick"]).astimezone(ZoneInfo(ZONE))
    # Today's tick is a clock time; one after midnight (local) has its date too.
    at = tick.strftime("%H:%M:%S" if tick.date() == datetime.now(ZoneInfo(ZONE)).date() else "%Y-%m-%d %H:%M:%S")
    assert re.search(r"^hourly +every 1h +default +- +in (59m|1h) +" + at + " +true$", listed, re.M), listed
    assert ISO_UTC.fullmatch(q.json("schedule", "list")[0]["next_tick"])


# -- the DLQ is kept until someone looks --------------------------------------------------------
def test_purge_without_state_keeps_dead_jobs_and_retention_dead_still_applies(qb: Any) -> None:
    qb.run("enqueue", "--id", "ok", "--cmd", "true")
    qb.run("enqueue", "--id", "dead1", "--cmd", "exit 3", "--max-retries", "0")
    qb.run("enqueue", "--id", "gone", "--cmd", "true", "--delay", "1h")
    qb.run("cancel", "gone")
    qb.run("worker", "start", "--burst", timeout=60)
    time.sleep(0.05)
    purged = qb.run("purge", "--older-than", "0")
    assert purged.stdout == "purged 2 job(s)\n" and purged.stderr.startswith("kept 1 dead job(s) in the DLQ")
    assert [j["id"] for j in qb.json("list")] == ["dead1"]  # completed and cancelled went; the DLQ stays
    assert qb.run("purge", "--older-than", "0", "--state", "dead").stdout.strip() == "purged 1 job(s)"
    assert qb.json("list") == []
    # retention.dead, when configured, still deletes dead jobs.
    qb.run("enqueue", "--id", "dead2", "--cmd", "exit 3", "--max-retries", "0")
    qb.run("worker", "start", "--burst", timeout=60)
    qb.config("retention.dead", "1s")
    time.sleep(1.2)
    qb.run("worker", "start", "--burst", timeout=60)
    assert qb.json("list") == []


# -- logs -f ------------------------------------------------------------------------------------
def _follow(q: Any, job_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*QUEUECTL, "logs", "-f", job_id], env=q.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def test_logs_follow_says_what_it_waits_for_and_how_the_job_ended(q: Any) -> None:
    q.config("backoff_base", 600)
    q.run("enqueue", "--id", "soon", "--cmd", "echo one; sleep 0.5; echo two")
    follower = _follow(q, "soon")
    time.sleep(1.2)  # it waits, and says so once, before any worker runs
    proc, out = start(q)
    text, err = follower.communicate(timeout=30)
    assert follower.returncode == 0 and text == "one\ntwo\n"
    lines = err.splitlines()
    assert lines[0] == "waiting for soon to start (no worker is running: queuectl worker start)", err
    assert len(lines) == 2 and re.fullmatch(r"soon completed in \d+(\.\d)?(ms|s)", lines[1]), err

    # A running job that is cancelled.
    q.run("enqueue", "--id", "long", "--cmd", "echo started; sleep 30")
    q.wait_for(lambda: "started" in q.run("logs", "long", check=False).stdout, what="long to start")
    follower = _follow(q, "long")
    time.sleep(0.5)
    q.run("cancel", "long")
    text, err = follower.communicate(timeout=30)
    assert follower.returncode == 1 and text == "started\n" and err == "long cancelled\n", err
    # A job that will never run: no waiting line, only how it ended, and why.
    q.run("enqueue", "--id", "next", "--cmd", "true", "--after", "long")
    followed = q.run("logs", "-f", "next", check=False)
    assert followed.returncode == 1 and followed.stdout == ""
    assert followed.stderr == "next cancelled (it waits on long, which ended cancelled)\n", followed.stderr

    # A failed attempt with a retry ahead ends the follow; a dead job says its exit code.
    q.run("enqueue", "--id", "flaky", "--cmd", "echo nope; exit 1", "--max-retries", "1")
    q.run("enqueue", "--id", "broken", "--cmd", "exit 3", "--max-retries", "0")
    q.wait_state("flaky", "failed")
    q.wait_state("broken", "dead")
    stop(proc, out)
    followed = q.run("logs", "-f", "flaky", check=False)
    assert followed.returncode == 1 and followed.stdout == "nope\n"
    assert re.fullmatch(r"flaky failed \(exit 1\), retry in (9m|10m)\n", followed.stderr), followed.stderr
    followed = q.run("logs", "-f", "broken", check=False)
    assert followed.returncode == 1 and followed.stderr == "broken dead (exit 3)\n"
    assert q.run("logs", "broken").stderr == ""  # without -f: the output only


# -- schedules take job options -----------------------------------------------------------------
def test_schedule_add_takes_the_job_options_of_enqueue(qb: Any, tmp_path: Path) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    add = subprocess.run([*QUEUECTL, "schedule", "add", "often", "--every", "1s", "--cmd", 'pwd; echo "$FOO $HOME_COPY"',
                          "--env", "FOO=bar", "--env", "HOME_COPY", "--tag", "nightly", "--priority", "5",
                          "--queue", "q2", "--timeout", "1m", "--max-retries", "2", "--unique-key", "often",
                          "--retry-on", "1,75"],
                         cwd=work, env={**qb.env, "HOME_COPY": "copied"}, capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr
    one_error(qb.run("schedule", "add", "bad", "--every", "1s", "--cmd", "true", "--max-retries", "-1", check=False),
              "--max-retries")
    one_error(qb.run("schedule", "add", "bad", "--every", "1s", "--cmd", "true", "--cwd", str(tmp_path / "nope"),
                     check=False), "--cwd")
    [row] = qb.json("schedule", "list")
    assert row["job"]["cwd"] == str(work) and row["job"]["tags"] == ["nightly"]
    proc, out = start(qb)
    try:
        job = qb.wait_for(lambda: next((j for j in qb.json("list") if j["id"].startswith("often@")
                                        and j["state"] == "completed"), None), timeout=30, what="a tick's job")
    finally:
        stop(proc, out)
    assert (job["cwd"], job["env"], job["tags"], job["priority"], job["queue"], job["timeout"], job["max_retries"],
            job["unique_key"], job["retry_on"]) == \
        (str(work), {"FOO": "bar", "HOME_COPY": "copied"}, ["nightly"], 5, "q2", 60.0, 2, "often", [1, 75])
    assert qb.run("logs", job["id"]).stdout == f"{work}\nbar copied\n"


# -- small things -------------------------------------------------------------------------------
@pytest.mark.parametrize("columns", [60, 200])
def test_every_table_fits_the_terminal(q: Any, columns: int) -> None:
    long = "x" * 150
    q.run("queue", "set", "a-rather-long-queue-name-for-a-narrow-terminal", "--concurrency", "3")
    q.run("enqueue", "--id", "dead1", "--cmd", f"echo {long}; exit 3", "--max-retries", "0")
    q.run("schedule", "add", "nightly", "--cron", "30 1 * * *", "--tz", "Europe/Berlin", "--cmd", f"./backup.sh {long}")
    q.run("worker", "start", "--burst", timeout=60)
    for command in (("queue", "list"), ("schedule", "list"), ("dlq", "list"), ("list",), ("status",)):
        shown = on_a_terminal(q, *command, columns=columns)
        lines = shown.splitlines()
        assert len(lines) >= 2 and all(len(line) <= columns for line in lines), (command, shown)
        if columns == 200 and command == ("queue", "list"):
            assert "a-rather-long-queue-name-for-a-narrow-terminal" in shown  # wide: nothing cut
    narrow = on_a_terminal(q, "schedule", "list", columns=60)
    assert "nightly" in narrow and "…" in narrow


def test_config_shows_spans_with_units(q: Any) -> None:
    assert q.run("config", "set", "retention.completed", "1d").stdout == "retention.completed = 1d\n"
    assert q.run("config", "set", "lease_seconds", "90").stdout == "lease_seconds = 1m30s\n"
    assert q.run("config", "get", "retention.completed").stdout == "1d\n"
    assert q.json("config", "get", "retention.completed") == 86400
    shown = q.run("config", "show").stdout
    assert re.search(r"^retention\.completed +=  ?1d  \(default 7d; from config\.toml\)$", shown, re.M), shown
    assert re.search(r"^poll_interval_ms +=  ?50ms ", shown, re.M), shown
    assert re.search(r"^retention\.dead +=  ?0$", shown, re.M), shown


def test_errors_name_the_flag_typed(q: Any) -> None:
    one_error(q.run("enqueue", "--cmd", "true", "--delay", "5x", check=False), "--delay:")
    one_error(q.run("enqueue", "--cmd", "true", "--timeout", "soon", check=False), "--timeout:")
    one_error(q.run("enqueue", "--cmd", "true", "--run-at", "tuesday", check=False), "--run-at:")


def test_a_refused_command_leaves_nothing_on_disk(q: Any, tmp_path: Path) -> None:
    home = tmp_path / "not-yet"
    env = {"QUEUECTL_HOME": str(home)}
    one_error(q.run("enqueue", "--cmd", "true", "--delay", "5x", check=False, env=env), "--delay")
    one_error(q.run("config", "set", "max_retries", "-1", check=False, env=env), "max_retries")
    q.run("config", "show", env=env)  # reads; writes nothing
    assert not home.exists()
    q.run("enqueue", "--cmd", "true", env=env)
    assert home.is_dir() and (home.stat().st_mode & 0o777) == 0o700


def test_a_dashboard_port_in_use_is_one_error_line(q: Any) -> None:
    pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = q.run("dashboard", "--port", str(port), check=False, timeout=30)
    one_error(proc, f"port {port}", "in use")


def test_the_dashboard_shows_times_in_the_browsers_zone(q: Any, tmp_path: Path) -> None:
    """The job view shows created/updated/runs as relative and local clock time of the browser's
    zone (Asia/Kolkata here, the server's being another), never the API's UTC ISO."""
    pytest.importorskip("uvicorn")
    from test_dashboard import Dash
    from test_dashboard_browser import CHROMIUM, FLAGS, _unavailable

    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install '.[test]')")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"no browser at {CHROMIUM}")
    q.run("enqueue", "--id", "later", "--cmd", "true", "--delay", "2h")
    run_at = parse_time(q.job("later")["run_at"]).astimezone(ZoneInfo(ZONE))
    d = Dash(q)
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                timezone_id=ZONE, viewport={"width": 1280, "height": 900})
            try:
                page = context.new_page()
                page.goto(d.base + "/#later")
                fields = page.locator("#d-fields")
                expect(fields).to_contain_text("runs", timeout=10000)
                text = fields.inner_text()
                # In 2h, at its Kolkata clock time (with the date when that is not the browser's today).
                today = datetime.now(ZoneInfo(ZONE)).date()
                clock = run_at.strftime("%H:%M:%S") if run_at.date() == today else run_at.strftime("%Y-%m-%d %H:%M:%S")
                assert re.search(r"in (1h 59m|2h)[^\n]*\(" + clock + r"\)", text), text
                assert not ISO_UTC.search(text), text
                assert page.locator('#jobs tr[data-id="later"] td').nth(4).get_attribute("title") is not None
                assert not ISO_UTC.search(page.locator('#jobs tr[data-id="later"] td').nth(4).get_attribute("title") or "")
            finally:
                context.close()
    finally:
        d.close()


def test_after_naming_no_job_names_only_what_the_person_typed(qb: Any) -> None:
    """One enqueue names no generated id (it was never stored, so it cannot be looked up); in a
    batch of several, the job whose `after` is wrong is named so it can be found in the input."""
    line = one_error(qb.run("enqueue", "--after", "nosuch", "--", "echo", "hi", check=False),
                     "'after' names 'nosuch', and no such job exists")
    assert line == "Error: 'after' names 'nosuch', and no such job exists", line
    batch = '{"id": "a", "command": "true"}\n{"id": "b", "command": "true", "after": ["ghost"]}\n'
    one_error(qb.run("enqueue", "--file", "-", input=batch, check=False),
              "job 'b': 'after' names 'ghost', and no such job exists")
    assert qb.json("list") == []
