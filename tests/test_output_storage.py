"""Every attempt's output kept by the storage: `logs`, `logs -f`, `show` and the dashboard give it from
any host, while the attempt runs and after, whatever became of the worker's log files; bounded by
`logs.max_bytes` (the start and the end, and one line saying how much was cut); deleted for everyone
by `remove`. Two homes on one queue stand for two machines, each with its own log directory and
`worker.host`."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import QUEUECTL, Q

from queuectl_core.jobs.models import NewJob
from queuectl_core.jobs.output import OutputWrite


@pytest.fixture(params=["sqlite", "postgres"])
def hosts(request: Any, q: Q, tmp_path: Path) -> Iterator[tuple[Q, Q, Any]]:
    """Host A (`q`) and host B (another home, its own log directory) on one queue, and a function
    counting what the database holds of a job's output."""
    b = Q(tmp_path / "home-b")
    homes = (q, b)
    try:
        if request.param == "sqlite":
            db = tmp_path / "shared.db"
            for h in homes:
                h.config("sqlite.path", db)
            yield from _named(homes, lambda job_id: _sqlite_rows(db, job_id))
        else:
            import psycopg

            from queuectl_plugins.postgres_testing import temporary_postgres_database

            with temporary_postgres_database() as dsn:
                for h in homes:
                    h.config("storage", "postgres")
                    h.config("postgres.dsn", dsn)

                def rows(job_id: str) -> int:
                    with psycopg.connect(dsn) as conn:
                        return conn.execute("SELECT count(*) FROM queuectl.job_output WHERE job_id = %s",
                                            (job_id,)).fetchone()[0]
                try:
                    yield from _named(homes, rows)
                finally:
                    for h in homes:
                        h.cleanup()  # workers gone before the database is dropped
    finally:
        b.cleanup()


def _named(homes: tuple[Q, Q], rows: Any) -> Iterator[tuple[Q, Q, Any]]:
    for h, name in zip(homes, ("host-a", "host-b")):
        h.config("worker.host", name)
        h.config("poll_interval_ms", 50)
    yield homes[0], homes[1], rows


