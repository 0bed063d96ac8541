"""The storage conformance suite (queuectl_core.testing.StorageConformance) against every bundled
backend: SQLite on a temporary file, PostgreSQL in a schema of its own per test."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from queuectl_core.testing import StorageConformance


class TestSQLiteConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> Iterator[Callable[[], Any]]:
        from queuectl_plugins.sqlite_storage import SQLiteStorage

        opened: list[Any] = []

        def factory() -> Any:
            opened.append(SQLiteStorage(tmp_path / "queue.db"))
            return opened[-1]

        yield factory
        for storage in opened:
            storage.close()


class TestSQLiteLazyConformance(StorageConformance):
    """As the plugin opens it for commands: the file is created by the first write, reads before
    it see an empty queue, and a storage opened before the file existed sees what others wrote."""

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> Iterator[Callable[[], Any]]:
        from queuectl_plugins.sqlite_storage import SQLiteStorage

        opened: list[Any] = []

        def factory() -> Any:
            opened.append(SQLiteStorage(tmp_path / "new" / "queue.db", lazy=True))
            return opened[-1]

        yield factory
        for storage in opened:
            storage.close()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """One database for the module; each test gets its own schema in it (much cheaper than a
    database per test, and it exercises the postgres.schema setting)."""
    from queuectl_plugins.postgres_testing import temporary_postgres_database

    with temporary_postgres_database("queuectl_conformance") as dsn:
        yield dsn


class TestPostgresConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self, pg_database: str) -> Iterator[Callable[[], Any]]:
        import psycopg

        from queuectl_plugins.postgres_storage.store import PostgresStorage

        schema = f"t_{secrets.token_hex(6)}"
        opened: list[Any] = []

        def factory() -> Any:
            opened.append(PostgresStorage(pg_database, schema))
            return opened[-1]

        yield factory
        for storage in opened:
            storage.close()
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_the_sql_backends_have_every_capability(tmp_path: Path) -> None:
    """Their reads at a million jobs (status, list's footer, /metrics) and the worker's batching
    run on their own statements, never on core's fallbacks."""
    from queuectl_core.storage.capabilities import CAPABILITIES, capabilities
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    storage = SQLiteStorage(tmp_path / "queue.db")
    try:
        assert capabilities(storage) == [cap.__name__ for cap in CAPABILITIES]
        assert {"CountJobs", "PendingSummary", "AttemptsByState", "Purge"} <= set(capabilities(storage))
    finally:
        storage.close()
