"""Spec 14, a person's queue: typing a command (`enqueue -- CMD`, words, `--each`), ids by a unique
prefix, and `wait`, with real `queuectl` processes on SQLite and PostgreSQL (a pty for the
progress line)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
from conftest import QUEUECTL
from process_helpers import read_until_closed


def one_error(proc: Any, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def commands(q: Any) -> dict[str, str]:
    return {j["id"]: j["command"] for j in q.json("list")}


# -- typing a command --------------------------------------------------------------------------
def test_the_words_after_dashes_are_the_command_quoted_as_a_shell_needs(q: Any) -> None:
    rsync = q.run("enqueue", "--", "rsync", "-a", "my dir", "host:").stdout.strip()
    words = q.run("enqueue", "--priority", "3", "--tag", "t", "echo", "-n", "hi").stdout.strip()
    test = q.run("enqueue", "--", "[", "-f", "x", "]").stdout.strip()  # after --, [ is a command
    git = q.run("enqueue", "git", "log", "--", "file").stdout.strip()  # a later -- is the command's
    run = q.run("enqueue", "--id", "argv", "--", "printf", "<%s>\\n", "my dir", "it's", "$HOME", "*").stdout.strip()
    got = commands(q)
    assert got[rsync] == "rsync -a 'my dir' host:"
    assert got[words] == "echo -n hi" and q.job(words)["priority"] == 3 and q.job(words)["tags"] == ["t"]
    assert got[test] == "'[' -f x ']'" and got[git] == "git log -- file"
    assert run == "argv"
    q.run("worker", "start", "--burst", timeout=60)
    assert q.run("logs", "argv").stdout == "<my dir>\n<it's>\n<$HOME>\n<*>\n"  # each word arrives as typed


@pytest.mark.parametrize("args, needle", [
    (["--cmd", "x", "--", "y"], "once"),
    (["--cmd", "x", "y"], "once"),
    (['{"command": "x"}', "--priority", "3"], "options go before it"),
    (["--priority", "3", '{"command": "x"}'], "--priority"),
    (["--"], "after --"),
    (["echo hi"], "--cmd 'echo hi'"),
    (["--file", "-", "--", "echo"], "only one"),
    (['{"command": "x"}', "--file", "-"], "options go before it"),
    (["--tag", "t"], "give a command"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_exactly_one_way_to_give_the_command(q: Any, args: list[str], needle: str) -> None:
    one_error(q.run("enqueue", *args, check=False, input=""), needle)
    assert q.json("list") == []


def test_each_makes_one_job_per_line_all_or_nothing(qb: Any) -> None:
    lines = "a.wav\nmy file.wav\n\n   \nit's.wav\r\n"
    proc = qb.run("enqueue", "--each", "--tag", "batch1", "--priority", "2", "--", "printf", "<%s>\\n", "{}",
                  "{}.flac", input=lines)
    ids = proc.stdout.split()
    assert len(ids) == 3 and proc.stderr == ""
    got = commands(qb)
    assert [got[i] for i in ids] == ["printf '<%s>\\n' a.wav a.wav.flac",
                                     "printf '<%s>\\n' 'my file.wav' 'my file.wav.flac'",
                                     "printf '<%s>\\n' 'it'\"'\"'s.wav' 'it'\"'\"'s.wav.flac'"]
    assert all(qb.job(i)["tags"] == ["batch1"] and qb.job(i)["priority"] == 2 for i in ids)
    cmd = qb.run("enqueue", "--each", "--cmd", "echo {} | tr a-z A-Z", input="x y\n").stdout.strip()
    assert commands(qb)[cmd] == "echo 'x y' | tr a-z A-Z"
    qb.run("worker", "start", "--burst", timeout=60)
    assert qb.run("logs", ids[2]).stdout == "<it's.wav>\n<it's.wav.flac>\n"
    assert qb.run("logs", cmd).stdout == "X Y\n"
    # a bad line anywhere (here a NUL byte after 4,500 good ones) stores none of them
    before = len(qb.json("list"))
    bad = "".join(f"f{i}\n" for i in range(4500)) + "a\x00b\n"
    one_error(qb.run("enqueue", "--each", "--", "echo", "{}", input=bad, check=False), "line 4501", "NUL")
    one_error(qb.run("enqueue", "--each", "--", "echo", "hi", input="x\n", check=False), "{}")
    one_error(qb.run("enqueue", "--each", "--id", "x", "--", "echo", "{}", input="x\n", check=False), "--id")
    one_error(qb.run("enqueue", "--each", "--", "echo", "{}", input="\n \n", check=False), "no lines")
    assert len(qb.json("list")) == before


# -- ids for people ----------------------------------------------------------------------------
def test_a_unique_prefix_names_a_job_wherever_an_id_is_taken(qb: Any) -> None:
    for job_id, cmd in (("abc", "true"), ("abcd", "true"), ("xyz123", "sleep 60"), ("dead77", "exit 3"),
                        ("gone42", "exit 3")):
        qb.run("enqueue", "--id", job_id, "--cmd", cmd, "--max-retries", "0",
               *(["--delay", "1h"] if job_id == "xyz123" else []))
    assert qb.run("cancel", "xyz").stdout == "xyz123: cancelled\n"
    assert qb.run("restart", "xy").stdout == "xyz123\n"
    assert qb.run("cancel", "xyz1").stdout == "xyz123: cancelled\n"
    assert qb.run("cancel", "abc").stdout == "abc: cancelled\n"  # an exact id wins over abcd
    err = one_error(qb.run("logs", "ab", check=False), "'ab'", "abc, abcd")
    assert "several" in err
    one_error(qb.run("cancel", "zz", check=False), "no job with id 'zz'")
    assert qb.run("remove", "xyz").stdout == "xyz123: removed\n"
    qb.run("worker", "start", "--burst", timeout=60)
    assert qb.job("dead77")["state"] == "dead"
    assert qb.run("logs", "dead7", check=False).returncode == 0
    assert qb.run("dlq", "retry", "dead").stdout == "dead77\n"
    qb.run("worker", "start", "--burst", timeout=60)
    assert sorted(qb.run("dlq", "remove", "dead", "gon").stdout.splitlines()) == ["dead77: removed", "gone42: removed"]
    assert qb.run("wait", "abcd").returncode == 0
    # --after and --id take whole ids: a prefix is not a job
    one_error(qb.run("enqueue", "--after", "ab", "--cmd", "true", check=False), "ab")


# -- wait --------------------------------------------------------------------------------------
def test_wait_exits_0_when_all_completed_1_when_any_did_not_124_on_timeout(qb: Any) -> None:
    ok = qb.run("enqueue", "--tag", "b", "--", "sleep", "0.3").stdout.strip()
    bad = qb.run("enqueue", "--tag", "b", "--max-retries", "0", "--", "sh", "-c", "sleep 0.3; exit 3").stdout.strip()
    later = qb.run("enqueue", "--tag", "later", "--delay", "1h", "--", "true").stdout.strip()
    # nothing runs yet: a timeout is 124, after about the time given, and quiet off a terminal
    start = time.monotonic()
    proc = qb.run("wait", ok, "--timeout", "0.5", check=False)
    assert proc.returncode == 124 and proc.stdout == proc.stderr == ""
    assert 0.4 < time.monotonic() - start < 10
    waiter = subprocess.Popen([*QUEUECTL, "wait", "--tag", "b"], env=qb.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert waiter.poll() is None  # blocks while the jobs wait for a worker
    qb.start_worker("--burst")
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 1 and out == err == "", (out, err)  # one ended dead
    assert qb.job(bad)["state"] == "dead"
    assert qb.run("wait", ok).returncode == 0
    assert qb.run("wait", ok[:-1]).returncode == 0  # a prefix
    assert qb.run("wait", ok, bad, check=False).returncode == 1
    assert qb.run("wait", "--tag", "b", check=False).returncode == 1  # finished ones are included
    assert qb.run("wait", "--all", "--timeout", "0.3", check=False).returncode == 124  # `later` is unfinished
    qb.run("cancel", later)
    assert qb.run("wait", "--all").returncode == 0  # nothing unfinished: at once
    assert qb.run("wait", later, check=False).returncode == 1  # cancelled
    one_error(qb.run("wait", "nosuchjob", check=False), "nosuchjob")
    one_error(qb.run("wait", check=False), "--all")
    one_error(qb.run("wait", ok, "--tag", "b", check=False), "not both")


def _pty_wait(q: Any, *args: str) -> tuple[int, bytes, float]:
    """`queuectl wait ARGS` with stderr on a pseudo-terminal: (exit status, what the terminal got,
    seconds it took)."""
    import pty

    main, child = pty.openpty()
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "queuectl_core", "wait", *args], env=q.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    seen = read_until_closed(main)
    code = proc.wait(timeout=60)
    return code, seen, time.monotonic() - start


def test_wait_keeps_one_progress_line_on_a_terminal(q: Any) -> None:
    for i in range(3):
        q.run("enqueue", "--tag", "t", "--max-retries", "0", "--", "sh", "-c", f"sleep {0.6 * i}; exit {i // 2 * 3}")
    q.start_worker()
    code, seen, _ = _pty_wait(q, "--tag", "t")
    assert code == 1
    frames = seen.decode().split("\r\x1b[K")
    assert frames[0] == "" and len(frames) >= 3, seen  # redrawn in place, at least twice
    assert frames[-1] == "3/3 finished, 1 dead, 0 running\r\n", seen  # the last one stays, with a newline
    assert any(f.startswith(("0/3", "1/3", "2/3")) and "running" in f for f in frames[1:-1]), frames
    assert all("\n" not in f for f in frames[:-1])
    code, seen, took = _pty_wait(q, "--queue", "nope", "--all", "--timeout", "1")
    assert code == 2 and b"Error:" in seen
    q.run("enqueue", "--id", "later", "--delay", "1h", "--", "true")
    code, seen, took = _pty_wait(q, "later", "--timeout", "0.5")
    assert code == 124 and seen.endswith(b"0/1 finished, 0 running, timed out after 0.5\r\n"), seen


def test_wait_reads_many_awaited_jobs_at_once_and_learns_how_each_ended() -> None:
    """Past GET_EACH_UP_TO awaited jobs, a poll is one read of the unfinished ones, then one read
    of each job that left them (how it ended), and a job removed meanwhile counts as finished."""
    from queuectl_core.cli import wait
    from queuectl_core.jobs import lifecycle
    from queuectl_core.jobs.models import NewJob
    from queuectl_core.jobs.records import AttemptResult
    from queuectl_core.storage.capabilities import with_fallbacks
    from queuectl_core.testing import MemoryStorage

    class Counting(MemoryStorage):
        gets = 0

        def get(self, job_id: str) -> Any:
            Counting.gets += 1
            return super().get(job_id)

    storage = with_fallbacks(Counting())
    n = wait.GET_EACH_UP_TO + 50
    storage.enqueue([NewJob(id=f"j{i:03}", command="true", max_retries=0) for i in range(n)])
    tally = wait._Tally(lifecycle.FINISHED_STATES)
    for job in storage.list_jobs(states=lifecycle.UNFINISHED_STATES):
        tally.see(job)
    done, dead, running = (storage.claim("w", 30) for _ in range(3))
    storage.apply(done.id, done.lease_token, lifecycle.complete(AttemptResult(exit_code=0)))
    storage.apply(dead.id, dead.lease_token, lifecycle.bury(AttemptResult(exit_code=3, error="exit 3")))
    Counting.gets = 0
    wait._poll(storage, tally, {"tag": None, "queue": None})
    assert Counting.gets == 2  # only the two that finished were read one by one
    assert tally.text() == f"2/{n} finished, 1 dead, 1 running" and tally.failed
    storage.apply(running.id, running.lease_token, lifecycle.complete(AttemptResult(exit_code=0)))
    assert storage.delete([running.id], list(lifecycle.FINISHED_STATES))  # removed before wait saw it end
    wait._poll(storage, tally, {"tag": None, "queue": None})
    assert tally.text() == f"3/{n} finished, 1 dead, 0 running"


def test_id_prefixes_on_a_postgres_database_that_does_not_order_bytewise() -> None:
    """In a database collated en-US (ICU), `B` sorts after `a` and `:` is ignored: a range of the
    primary key would miss ids, so every id is compared instead, with the same answers."""
    import secrets

    import psycopg

    from queuectl_core.jobs.models import NewJob
    from queuectl_plugins.postgres_storage.store import PostgresStorage
    from queuectl_plugins.postgres_testing import _with_dbname, require_postgres

    admin = require_postgres()
    name = f"queuectl_icu_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        try:
            conn.execute(f"CREATE DATABASE {name} LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                         " TEMPLATE template0")
        except psycopg.Error as exc:  # a server built without ICU
            pytest.skip(f"no ICU collation: {exc}")
    try:
        storage = PostgresStorage(_with_dbname(admin, name), "t")
        try:
            ids = ["ab", "ab-1", "ab.2", "ab9", "abZ", "abc", "abz", "ab:x", "ac", "aB", "b", "1m9", "1m:"]
            storage.enqueue([NewJob(id=i, command="true", max_retries=0) for i in ids])
            assert storage.ids_with_prefix("ab", 100) == sorted(i for i in ids if i.startswith("ab"))
            assert storage.ids_with_prefix("ab", 2)[0] == "ab"
            assert storage.ids_with_prefix("1m", 5) == ["1m9", "1m:"] and storage.ids_with_prefix("ab:", 5) == ["ab:x"]
            assert storage.ids_with_prefix("aB", 5) == ["aB"] and storage.ids_with_prefix("zz", 5) == []
            assert storage.__dict__["_bytewise_ids"] is False
        finally:
            storage.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
