"""A queue nobody has written to yet: a command that only reads, or is refused, leaves nothing on
disk (no QUEUECTL_HOME, no queue.db); the first write creates the home 0700 and the database.
Real `queuectl` processes, each on a home of its own that does not exist yet."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import QUEUECTL

from queuectl_core.jobs.models import NewJob


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    return {**env, "QUEUECTL_HOME": str(home), **extra}


def _run(home: Path, *args: str, stdin: Any = subprocess.DEVNULL, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QUEUECTL, *args], env=_env(home, **extra), capture_output=True, text=True, timeout=60,
                          stdin=stdin, preexec_fn=lambda: os.umask(0o022))  # type: ignore[misc]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


REFUSED = [
    ("cancel", "nosuchjob"),
    ("show", "nosuchjob"),
    ("logs", "nosuchjob"),
    ("restart", "nosuchjob"),
    ("dlq", "retry", "nosuchjob"),
    ("dlq", "remove", "nosuchjob"),
    ("remove", "nosuchjob"),
    ("wait", "nosuchjob"),
]
READS = [
    ("status",), ("status", "--json"), ("list",), ("list", "--json"), ("dlq", "list"), ("queue", "list"),
    ("schedule", "list"),
]


@pytest.mark.parametrize("args", REFUSED, ids=" ".join)
def test_a_refused_command_on_a_fresh_home_leaves_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    home = tmp_path / "not-yet" / "home"
    proc = _run(home, *args)
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "nosuchjob" in lines[0], proc.stderr
    assert not (tmp_path / "not-yet").exists()


def _jsonl(path: Path, good: int) -> Path:
    """``good`` valid jobs, then a line that is not JSON."""
    path.write_text("".join(json.dumps({"command": f"echo {i}"}) + "\n" for i in range(good)) + "not json\n")
    return path


@pytest.mark.parametrize("args", [
    ("enqueue", "--after", "nosuch", "--cmd", "true"),
    ("enqueue", "--file", "{one-good-then-bad}"),
    ("enqueue", "--file", "{batches-then-bad}"),  # past the first batch: inserted, then rolled back
    ("enqueue", "--each", "--cmd", "echo {}"),  # stdin: a line, then one that is not UTF-8
    ("schedule", "remove", "nosuch"),
    ("schedule", "pause", "nosuch"),
    ("schedule", "resume", "nosuch"),
], ids=lambda a: " ".join(a[:3]))
def test_a_refusal_inside_the_first_write_leaves_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    from queuectl_core.intake.bulk import BATCH

    files = {"{one-good-then-bad}": _jsonl(tmp_path / "one.jsonl", 1),
             "{batches-then-bad}": _jsonl(tmp_path / "many.jsonl", BATCH * 2 + 5)}
    stdin = tmp_path / "stdin"
    stdin.write_bytes(b"first\n\xff\n")
    home = tmp_path / "not-yet" / "home"
    with stdin.open("rb") as f:
        proc = _run(home, *(str(files.get(a, a)) for a in args), stdin=f)
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert not (tmp_path / "not-yet").exists()


@pytest.mark.parametrize("args", [("worker", "stop"), ("purge", "--older-than", "1d"), ("dlq", "remove", "--all")],
                         ids=" ".join)
def test_a_write_that_changes_nothing_leaves_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    home = tmp_path / "not-yet" / "home"
    proc = _run(home, *args)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "not-yet").exists()
    # The same with the database elsewhere: neither its directory nor the home appears.
    assert _run(home, *args, QUEUECTL_SQLITE_PATH=str(tmp_path / "db-dir" / "q.db")).returncode == 0
    assert not (tmp_path / "db-dir").exists() and not (tmp_path / "not-yet").exists()


def test_enqueue_then_list_on_a_fresh_home_after_refusals(tmp_path: Path) -> None:
    home = tmp_path / "not-yet" / "home"
    assert _run(home, "enqueue", "--after", "nosuch", "--cmd", "true").returncode == 1
    assert _run(home, "worker", "stop").returncode == 0
    assert _run(home, "enqueue", "--id", "j1", "--cmd", "true").stdout == "j1\n"
    assert [j["id"] for j in json.loads(_run(home, "list", "--json").stdout)] == ["j1"]
    assert sorted(os.listdir(home)) == ["queue.db"]  # the private first-write file is gone


def test_worker_start_on_an_uncreatable_database_fails_at_once(tmp_path: Path) -> None:
    """As before the database was created lazily: one line, before any worker starts (not a
    worker retrying "storage unavailable" for ever). Nobody, root included, creates in /proc/self."""
    home = tmp_path / "home"
    for args in (("worker", "start"), ("worker", "start", "--count", "2"), ("status",)):
        proc = _run(home, *args, QUEUECTL_SQLITE_PATH="/proc/self/queuectl-nope/queue.db")
        assert proc.returncode == 1 and proc.stdout == "", (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("Error: cannot open SQLite database /proc/self/queuectl-nope/queue.db")
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert not home.exists()


def test_reads_on_a_fresh_home_show_an_empty_queue_and_leave_nothing(tmp_path: Path) -> None:
    home = tmp_path / "not-yet" / "home"
    for args in READS:
        proc = _run(home, *args)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)
        assert not (tmp_path / "not-yet").exists(), args
    assert json.loads(_run(home, "list", "--json").stdout) == []
    counts = json.loads(_run(home, "status", "--json").stdout)["counts"]
    assert counts and set(counts.values()) == {0}
    assert "no jobs" in _run(home, "list").stdout
    # The same with the database elsewhere, in a directory that does not exist either.
    elsewhere = tmp_path / "db-dir" / "q.db"
    assert _run(home, "status", QUEUECTL_SQLITE_PATH=str(elsewhere)).returncode == 0
    assert not (tmp_path / "db-dir").exists() and not (tmp_path / "not-yet").exists()


@pytest.mark.parametrize("args", [
    ("enqueue", "--id", "j1", "--cmd", "true"),
    ("schedule", "add", "nightly", "--every", "1h", "--cmd", "true"),
    ("queue", "pause", "io"),
    ("worker", "start", "--burst"),
], ids=lambda a: " ".join(a[:2]))
def test_the_first_write_creates_the_home_0700_and_the_database(tmp_path: Path, args: tuple[str, ...]) -> None:
    home = tmp_path / "not-yet" / "home"
    proc = _run(home, *args)  # under umask 022
    assert proc.returncode == 0, proc.stderr
    assert _mode(tmp_path / "not-yet") == _mode(home) == 0o700 and _mode(home / "queue.db") == 0o600
    assert sorted(os.listdir(home)) in (["queue.db"], ["logs", "queue.db"])
    conn = sqlite3.connect(home / "queue.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        from queuectl_plugins.sqlite_storage import SCHEMA_VERSION

        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_a_database_elsewhere_gets_its_directory_0700_on_the_first_write(tmp_path: Path) -> None:
    home, db = tmp_path / "home", tmp_path / "data" / "q.db"
    assert _run(home, "enqueue", "--id", "j1", "--cmd", "true", QUEUECTL_SQLITE_PATH=str(db)).returncode == 0
    assert _mode(db.parent) == 0o700 and _mode(db) == 0o600
    assert not home.exists()  # nothing was written there
    assert [j["id"] for j in json.loads(_run(home, "list", "--json", QUEUECTL_SQLITE_PATH=str(db)).stdout)] == ["j1"]


def test_first_enqueues_racing_on_a_fresh_home_all_succeed(tmp_path: Path) -> None:
    homes = [tmp_path / f"home{i}" for i in range(6)]
    procs = [(home, n, subprocess.Popen([*QUEUECTL, "enqueue", "--id", f"j{n}", "--cmd", "true"], env=_env(home),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        stdin=subprocess.DEVNULL))
             for home in homes for n in range(3)]
    for home, n, proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out == f"j{n}\n", (home, err)
    for home in homes:
        assert sorted(j["id"] for j in json.loads(_run(home, "list", "--json").stdout)) == ["j0", "j1", "j2"]
        assert _mode(home) == 0o700 and _mode(home / "queue.db") == 0o600


def test_worker_logs_make_a_missing_home_0700_whatever_the_umask(tmp_path: Path) -> None:
    """With the queue elsewhere and a local copy of the output asked for, the executor's log
    directory is the first thing in the home: it and every missing parent are created 0700; an
    existing parent keeps its mode. Without that copy the worker writes nothing there."""
    home, db = tmp_path / "not-yet" / "home", tmp_path / "data" / "q.db"
    tmp_path.chmod(0o755)
    assert _run(home, "enqueue", "--id", "j0", "--cmd", "echo only stored", QUEUECTL_SQLITE_PATH=str(db)).returncode == 0
    assert _run(home, "worker", "start", "--burst", QUEUECTL_SQLITE_PATH=str(db)).returncode == 0
    assert not home.exists() and not (tmp_path / "not-yet").exists()
    assert _run(home, "enqueue", "--id", "j1", "--cmd", "echo hi", QUEUECTL_SQLITE_PATH=str(db)).returncode == 0
    assert not home.exists()
    proc = _run(home, "worker", "start", "--burst", QUEUECTL_SQLITE_PATH=str(db), QUEUECTL_SUBPROCESS_LOG_FILE="always")
    assert proc.returncode == 0, proc.stderr
    assert _mode(tmp_path / "not-yet") == _mode(home) == _mode(home / "logs") == 0o700
    assert _mode(tmp_path) == 0o755
    assert "hi" in _run(home, "logs", "j1", QUEUECTL_SQLITE_PATH=str(db)).stdout


def test_config_set_makes_a_missing_home_and_its_missing_parents_0700(tmp_path: Path) -> None:
    """`config set` is the first write to a home that does not exist: the home and each parent it
    has to make are 0700 whatever the umask; an existing parent keeps its mode."""
    home = tmp_path / "not-yet" / "home"
    tmp_path.chmod(0o755)
    assert _run(home, "config", "set", "max_retries", "2").returncode == 0
    assert _mode(tmp_path / "not-yet") == _mode(home) == 0o700
    assert _mode(tmp_path) == 0o755


def test_postgres_commands_create_no_home(tmp_path: Path) -> None:
    """The queue is in the database: nothing in QUEUECTL_HOME is written, so none is created."""
    from queuectl_plugins.postgres_testing import temporary_postgres_database

    home = tmp_path / "home"
    with temporary_postgres_database() as dsn:
        pg = {"QUEUECTL_STORAGE": "postgres", "QUEUECTL_POSTGRES_DSN": dsn}
        proc = _run(home, "cancel", "nosuchjob", **pg)
        assert proc.returncode == 1 and proc.stderr.startswith("Error: "), proc.stderr
        assert _run(home, "enqueue", "--id", "j1", "--cmd", "true", **pg).returncode == 0
        assert _run(home, "status", **pg).returncode == 0
    assert not home.exists()


# -- the storage itself, in process ----------------------------------------------------------------
def test_a_lazy_storage_reads_empty_until_written_and_then_sees_other_writers(tmp_path: Path) -> None:
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    db = tmp_path / "dir" / "queue.db"
    reader = SQLiteStorage(db, lazy=True)
    other = SQLiteStorage(db, lazy=True)
    try:
        assert reader.get("j1") is None and reader.list_jobs() == [] and not any(reader.counts().values())
        assert reader.live_workers() == [] and reader.schedules() == []
        assert not (tmp_path / "dir").exists()
        other.enqueue([NewJob(id="j1", command="true", max_retries=0)])  # the first write creates the file
        assert _mode(db.parent) == 0o700 and _mode(db) == 0o600
        got = reader.get("j1")  # a reader opened before the file existed sees it now
        assert got is not None and got.command == "true"
        reader.enqueue([NewJob(id="j2", command="true", max_retries=0)])
        assert {j.id for j in other.list_jobs()} == {"j1", "j2"}
    finally:
        reader.close()
        other.close()


def test_a_lazy_storage_that_cannot_create_its_file_refuses_at_open(tmp_path: Path) -> None:
    from queuectl_core.errors import StorageError
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    with pytest.raises(StorageError, match="cannot open SQLite database /proc/self/nope/queue.db: cannot create it"):
        SQLiteStorage("/proc/self/nope/queue.db", lazy=True)


def test_a_first_write_that_fails_to_create_still_reads_empty_and_leaves_nothing(tmp_path: Path) -> None:
    from queuectl_core.errors import StorageError
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    storage = SQLiteStorage(tmp_path / "dir" / "queue.db", lazy=True)
    try:
        (tmp_path / "dir").write_text("")  # a file where the directory would go
        with pytest.raises(StorageError, match="cannot open SQLite database .*: Not a directory"):
            storage.enqueue([NewJob(id="j1", command="true", max_retries=0)])
        assert sorted(os.listdir(tmp_path)) == ["dir"]
        (tmp_path / "dir").unlink()
        assert storage.list_jobs() == [] and storage.get("j1") is None
    finally:
        storage.close()


def test_a_first_write_that_loses_the_race_runs_again_on_the_winners_file(tmp_path: Path) -> None:
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    db = tmp_path / "queue.db"
    storage: Any = SQLiteStorage(db, lazy=True)
    runs = []

    def write(tx: Any) -> None:
        if not runs:  # another process creates the queue while this write runs in its private file
            other = SQLiteStorage(db)
            other.enqueue([NewJob(id="theirs", command="true", max_retries=0)])
            other.close()
        runs.append(1)
        tx.conn.execute("INSERT INTO queues (name) VALUES ('mine')")

    try:
        storage._tx(write)
        assert len(runs) == 2
        assert [j.id for j in storage.list_jobs()] == ["theirs"]
        assert "mine" in {name for (name,) in storage.conn.execute("SELECT name FROM queues")}
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("queue.db-")) == ["queue.db"]
    finally:
        storage.close()


def test_a_streaming_first_write_that_loses_the_race_enqueues_nothing(tmp_path: Path) -> None:
    """Its input is read: it cannot run again; one clear line, the winner's queue untouched."""
    from queuectl_core.errors import StorageError
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    db = tmp_path / "queue.db"
    storage = SQLiteStorage(db, lazy=True)

    def batches() -> Any:
        yield [NewJob(id="mine", command="true", max_retries=0)]
        other = SQLiteStorage(db)
        other.enqueue([NewJob(id="theirs", command="true", max_retries=0)])
        other.close()

    try:
        with pytest.raises(StorageError, match="another process created the queue at the same moment; nothing was"
                                               " enqueued: run the command again"):
            storage.enqueue_stream(batches())
        assert [j.id for j in storage.list_jobs()] == ["theirs"]
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("queue.db-")) == ["queue.db"]
        assert [b[0].id for b in storage.enqueue_stream(iter([[NewJob(id="again", command="true", max_retries=0)]]))]
    finally:
        storage.close()


def test_an_eager_storage_creates_its_file_on_open(tmp_path: Path) -> None:
    """A program opening SQLiteStorage itself (tests, benchmarks) gets the file at once, as before."""
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    db = tmp_path / "dir" / "queue.db"
    storage: Any = SQLiteStorage(db)
    try:
        assert _mode(db.parent) == 0o700 and _mode(db) == 0o600
        assert storage.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        storage.close()
