"""A real PostgreSQL for tests: the maintenance DSN, a reachability check and throw-away databases.

Kept with the PostgreSQL plugin, out of ``queuectl_core``'s import path; it needs psycopg and pytest.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import pytest

# Not QUEUECTL_*: the test fixtures strip those from the environment of every test.
POSTGRES_TEST_DSN_ENV = "TEST_POSTGRES_DSN"
DEFAULT_POSTGRES_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_test_dsn() -> str:
    """The maintenance DSN tests create their databases through (a superuser, or CREATEDB)."""
    import os

    return os.environ.get(POSTGRES_TEST_DSN_ENV) or DEFAULT_POSTGRES_TEST_DSN


def require_postgres() -> str:
    """The admin DSN of a reachable server; otherwise skip the test, or fail it when the CI
    environment variable is set (CI must never silently skip the PostgreSQL tests)."""
    import os

    dsn = postgres_test_dsn()
    try:
        import psycopg
    except ImportError:
        reason = "psycopg is not installed (pip install 'queuectl[postgres]')"
    else:
        try:
            psycopg.connect(dsn, connect_timeout=3).close()
            return dsn
        except psycopg.Error as exc:
            reason = f"PostgreSQL is unreachable at {dsn}: {' '.join(str(exc).split())}"
    assert pytest is not None
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")


def _with_dbname(dsn: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@contextmanager
def temporary_postgres_database(prefix: str = "queuectl_test") -> Iterator[str]:
    """Create a fresh database and yield its DSN; dropped afterwards even if connections linger
    (``WITH (FORCE)`` ends them: a test's killed workers may still hold one)."""
    import secrets

    import psycopg

    admin = require_postgres()
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_dbname(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_schema_at(conn: Any, version: int, schema: str = "queuectl") -> None:
    """Build ``schema`` as a release at migration ``version`` left it (for upgrade tests): the
    migrations up to it, each recorded, through the psycopg connection ``conn`` (autocommit)."""
    from .postgres_storage.store import MIGRATIONS

    quoted = '"' + schema.replace('"', '""') + '"'
    conn.execute(f"CREATE SCHEMA {quoted}")
    conn.execute(f"CREATE TABLE {quoted}.schema_migrations (version integer PRIMARY KEY,"
                 " applied_at timestamptz NOT NULL DEFAULT now())")
    for number, sql in enumerate(MIGRATIONS[:version], start=1):
        conn.execute(sql.format(s=quoted))
        conn.execute(f"INSERT INTO {quoted}.schema_migrations (version) VALUES (%s)", (number,))
