"""A million jobs (issue 10): `status` and `list` read tallies and walk indexes, never the whole jobs
table; the tallies survive an upgrade and PostgreSQL's fold. (The curve itself is bench/scale.py.)"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any

from queuectl_core.jobs.models import JobState, NewJob
from queuectl_core.testing import StorageConformance


def _fill(storage: Any) -> None:
    """A few jobs in every shape the tallies split by: queues, states, held by --after, attempts."""
    from queuectl_core.jobs import lifecycle
    from queuectl_core.jobs.records import AttemptResult

    storage.enqueue([NewJob(id=f"j{i}", command="true", max_retries=0, priority=i) for i in range(6)]
                    + [NewJob(id="o", command="true", max_retries=0, queue="other"),
                       NewJob(id="kid", command="true", max_retries=0, after=("j0",)),
                       NewJob(id="later", command="true", max_retries=0, delay=3600)])
    done = storage.claim("w", 30)
    storage.apply(done.id, done.lease_token, lifecycle.complete(AttemptResult(exit_code=0)))
    dead = storage.claim("w", 30)
    storage.apply(dead.id, dead.lease_token, lifecycle.bury(AttemptResult(exit_code=1, error="exit status 1")))
    storage.claim("w", 30)  # one processing


def test_sqlite_status_and_list_never_scan_the_jobs_table(tmp_path: Path) -> None:
    """Every statement of `status` (overview) and of `list` (default view, --state, a next page) is
    planned as a tally read or an index walk: no full scan of jobs, no sort of all its rows."""
    from queuectl_core.control.overview import overview
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    storage = SQLiteStorage(tmp_path / "queue.db")
    try:
        _fill(storage)
        seen: list[str] = []
        storage.conn.set_trace_callback(seen.append)
        overview(storage, "this-host")
        for states in (None, [JobState.PENDING], [JobState.COMPLETED]):
            storage.list_jobs(None, 50, states=states)
            storage.list_jobs(None, 50, states=states, before="j3")
            storage.count_jobs(None, states=states)
        storage.conn.set_trace_callback(None)
        selects = [s for s in seen if s.lstrip().upper().startswith(("SELECT", "WITH"))]
        assert len(selects) >= 8
        for sql in selects:
            plan = [row[3] for row in storage.conn.execute("EXPLAIN QUERY PLAN " + sql)]
            for step in plan:
                assert not (step.startswith("SCAN jobs") and "jobs_created" not in step), (sql, plan)
                # The live workers' current jobs are sorted among the processing ones only (as
                # many as jobs run at once, whatever the queue's size).
                assert "TEMP B-TREE" not in step or "FROM workers" in sql, (sql, plan)
    finally:
        storage.close()


def _assert_exact(storage: Any) -> None:
    StorageConformance().assert_tallies_exact(storage)


def test_sqlite_previous_version_upgrades_with_exact_tallies(tmp_path: Path) -> None:
    from test_migrations import sqlite_schema_at

    from queuectl_plugins.sqlite_storage import _COUNTS, MIGRATIONS, SQLiteStorage

    previous = MIGRATIONS.index(_COUNTS)  # the release before the tallies (raw inserts are not tallied)

    db = tmp_path / "queue.db"
    conn = sqlite_schema_at(db, previous)  # that release's schema
    conn.executemany("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                     " run_at, queue, waiting) VALUES (?, 'true', ?, ?, 3, 0, 1, 1, ?, ?, ?)",
                     [("p", "pending", 0, 1, "default", 0), ("sched", "pending", 0, 4_000_000_000_000, "default", 0),
                      ("held", "pending", 0, 1, "other", 1), ("d", "completed", 2, 1, "default", 0),
                      ("x", "dead", 4, 1, "other", 0), ("f", "failed", 1, 1, "default", 0)])
    before = conn.execute("SELECT id, state, attempts FROM jobs ORDER BY id").fetchall()
    conn.close()
    storage = SQLiteStorage(db)
    try:
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("SELECT id, state, attempts FROM jobs ORDER BY id").fetchall() == before
        conn.close()
        assert storage.counts() == {**{s: 0 for s in JobState}, JobState.PENDING: 3, JobState.COMPLETED: 1,
                                    JobState.DEAD: 1, JobState.FAILED: 1}
        assert storage.attempts_by_state()[JobState.DEAD] == 4
        assert storage.pending_summary()[:2] == (1, 1)
        _assert_exact(storage)
        _fill(storage)  # and they stay exact from then on
        _assert_exact(storage)
    finally:
        storage.close()


def _pg_storage(dsn: str, schema: str) -> Any:
    from queuectl_plugins.postgres_storage.store import PostgresStorage

    return PostgresStorage(dsn, schema)


def test_postgres_previous_version_upgrades_with_exact_tallies() -> None:
    import psycopg

    from queuectl_plugins.postgres_storage.store import MIGRATIONS
    from queuectl_plugins.postgres_testing import postgres_schema_at, temporary_postgres_database

    with temporary_postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            postgres_schema_at(conn, len(MIGRATIONS) - 1)
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, max_retries, attempts)"
                         " VALUES ('p', 'true', 'pending', 3, 0), ('d', 'true', 'completed', 3, 2),"
                         " ('x', 'true', 'dead', 0, 1)")
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, max_retries, waiting, queue)"
                         " VALUES ('held', 'true', 'pending', 3, 1, 'other')")
        storage = _pg_storage(dsn, "queuectl")
        try:
            assert storage.counts() == {**{s: 0 for s in JobState}, JobState.PENDING: 2, JobState.COMPLETED: 1,
                                        JobState.DEAD: 1}
            assert storage.attempts_by_state()[JobState.COMPLETED] == 2
            assert storage.pending_summary()[:2] == (1, 0)
            _assert_exact(storage)
            job = storage.claim("w", 30)
            assert job is not None and job.id == "p"
            _assert_exact(storage)
        finally:
            storage.close()


def test_postgres_fold_keeps_the_tallies_exact() -> None:
    """PostgreSQL appends delta rows (no counter row for workers to queue on) and folds them now and
    then: folding, even twice over or with nothing to fold, changes no total."""
    from queuectl_plugins.postgres_testing import require_postgres

    dsn = require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    storage = _pg_storage(dsn, schema)
    try:
        _fill(storage)
        rows_before = storage._read("SELECT count(*) FROM {jc}")[0][0]
        expected = (storage.counts(), storage.attempts_by_state(), storage.pending_summary()[:2])
        for _ in range(2):
            storage._tx(lambda tx: tx.rows(f'SELECT "{schema}".job_counts_fold()', {}))
            assert (storage.counts(), storage.attempts_by_state(), storage.pending_summary()[:2]) == expected
        assert storage._read("SELECT count(*) FROM {jc}")[0][0] < rows_before
        _assert_exact(storage)
        storage.purge([JobState.COMPLETED, JobState.DEAD], older_than=-1e9)
        storage._tx(lambda tx: tx.rows(f'SELECT "{schema}".job_counts_fold()', {}))
        _assert_exact(storage)
    finally:
        storage.drop_schema()
        storage.close()
