"""On PostgreSQL a worker's record-and-claim (``apply_and_claim``: the finished job's result, then
the claim of its successor, in one transaction) is two round trips to the server, not four: BEGIN,
the result and the claim go together (psycopg's pipeline mode), then COMMIT. Counted on the wire,
through a proxy between the storage and the server (process_helpers.TcpProxy); and a connection cut in the middle commits
nothing, as before."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from process_helpers import TcpProxy

from queuectl_core.errors import StorageError
from queuectl_core.jobs import lifecycle
from queuectl_core.jobs.models import JobState, NewJob
from queuectl_core.jobs.records import AttemptResult
from queuectl_plugins.postgres_testing import temporary_postgres_database


@pytest.fixture
def proxied() -> Iterator[tuple[Any, TcpProxy]]:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from queuectl_plugins.postgres_storage.store import PostgresStorage

    with temporary_postgres_database() as dsn:
        info = conninfo_to_dict(dsn)
        proxy = TcpProxy((str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)))
        storage = PostgresStorage(make_conninfo(dsn, host="127.0.0.1", port=proxy.port, sslmode="disable"))
        try:
            yield storage, proxy
        finally:
            storage.close()
            proxy.close()


def _two_jobs(storage: Any) -> Any:
    storage.enqueue([NewJob(id="a", command="true", max_retries=0), NewJob(id="b", command="true", max_retries=0)])
    (job,) = storage.claim_many("w", 60.0, 1)
    return job


def test_record_and_claim_is_two_round_trips(proxied: tuple[Any, TcpProxy]) -> None:
    storage, proxy = proxied
    job = _two_jobs(storage)
    proxy.count()
    stored, claimed = storage.apply_and_claim(
        [(job.id, job.lease_token, lifecycle.complete(AttemptResult(exit_code=0)))], "w", 60.0, 1)
    assert proxy.turns == 2
    assert stored[0] is not None and stored[0].state == JobState.COMPLETED
    assert [j.id for j in claimed] == ["b"] and claimed[0].state == JobState.PROCESSING


def test_a_connection_cut_inside_the_transaction_commits_nothing(proxied: tuple[Any, TcpProxy]) -> None:
    storage, proxy = proxied
    job = _two_jobs(storage)
    proxy.count()
    proxy.cut_at = 2  # BEGIN, the result and the claim were sent and answered; COMMIT never arrives
    with pytest.raises(StorageError):
        storage.apply_and_claim([(job.id, job.lease_token, lifecycle.complete(AttemptResult(exit_code=0)))],
                                "w", 60.0, 1)
    proxy.cut_at = None
    proxy.restore()
    # A new connection: the first job still runs under its lease, the second was never claimed.
    assert storage.get("a").state == JobState.PROCESSING
    assert storage.get("b").state == JobState.PENDING


def test_a_limited_queue_raced_full_inside_the_pipeline_is_rolled_back_and_skipped(
        proxied: tuple[Any, TcpProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim took a job of a limited queue that another worker filled meanwhile (made here by
    the count under the queue's lock reading over the limit once): the transaction, sent as a
    pipeline, is rolled back whole and tried again without that queue."""
    storage, _ = proxied
    storage.set_queue("limited", concurrency=1)
    storage.enqueue([NewJob(id="a", command="true", max_retries=0)])
    (job,) = storage.claim_many("w", 60.0, 1)
    storage.enqueue([NewJob(id="b", command="true", max_retries=0, queue="limited"),
                     NewJob(id="c", command="true", max_retries=0)])
    counted = []
    real_q = type(storage)._q

    def raced(self: Any, tx: Any, sql: str, **params: Any) -> Any:
        if sql.startswith("SELECT count(*)") and not counted:
            counted.append(sql)
            return [(2,)]  # another worker's claim of the limited queue committed first
        return real_q(self, tx, sql, **params)

    monkeypatch.setattr(type(storage), "_q", raced)
    stored, claimed = storage.apply_and_claim(
        [(job.id, job.lease_token, lifecycle.complete(AttemptResult(exit_code=0)))], "w", 60.0, 1)
    assert counted
    assert stored[0] is not None and stored[0].state == JobState.COMPLETED
    assert [j.id for j in claimed] == ["c"]
    assert storage.get("b").state == JobState.PENDING and storage.get("b").attempts == 0
    assert [a.attempt for a in storage.attempts("a")] == [1]  # the completion was recorded once
