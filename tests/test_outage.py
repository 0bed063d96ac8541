"""Faults in the worker/storage path (issue 6): an outage longer than the lease re-runs nothing that
finished, busy workers recover dead workers' jobs, a stuck write yields to the first SIGTERM, a
raising backoff policy is a failed attempt, the SQLite files are private, and a DSN's password is
never shown."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

pytest.register_assert_rewrite("process_helpers")
from process_helpers import TcpProxy, assert_each_ran_once, enqueue_many, pid_from, start, stop  # noqa: E402

from queuectl_core import hookimpl  # noqa: E402
from queuectl_core.testing import register_plugin  # noqa: E402

_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # hold the write lock until the test closes our stdin
"""


@contextmanager
def sqlite_write_lock(db: Path) -> Iterator[None]:
    """A database outage for writers: another process holds SQLite's write lock (as a disk-full or
    stuck peer would make every write fail), readers still work."""
    proc = subprocess.Popen([sys.executable, "-c", _LOCKER, str(db)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def _db(q: Any) -> Path:
    return q.home / "queue.db"


@pytest.mark.parametrize("slots", [1, 3])
def test_outage_longer_than_the_lease_reruns_no_finished_job(q: Any, tmp_path: Path, slots: int) -> None:
    """Write outage of 1.5 leases in the middle of a drain: results held by live workers are
    recorded before anyone recovers their (expired) leases: nothing runs twice, nothing is lost.
    With --slots, each worker holds several results at once."""
    lease = 2.0
    q.config("lease_seconds", lease)
    q.config("sqlite.busy_timeout_ms", 50)  # a locked database fails fast: the outage path
    runs = tmp_path / "runs"
    ids = [f"job{i:02d}" for i in range(24)]
    enqueue_many(q, ids, f"echo $QUEUECTL_JOB_ID >> {runs}; sleep 0.4")
    workers = [start(q, "--slots", str(slots)) for _ in range(3)]
    q.wait_for(lambda: runs.exists() and len(runs.read_text().split()) >= 4, timeout=60, what="the drain to start")
    with sqlite_write_lock(_db(q)):
        time.sleep(1.5 * lease)
    q.wait_for(lambda: q.counts()["completed"] == len(ids), timeout=90, what="every job to complete")
    for proc, out in workers:
        stop(proc, out)
    assert_each_ran_once(q, runs, ids)


@pytest.mark.parametrize("slots", [1, 3])
def test_busy_workers_recover_a_dead_workers_job(q: Any, tmp_path: Path, slots: int) -> None:
    q.config("lease_seconds", 1)
    q.run("enqueue", "--id", "victim", "--cmd", f"echo $$ > {tmp_path}/victim; sleep 30")
    doomed, _ = start(q, "--slots", str(slots), "--queue", "default")
    q.wait_for(lambda: pid_from(tmp_path / "victim"), timeout=60, what="the victim to start")
    for i in range(slots):
        q.run("enqueue", "--id", f"long{i}", "--queue", "long", "--cmd", f"echo $$ > {tmp_path}/long{i}; sleep 20")
    # The only worker that will be left, every slot busy for 20 s before the victim's worker dies
    # (another queue, so it never takes the victim back to run it: only its recovery is seen).
    busy, out = start(q, "--slots", str(slots), "--queue", "long")
    q.wait_for(lambda: all(pid_from(tmp_path / f"long{i}") for i in range(slots)), timeout=60,
               what="the long jobs to start")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    victim = q.wait_for(lambda: (j := q.job("victim"))["state"] != "processing" and j, timeout=8,
                        what="a busy worker to recover the dead worker's job")
    assert victim["state"] == "failed" and "lease expired" in victim["last_error"]
    assert all(q.job(f"long{i}")["state"] == "processing" for i in range(slots))
    os.kill(busy.pid, signal.SIGINT)
    q.wait_for(lambda: out.count("stopping"), timeout=10, what="the first signal to be handled")
    os.kill(busy.pid, signal.SIGINT)  # stop now: do not wait for the 20 s job
    assert busy.wait(timeout=10) == 0, out.text()


@pytest.mark.parametrize("slots", [1, 3])
def test_first_sigterm_stops_a_worker_stuck_retrying_a_write(q: Any, tmp_path: Path, slots: int) -> None:
    q.config("lease_seconds", 3)
    q.config("sqlite.busy_timeout_ms", 50)
    q.run("enqueue", "--id", "j", "--cmd", f"touch {tmp_path}/started; sleep 1")
    proc, out = start(q, "--slots", str(slots))
    q.wait_for(lambda: (tmp_path / "started").exists(), timeout=60, what="the job to start")
    with sqlite_write_lock(_db(q)):
        q.wait_for(lambda: out.count("storage unavailable"), timeout=30, what="the result write to fail")
        time.sleep(1.5)  # the job has ended: the worker is retrying its result
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker ignored the first SIGTERM while retrying a write")
    assert code == 0, out.text()
    assert "could not record the result of j" in out.text()
    # The job was not lost: its lease expires and another worker runs it.
    again, out2 = start(q, "--burst")
    assert again.wait(timeout=60) == 0, out2.text()
    assert q.job("j")["state"] == "completed"


def _drain_with_a_raising_backoff() -> tuple[Any, Any]:
    """A job that fails once, retried under a backoff policy whose delay() raises; an in-process
    `worker start --burst`. Returns its result and `list --json`'s."""
    class Broken:
        def delay(self, attempt: int, job: Any) -> float:
            raise RuntimeError("boom")

    class Plugin:
        @hookimpl
        def queuectl_register_backoff_policies(self, register: Any) -> None:
            register("broken", lambda config: Broken())

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    runner = CliRunner()
    try:
        with register_plugin(Plugin(), name="broken-backoff"):
            for args in (["config", "set", "backoff", "broken"], ["config", "set", "backoff_base", "0.01"],
                         ["config", "set", "poll_interval_ms", "20"],
                         ["enqueue", "--id", "flaky", "--cmd", "exit 1", "--max-retries", "1"]):
                assert runner.invoke(cli(), args).exit_code == 0
            result = runner.invoke(cli(), ["worker", "start", "--burst"])
            listed = runner.invoke(cli(), ["list", "--json"])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return result, listed


def test_a_raising_backoff_policy_is_a_failed_attempt_named_once() -> None:
    result, listed = _drain_with_a_raising_backoff()
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output + result.stderr
    named = [line for line in result.stderr.splitlines() if "broken-backoff" in line]
    assert len(named) == 1 and "'broken'" in named[0] and "boom" in named[0], result.stderr
    job = {j["id"]: j for j in json.loads(listed.stdout)}["flaky"]
    assert (job["state"], job["attempts"]) == ("dead", 2)  # retried (fallback delay), then the DLQ


def test_a_raising_backoff_policy_shows_its_traceback_with_queuectl_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every plugin failure is one line, and QUEUECTL_DEBUG=1 adds the traceback."""
    monkeypatch.setenv("QUEUECTL_DEBUG", "1")
    result, _ = _drain_with_a_raising_backoff()
    assert result.exit_code == 0, result.output
    assert "Traceback" in result.stderr and "RuntimeError: boom" in result.stderr, result.stderr


def cli() -> Any:
    from queuectl_core.cli.main import cli as command

    return command


def test_sqlite_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    from queuectl_core.jobs.models import NewJob
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    old = os.umask(0o022)
    try:
        db = tmp_path / "new" / "queue.db"
        storage = SQLiteStorage(db)
        storage.enqueue([NewJob(id="j", command="true", max_retries=0)])
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert mode(p) == 0o600, (p, oct(mode(p)))
        storage.close()
        # Files an older version left world-readable are tightened on open.
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if p.exists():
                os.chmod(p, 0o644)
        SQLiteStorage(db).close()
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if p.exists():
                assert mode(p) == 0o600, (p, oct(mode(p)))
    finally:
        os.umask(old)


BAD_DSNS = [
    ("postgresql://postgres:S3cr%zzS3cr3tPW9@127.0.0.1/db", "S3cr3tPW9"),
    ("postgresql://postgres:Unclosed5ecret@[::1/db", "Unclosed5ecret"),
    ("postgresql://postgres:with Space5ecret@127.0.0.1/db", "Space5ecret"),
]


@pytest.mark.parametrize("dsn, secret", BAD_DSNS)
def test_config_set_rejects_an_unparseable_dsn_without_showing_it(q: Any, dsn: str, secret: str) -> None:
    before = (q.home / "config.toml").read_bytes()
    result = q.run("config", "set", "postgres.dsn", dsn, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "postgres.dsn" in lines[0], result.stderr
    assert secret not in result.stdout + result.stderr
    assert (q.home / "config.toml").read_bytes() == before


@pytest.mark.parametrize("dsn, secret", [*BAD_DSNS, ("postgresql://postgres:Refused5ecret@127.0.0.1:1/db",
                                                     "Refused5ecret")])
def test_no_command_shows_the_dsn_password(q: Any, dsn: str, secret: str) -> None:
    pytest.importorskip("psycopg")
    env = {"QUEUECTL_STORAGE": "postgres", "QUEUECTL_POSTGRES_DSN": dsn}
    for args in (["status"], ["enqueue", "--cmd", "true"], ["worker", "start", "--burst"], ["config", "show"]):
        result = q.run(*args, check=False, env=env)
        assert secret not in result.stdout + result.stderr, (args, result.stderr)
        if args[0] != "config":
            assert result.returncode != 0 and result.stderr.startswith("Error:"), (args, result.stderr)


@pytest.mark.parametrize("slots", [1, 3])
def test_postgres_outage_longer_than_the_lease_reruns_no_finished_job(q: Any, tmp_path: Path, slots: int) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from queuectl_plugins.postgres_testing import temporary_postgres_database

    with temporary_postgres_database() as dsn:
        params = conninfo_to_dict(dsn)
        proxy = TcpProxy((params.get("host") or "127.0.0.1", int(params.get("port") or 5432)))
        try:
            q.config("storage", "postgres")
            q.config("postgres.dsn", make_conninfo(**{**params, "host": "127.0.0.1", "port": str(proxy.port)}))
            q.config("postgres.connect_timeout", 1)
            lease = 2.0
            q.config("lease_seconds", lease)
            runs = tmp_path / "runs"
            ids = [f"job{i:02d}" for i in range(24)]
            enqueue_many(q, ids, f"echo $QUEUECTL_JOB_ID >> {runs}; sleep 0.4")
            workers = [start(q, "--slots", str(slots)) for _ in range(3)]
            # Every worker up before the cut: one still starting would refuse to start, as it should
            # with its store unreachable (a loaded machine once cut the third one mid-start).
            q.wait_for(lambda: all(out.count("] started") for _, out in workers), timeout=60,
                       what="every worker to start")
            q.wait_for(lambda: runs.exists() and len(runs.read_text().split()) >= 4, timeout=60,
                       what="the drain to start")
            proxy.cut()
            time.sleep(1.5 * lease)
            proxy.restore()
            q.wait_for(lambda: q.counts()["completed"] == len(ids), timeout=90, what="every job to complete")
            for proc, out in workers:
                stop(proc, out)
            executed = runs.read_text().split()
            twice = {i for i in executed if executed.count(i) > 1}
            assert not twice, (twice, [out.text() for _, out in workers])
            assert_each_ran_once(q, runs, ids)
        finally:
            proxy.close()