def _sqlite_rows(db: Path, job_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM job_output WHERE job_id = ?", (job_id,)).fetchone()[0])


TICKS = 'for i in $(seq 1 12); do echo "tick $i"; sleep 0.25; done; echo "to stderr" >&2'


def test_output_of_a_job_on_host_b_is_followed_live_and_read_from_host_a(hosts: tuple[Q, Q, Any]) -> None:
    a, b, rows = hosts
    b.config("subprocess.log_file", "always")  # a local copy, to delete
    a.run("enqueue", "--id", "far", "--cmd", TICKS)
    worker = b.start_worker()
    a.wait_state("far", "processing")
    # B's log directory deleted while the job runs there: nothing on any host reads it any more.
    a.wait_for((b.home / "logs" / "far.1.log").exists, timeout=30, what="B's log file")
    shutil.rmtree(b.home / "logs")
    follow = subprocess.Popen([*QUEUECTL, "logs", "-f", "far"], env=a.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    a.procs.append(follow)
    assert follow.stdout is not None
    first = follow.stdout.readline()
    # Live: the first line reached host A while the job was still printing on host B.
    assert first.startswith("tick ") and a.job("far")["state"] == "processing"
    rest = follow.stdout.read()  # not communicate(): it would skip what readline() buffered
    assert follow.stderr is not None
    err = follow.stderr.read()
    assert follow.wait(timeout=60) == 0, err
    lines = (first + rest).splitlines()
    assert lines[-1] == "to stderr" and lines[-2] == "tick 12", lines
    assert [int(x.split()[1]) for x in lines[:-1]] == list(range(int(first.split()[1]), 13))
    assert "far completed in" in err
    # Both hosts read the whole output from the storage, B's log directory still gone.
    assert not (b.home / "logs").exists()
    whole = "".join(f"tick {i}\n" for i in range(1, 13)) + "to stderr\n"
    for h in (a, b):
        shown = h.run("logs", "far")
        assert shown.stdout == whole and shown.stderr == ""
    assert a.run("logs", "far", "--tail", "2").stdout == "tick 12\nto stderr\n"
    assert a.run("show", "far").stdout.splitlines()[-1].endswith(" 97 B")  # its size, read from the storage
    # `remove` on host A deletes it for everyone, in the database too.
    assert rows("far") > 0
    a.run("remove", "far")
    assert rows("far") == 0
    assert b.run("logs", "far", check=False).returncode == 1
    worker.terminate()


def test_a_megabyte_under_a_64k_limit_keeps_its_first_and_last_lines(hosts: tuple[Q, Q, Any]) -> None:
    a, b, rows = hosts
    b.config("subprocess.log_file", "always")  # a local copy too, deleted below: the storage's is read
    b.config("logs.max_bytes", 65536)  # the worker's host decides what it keeps
    printed = "".join(f"line {i:06d} {'x' * 40}\n" for i in range(20000))  # 1,000,000 bytes
    a.run("enqueue", "--id", "big", "--cmd",
          "python3 -c 'import sys\nfor i in range(20000): sys.stdout.write(\"line %06d \" % i + \"x\" * 40 + \"\\n\")'")
    b.run("worker", "start", "--burst", timeout=120)
    shutil.rmtree(b.home / "logs")
    out = a.run("logs", "big").stdout
    cut = len(printed) - 65536
    assert out.startswith(printed[:32768]) and out.endswith(printed[-32768:])
    assert f"\n[queuectl: {cut:,} bytes cut]\n" in out
    assert out.splitlines()[0] == "line 000000 " + "x" * 40 and out.splitlines()[-1] == "line 019999 " + "x" * 40
    assert len(out) < 65536 + 64
    assert rows("big") > 0
    a.run("remove", "big")
    assert rows("big") == 0


def test_on_sqlite_show_and_the_dashboard_give_the_output_after_the_logs_are_deleted(q: Q, dash: Any) -> None:
    q.config("subprocess.log_file", "always")  # a local copy too, deleted below: the storage's is read
    q.run("enqueue", "--id", "j", "--cmd", "echo out; echo err >&2; exit 3", "--max-retries", "1")
    q.config("backoff_base", 0.01)
    q.run("worker", "start", "--burst", timeout=60)
    shutil.rmtree(q.home / "logs")
    assert q.run("logs", "j").stdout == "out\nerr\n"
    assert q.run("logs", "j", "--attempt", "1").stdout == "out\nerr\n"  # an earlier attempt too
    rows = [line.split() for line in q.run("show", "j").stdout.splitlines()[-2:]]
    assert [(r[0], r[-2:]) for r in rows] == [("1", ["8", "B"]), ("2", ["8", "B"])]
    d = dash()
    job = d.get("/api/jobs/j")
    assert job["attempt_logs"] == [{"attempt": 1, "bytes": 8}, {"attempt": 2, "bytes": 8}]
    log = d.get("/api/jobs/j/log")
    assert (log["attempt"], log["text"], log["source"]) == (2, "out\nerr\n", "storage")
    assert d.get("/api/jobs/j/log", params={"attempt": 1})["text"] == "out\nerr\n"


def test_a_job_printing_100k_is_written_in_a_few_batches_not_a_statement_a_chunk(tmp_path: Path) -> None:
    """The worker's loop writes what every running attempt printed, at most about twice a second
    and once when it ends: a job printing 100 KB in 100 writes costs a few writes, not 100."""
    from queuectl_core.framework.app import App
    from queuectl_core.testing import MemoryQueue, MemoryStorage, register_plugin
    from queuectl_core.worker.loop import Worker

    calls: list[int] = []

    class Counting(MemoryStorage):
        def write_output(self, writes: Any) -> None:
            calls.append(sum(len(w.chunks) for w in writes))
            super().write_output(writes)

    queue = MemoryQueue()

    class Plugin:
        from queuectl_core import hookimpl

        @hookimpl
        def queuectl_register_storages(self, register: Any) -> None:
            register("counting", lambda config: Counting(queue))

    with register_plugin(Plugin()):
        home = tmp_path / "home"
        home.mkdir(mode=0o700)
        (home / "config.toml").write_text('storage = "counting"\npoll_interval_ms = 20\n')
        app = App(home)
        app.storage.enqueue([NewJob(id="p", command="for i in $(seq 100); do head -c 1023 /dev/zero | tr '\\0' a;"
                                                     " echo; done", max_retries=0)])
        Worker(app, burst=True).run()
        out = b"".join(d for _, d in app.storage.read_output("p", 1))
    assert out == (b"a" * 1023 + b"\n") * 100
    assert 1 <= len(calls) <= 3, calls


def _upgraded(storage: Any, log: Path) -> None:
    """A queue from the release before: its old job's output is still read from its log file, and
    output is kept from now on, and deleted with its job."""
    from queuectl_core.control import actions

    assert "AttemptOutput" in storage.native
    old = storage.get("old")
    assert old is not None and storage.read_output("old", 1) == [] and log.read_text() == "from the file\n"
    storage.write_output([OutputWrite("old", 2, ((1, b"new\n"),))])
    assert storage.read_output("old", 2) == [(1, b"new\n")]
    actions.remove(storage, ["old"])
    assert storage.read_output("old", 2) == []


def test_sqlite_migration_adds_the_output_table(tmp_path: Path, q: Q) -> None:
    from test_migrations import sqlite_schema_at

    from queuectl_core.storage.capabilities import with_fallbacks
    from queuectl_plugins.sqlite_storage import _OUTPUT, MIGRATIONS, SQLiteStorage

    db = q.home / "queue.db"
    conn = sqlite_schema_at(db, MIGRATIONS.index(_OUTPUT))  # the release before this one
    log = q.home / "logs" / "old.1.log"
    log.parent.mkdir()
    log.write_text("from the file\n")
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 f" run_at, last_exit_code, last_attempt, queue, log_path) VALUES ('old', 'true', 'completed', 1, 0,"
                 f" 0, 1, 2, 1, 0, 1, 'default', '{log}')")
    conn.close()
    assert q.run("logs", "old").stdout == "from the file\n"  # migrates; nothing stored: the file is read
    storage = with_fallbacks(SQLiteStorage(db))
    try:
        _upgraded(storage, log)
        assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        storage.close()


def test_postgres_migration_adds_the_output_table(tmp_path: Path) -> None:
    import psycopg

    from queuectl_core.storage.capabilities import with_fallbacks
    from queuectl_plugins.postgres_storage.store import MIGRATIONS, PostgresStorage
    from queuectl_plugins.postgres_testing import postgres_schema_at, temporary_postgres_database

    mine = next(i for i, m in enumerate(MIGRATIONS) if "CREATE TABLE {s}.job_output" in m)
    log = tmp_path / "old.1.log"
    log.write_text("from the file\n")
    with temporary_postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            postgres_schema_at(conn, mine)  # the release before this one
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, attempts, max_retries, last_exit_code,"
                         " last_attempt, log_path) VALUES ('old', 'true', 'completed', 1, 0, 0, 1, %s)", (str(log),))
        storage = with_fallbacks(PostgresStorage(dsn))
        try:
            _upgraded(storage, log)
        finally:
            storage.close()


