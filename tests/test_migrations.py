"""A queue created by the previous release opens, migrates once, and keeps its jobs (both backends)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from queuectl_core.control import actions
from queuectl_core.jobs.models import JobState


def sqlite_schema_at(db: Path, version: int) -> sqlite3.Connection:
    """A SQLite file as a release at migration ``version`` left it (its migrations run, its
    user_version set), and a connection to it (autocommit) to put that release's rows in."""
    from queuectl_plugins.sqlite_storage import MIGRATIONS, _statements

    conn = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:version]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_sqlite_v1_database_is_migrated_in_place(tmp_path: Path) -> None:
    from queuectl_plugins.sqlite_storage import MIGRATIONS, SQLiteStorage

    db = tmp_path / "queue.db"
    conn = sqlite_schema_at(db, 1)
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 " run_at) VALUES ('old', 'true', 'pending', 0, 3, 0, 1, 1, 1)")
    conn.close()
    storage = SQLiteStorage(db)
    try:
        job = storage.claim("w", 30)
        assert job is not None and job.id == "old" and not job.cancel_requested
        assert (job.cwd, job.env, job.tags, job.last_duration) == (None, {}, (), None)  # the control columns, empty
        assert actions.cancel(storage, "old").cancel_requested
        assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        storage.close()


def test_postgres_v1_schema_is_migrated_in_place() -> None:
    import psycopg

    from queuectl_plugins.postgres_storage.store import PostgresStorage
    from queuectl_plugins.postgres_testing import postgres_schema_at, temporary_postgres_database

    with temporary_postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            postgres_schema_at(conn, 1)
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, max_retries) VALUES ('old', 'true', 'pending', 3)")
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, max_retries, priority)"
                         " VALUES ('old2', 'true', 'pending', 3, 9)")
        storage = PostgresStorage(dsn)
        try:
            claimed = storage.claim("w", 30)  # a v1 job is in the default queue, claimable
            assert claimed is not None and (claimed.id, claimed.queue) == ("old2", "default")
            assert actions.cancel(storage, "old").state == JobState.CANCELLED  # a state v1 did not allow
            assert storage.counts()[JobState.CANCELLED] == 1
            old = storage.get("old")
            assert old is not None and (old.cwd, old.env, old.tags) == (None, {}, ())  # the control columns, empty
        finally:
            storage.close()


# -- history (issue 20): the previous release's jobs keep their last attempt and count on -------------
def _check_history_kept(storage: Any) -> None:
    done = storage.get("done")
    assert done is not None and (done.attempts, done.attempt_number) == (2, 2)
    [last] = storage.attempts("done")  # what the row knew of its last attempt, now its history
    assert (last.attempt, last.exit_code, last.error, last.log_path) == (2, 1, "exit 1", "/l/done.2.log")
    assert storage.attempts("running") == []  # its attempt is recorded when it ends
    restarted = actions.restart(storage, "done")
    assert (restarted.attempts, restarted.attempt_number, restarted.last_error) == (0, 2, None)
    again = storage.claim("w", 30)
    assert again is not None and again.id == "done" and again.attempt_number == 3


def test_sqlite_history_migration_keeps_the_last_attempt(tmp_path: Path) -> None:
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    db = tmp_path / "queue.db"
    conn = sqlite_schema_at(db, 5)  # the release before history
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 " run_at, last_exit_code, last_error, log_path, worker_id, queue) VALUES"
                 " ('done', 'false', 'dead', 2, 1, 0, 1, 2, 1, 1, 'exit 1', '/l/done.2.log', 'worker-1', 'default'),"
                 " ('running', 'sleep 9', 'processing', 1, 0, 9, 1, 2, 1, NULL, NULL, NULL, 'worker-1', 'default')")
    conn.close()
    storage = SQLiteStorage(db)
    try:
        assert storage.get("running").attempt_number == 1  # type: ignore[union-attr]
        _check_history_kept(storage)
    finally:
        storage.close()


