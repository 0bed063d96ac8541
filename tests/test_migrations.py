"""A queue created by the previous release opens, migrates once, and keeps its jobs (both backends)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from queuectl_core.control import actions
from queuectl_core.jobs.models import JobState


def test_sqlite_v1_database_is_migrated_in_place(tmp_path: Path) -> None:
    from queuectl_plugins.sqlite_storage import MIGRATIONS, SQLiteStorage

    db = tmp_path / "queue.db"
    conn = sqlite3.connect(db)
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 " run_at) VALUES ('old', 'true', 'pending', 0, 3, 0, 1, 1, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
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

    from queuectl_plugins.postgres_storage import PostgresStorage
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
    from queuectl_plugins.sqlite_storage import MIGRATIONS, SQLiteStorage, _statements

    db = tmp_path / "queue.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:5]:  # the release before history
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 " run_at, last_exit_code, last_error, log_path, worker_id, queue) VALUES"
                 " ('done', 'false', 'dead', 2, 1, 0, 1, 2, 1, 1, 'exit 1', '/l/done.2.log', 'worker-1', 'default'),"
                 " ('running', 'sleep 9', 'processing', 1, 0, 9, 1, 2, 1, NULL, NULL, NULL, 'worker-1', 'default')")
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    storage = SQLiteStorage(db)
    try:
        assert storage.get("running").attempt_number == 1  # type: ignore[union-attr]
        _check_history_kept(storage)
    finally:
        storage.close()


def test_postgres_history_migration_keeps_the_last_attempt() -> None:
    import psycopg

    from queuectl_plugins.postgres_storage import PostgresStorage
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