def test_a_storage_without_the_capability_keeps_the_log_files(q: Q, tmp_path: Path) -> None:
    """A third party's storage without AttemptOutput: `logs` reads the worker's log file as before."""
    from process_helpers import install_plugin

    plugin = '''
from pathlib import Path

from queuectl_core.api import hookimpl
from queuectl_plugins.sqlite_storage import SQLiteStorage


class NoOutput:
    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name in ("write_output", "read_output", "output_sizes"):
            raise AttributeError(name)
        return getattr(self._inner, name)


@hookimpl
def queuectl_register_storages(register):
    register("nooutput", lambda config: NoOutput(SQLiteStorage(Path(config["sqlite.path"]))))
'''
    q.env["PYTHONPATH"] = str(install_plugin(tmp_path / "site", "nooutput", plugin))
    q.run("config", "set", "storage", "nooutput")
    q.run("enqueue", "--id", "j", "--cmd", "echo hello")
    q.run("worker", "start", "--burst", timeout=60)
    assert q.run("logs", "j").stdout == "hello\n"
    assert _sqlite_rows(q.home / "queue.db", "j") == 0
    (q.home / "logs" / "j.1.log").write_text("the file\n")
    assert q.run("logs", "j").stdout == "the file\n"


def test_the_cap_keeps_head_and_tail_whatever_the_pieces_and_failed_writes() -> None:
    """OutputCap, the one rule every storage's copy follows: whatever sizes the output comes in, and
    whichever writes fail and are handed back, what is stored is all of it up to the limit, else the
    first and last halves with the line saying how much was cut."""
    import random

    from queuectl_core.jobs.output import OutputCap, joined, rebuilt

    rng = random.Random(22)
    for _ in range(200):
        limit = rng.choice([1024, 4096, 65536])
        cap = OutputCap("j", 1, limit, chunk_size=rng.choice([None, 100, 1024]))
        writes, printed = [], b""
        for _ in range(rng.randint(0, 60)):
            data = bytes(rng.randrange(97, 123) for _ in range(rng.randint(0, 3000)))
            cap.add(data)
            printed += data
            if rng.random() < 0.3 and (write := cap.take()) is not None:
                if rng.random() < 0.2:
                    cap.give_back(write)  # the storage refused it: written again later
                else:
                    writes.append(write)
        if (write := cap.take()) is not None:
            writes.append(write)
        out = joined(rebuilt(writes).items())
        if len(printed) <= limit:
            assert out == printed
        else:
            line = f"[queuectl: {len(printed) - limit:,} bytes cut]\n".encode()
            head, tail = printed[:limit // 2], printed[-(limit - limit // 2):]
            assert out == head + b"\n" + line + tail and cap.stored == limit


def test_the_worker_writes_no_log_file_of_its_own_unless_asked(q: Q) -> None:
    """The storage keeps the output, so by default no second copy goes to the worker's disk; with
    subprocess.log_file = always, each attempt also gets its ID.N.log there."""
    q.run("enqueue", "--id", "plain", "--cmd", "echo only stored")
    q.run("worker", "start", "--burst", timeout=60)
    assert q.run("logs", "plain").stdout == "only stored\n"
    assert q.job("plain")["log_path"] is None and not list(q.home.rglob("*.log"))
    q.config("subprocess.log_file", "always")
    q.run("enqueue", "--id", "copied", "--cmd", "echo also on disk")
    q.run("worker", "start", "--burst", timeout=60)
    assert q.run("logs", "copied").stdout == "also on disk\n"
    assert Path(q.job("copied")["log_path"]).read_text() == "also on disk\n"
