"""The CLI's light PostgreSQL driver (libpq through ctypes) stores exactly what psycopg stores.

Both drivers run the same PostgresStorage code on a real server; each test compares the rows
(every column the storage reads back) or the errors they give.
"""

from __future__ import annotations

import select
from datetime import UTC, datetime, timedelta
from typing import Any, Iterator

import pytest

from queuectl_core.errors import DuplicateJobError, StorageError, UniqueKeyError, ValidationError
from queuectl_core.models import NewJob
from queuectl_plugins import postgres_lite
from queuectl_plugins.postgres_storage import PostgresStorage
from queuectl_plugins.postgres_testing import temporary_postgres_database

# Columns whose values differ between two enqueues of the same job by design.
_VOLATILE = {"id", "created_at", "updated_at", "run_at"}


@pytest.fixture
def stores() -> Iterator[tuple[PostgresStorage, PostgresStorage, str]]:
    with temporary_postgres_database() as dsn:
        full = PostgresStorage(dsn)  # migrates
        lite = PostgresStorage(dsn, driver=postgres_lite)
        try:
            yield full, lite, dsn
        finally:
            lite.close()
            full.close()


def _fields(job: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(job).items() if k not in _VOLATILE} if hasattr(job, "__dict__") else \
        {k: getattr(job, k) for k in job.__dataclass_fields__ if k not in _VOLATILE}


JOBS = [
    dict(command="echo plain", max_retries=3),
    dict(command="echo 'quotes\" and \\ back', {braces}, ünïcode", max_retries=0, priority=-7,
         timeout=2.5, delay=30),
    dict(command="make", max_retries=5, queue="builds", unique_key="k1", retry_on=(1, 75), no_retry_on=None,
         cwd="/tmp/a dir", env={"A": "1", "B": "with space", "C": ""}, tags=("nightly", "x,y"), timeout=60),
    dict(command="later", max_retries=1, run_at=datetime(2031, 2, 3, 4, 5, 6, 789000, tzinfo=UTC),
         no_retry_on=(2, 64)),
]


@pytest.mark.parametrize("spec", JOBS, ids=["plain", "quoting", "control", "run_at"])
def test_the_lite_driver_stores_what_psycopg_stores(stores: Any, spec: dict[str, Any]) -> None:
    full, lite, _ = stores
    a = full.enqueue([NewJob(id="by-psycopg", **spec)])[0]
    if spec.get("unique_key"):
        spec = {**spec, "unique_key": "k2"}
    b = lite.enqueue([NewJob(id="by-lite", **spec)])[0]
    expected = _fields(a) | ({"unique_key": "k2"} if spec.get("unique_key") else {})
    assert _fields(b) == expected
    # And read back through psycopg, the lite row is the same as the lite reply.
    again = full.get("by-lite")
    assert again is not None and _fields(again) == _fields(b)
    assert again.created_at == b.created_at and again.run_at == b.run_at
    assert b.created_at.tzinfo is not None
    if spec.get("run_at"):
        assert b.run_at == spec["run_at"]
    if spec.get("delay"):
        assert timedelta(seconds=29) < b.run_at - b.created_at < timedelta(seconds=31)


def test_after_and_errors_match(stores: Any) -> None:
    full, lite, _ = stores
    lite.enqueue([NewJob(id="parent", command="true", max_retries=0)])
    child = lite.enqueue([NewJob(id="child", command="true", max_retries=0, after=("parent",))])[0]
    assert child.waiting == 1 and full.waits_on(["child"]) == {"child": ["parent"]}
    with pytest.raises(DuplicateJobError):
        lite.enqueue([NewJob(id="parent", command="x", max_retries=0)])
    lite.enqueue([NewJob(id="u1", command="x", max_retries=0, unique_key="only-one")])
    with pytest.raises(UniqueKeyError) as err:
        lite.enqueue([NewJob(id="u2", command="x", max_retries=0, unique_key="only-one")])
    assert err.value.holder == "u1"
    with pytest.raises(ValidationError, match="no such job"):
        lite.enqueue([NewJob(id="orphan", command="x", max_retries=0, after=("nope",))])
    # Every failed batch rolled back whole.
    assert full.get("orphan") is None and full.get("u2") is None
    assert sorted(j.id for j in full.list_jobs()) == ["child", "parent", "u1"]


def test_an_enqueue_wakes_a_listening_worker(stores: Any) -> None:
    full, lite, _ = stores
    from queuectl_core.models import WorkerInfo

    now = datetime.now(UTC)
    full.register_worker(WorkerInfo("worker-1", "host", 1, now, now))  # LISTENs
    conn = full._connect()
    while conn.pgconn.notifies() is not None:
        pass
    lite.enqueue([NewJob(id="wake", command="true", max_retries=0)])
    ready, _, _ = select.select([conn.fileno()], [], [], 5)
    assert ready, "no NOTIFY reached the listening connection"
    conn.pgconn.consume_input()
    assert conn.pgconn.notifies() is not None


def test_a_fresh_database_is_migrated_by_the_lite_driver_too() -> None:
    with temporary_postgres_database() as dsn:
        lite = PostgresStorage(dsn, schema="fresh", driver=postgres_lite)
        lite.enqueue([NewJob(id="first", command="true", max_retries=0)])
        lite.close()
        full = PostgresStorage(dsn, schema="fresh")
        job = full.get("first")
        full.close()
        assert job is not None and job.state == "pending"


def test_errors_mask_the_password_and_name_the_failure() -> None:
    secret = "s3cr3t-pw"
    dsn = f"postgresql://postgres:{secret}@127.0.0.1:1/nodb"  # nothing listens on port 1
    with pytest.raises(StorageError) as err:
        PostgresStorage(dsn, connect_timeout=2, driver=postgres_lite)
    text = str(err.value)
    assert secret not in text and "PostgreSQL unavailable" in text and "connection failed" in text
    from queuectl_core.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be parsed"):
        PostgresStorage("host=h password", driver=postgres_lite)


def test_no_libpq_is_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from queuectl_core.settings import CORE_SETTINGS, Config

    monkeypatch.setattr(postgres_lite, "_lib", None)
    monkeypatch.setattr(postgres_lite, "_candidates", lambda: iter(["/nonexistent/libpq.so.5"]))
    config = Config(None, {s.key: s for s in CORE_SETTINGS}, {})  # type: ignore[arg-type]
    with pytest.raises(ImportError, match="no libpq"):
        postgres_lite.lite_storage(config)
