"""Attempt history: every attempt of a job, kept across ``restart`` and ``dlq retry``.

A backend records an attempt in the transaction of the change that ends it (a processing job
leaving processing), whatever path that change takes (one ``apply``, a worker's batch, a claim's
transaction): the bundled backends do it with a trigger on the jobs table, written in their
migrations beside the ``job_counts`` tallies, so recording costs no statement and no round trip
of its own. The row is the job's row as the change left it (``last_attempt``, the result) and as
the claim left it before (``updated_at``: when it started, ``worker_id``, ``host``). Deleting a job
deletes its attempts (a trigger too). This part reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase

if TYPE_CHECKING:
    from typing import Any, Sequence

    from queuectl_core.jobs.records import Attempt

ATTEMPT_COLUMNS = ("job_id", "attempt", "started_at", "finished_at", "duration", "exit_code", "error", "worker_id",
                   "host", "log_path", "cpu_seconds", "max_rss_bytes")


class HistoryMixin(SQLBase):
    def attempts(self, job_id: str) -> list[Attempt]:
        """Every finished attempt of ``job_id``, oldest first ([] for an unknown job)."""
        rows = self._read("SELECT " + ", ".join(ATTEMPT_COLUMNS) + " FROM {at} WHERE job_id = :id ORDER BY attempt",
                          id=job_id)
        return [self._attempt(r) for r in rows]

    def _attempt(self, r: Sequence[Any]) -> Attempt:
        from queuectl_core.jobs.records import Attempt

        t = self.dialect.from_db
        return Attempt(r[0], r[1], t(r[2]) if r[2] is not None else None, t(r[3]) if r[3] is not None else None,
                       *r[4:])

    def finished_attempts(self, since: datetime) -> list[tuple[str, Attempt]]:
        """Every attempt finished at or after ``since``, oldest first, with its job's queue (the
        ``FinishedAttempts`` capability): a range of the attempts_finished index."""
        rows = self._read("SELECT j.queue, " + ", ".join("a." + c for c in ATTEMPT_COLUMNS) +
                          " FROM {at} a JOIN {j} j ON j.id = a.job_id WHERE a.finished_at >= :since"
                          " ORDER BY a.finished_at, a.job_id, a.attempt", since=self.dialect.to_db(since))
        return [(r[0], self._attempt(r[1:])) for r in rows]

    def attempts_per_minute(self, since: datetime) -> dict[datetime, tuple[int, int]]:
        """Attempts finished at or after ``since``, per minute: {minute (UTC): (succeeded, not)}
        (the ``AttemptsPerMinute`` capability), in one statement grouped in the database."""
        minute = self.dialect.epoch_minute("finished_at")
        rows = self._read(f"SELECT {minute}, "
                          "SUM(CASE WHEN exit_code = 0 AND error IS NULL THEN 1 ELSE 0 END), "
                          "SUM(CASE WHEN exit_code = 0 AND error IS NULL THEN 0 ELSE 1 END) "
                          "FROM {at} WHERE finished_at >= :since GROUP BY 1",
                          since=self.dialect.to_db(since))
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return {epoch + timedelta(minutes=int(r[0])): (int(r[1]), int(r[2])) for r in rows}


__all__ = ["ATTEMPT_COLUMNS", "HistoryMixin"]