def test_postgres_history_migration_keeps_the_last_attempt() -> None:
    import psycopg

    from queuectl_plugins.postgres_storage.store import PostgresStorage
    from queuectl_plugins.postgres_testing import postgres_schema_at, temporary_postgres_database

    with temporary_postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            postgres_schema_at(conn, 5)
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, attempts, max_retries, last_exit_code,"
                         " last_error, log_path, worker_id) VALUES"
                         " ('done', 'false', 'dead', 2, 1, 1, 'exit 1', '/l/done.2.log', 'worker-1'),"
                         " ('running', 'sleep 9', 'processing', 1, 0, NULL, NULL, NULL, 'worker-1')")
        storage = PostgresStorage(dsn)
        try:
            assert storage.get("running").attempt_number == 1  # type: ignore[union-attr]
            _check_history_kept(storage)
        finally:
            storage.close()


# -- accounting: what each attempt used, in columns added to a queue that has history -------------
def _check_accounting_added(storage: Any) -> None:
    from queuectl_core.jobs import lifecycle
    from queuectl_core.jobs.records import AttemptResult

    [before] = storage.attempts("done")  # recorded before: nothing measured
    assert (before.attempt, before.cpu_seconds, before.max_rss_bytes) == (1, None, None)
    done = storage.get("done")
    assert (done.last_cpu_seconds, done.last_max_rss_bytes) == (None, None)
    job = storage.claim("w", 30)
    assert job is not None and job.id == "next"
    result = AttemptResult(exit_code=0, duration=1.5, cpu_seconds=0.75, max_rss_bytes=300 * 1024 ** 2)
    stored = storage.apply("next", job.lease_token, lifecycle.complete(result))
    assert (stored.last_cpu_seconds, stored.last_max_rss_bytes) == (0.75, 300 * 1024 ** 2)
    [now] = storage.attempts("next")  # the trigger made again copies them
    assert (now.duration, now.cpu_seconds, now.max_rss_bytes) == (1.5, 0.75, 300 * 1024 ** 2)


def test_sqlite_accounting_migration_adds_what_attempts_used(tmp_path: Path) -> None:
    from queuectl_plugins.sqlite_storage import MIGRATIONS, SQLiteStorage

    db = tmp_path / "queue.db"
    conn = sqlite_schema_at(db, 6)  # the release before accounting
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 " run_at, last_exit_code, last_duration, last_attempt, queue) VALUES"
                 " ('done', 'true', 'completed', 1, 0, 0, 1, 2, 1, 0, 0.5, 1, 'default'),"
                 " ('next', 'true', 'pending', 0, 0, 0, 3, 3, 1, NULL, NULL, 0, 'default')")
    conn.execute("INSERT INTO attempts (job_id, attempt, started_at, finished_at, duration, exit_code)"
                 " VALUES ('done', 1, 1, 2, 0.5, 0)")
    conn.close()
    storage = SQLiteStorage(db)
    try:
        _check_accounting_added(storage)
        assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        storage.close()


def test_postgres_accounting_migration_adds_what_attempts_used() -> None:
    import psycopg

    from queuectl_plugins.postgres_storage.store import PostgresStorage
    from queuectl_plugins.postgres_testing import postgres_schema_at, temporary_postgres_database

    with temporary_postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            postgres_schema_at(conn, 6)
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, attempts, max_retries, last_exit_code,"
                         " last_duration, last_attempt) VALUES ('done', 'true', 'completed', 1, 0, 0, 0.5, 1)")
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, max_retries, created_at)"
                         " VALUES ('next', 'true', 'pending', 0, now() + interval '1 second')")
            conn.execute("INSERT INTO queuectl.attempts (job_id, attempt, finished_at, duration, exit_code)"
                         " VALUES ('done', 1, now(), 0.5, 0)")
        storage = PostgresStorage(dsn)
        try:
            _check_accounting_added(storage)
        finally:
            storage.close()
