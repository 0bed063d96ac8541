"""Every attempt's output, kept in the database (the optional ``AttemptOutput`` capability).

One row per chunk of an attempt's output: ``(job_id, attempt, seq, data)``. What to store (the head
and the tail within ``logs.max_bytes``, the line saying how much was cut) is decided in core by
:class:`queuectl_core.jobs.output.OutputCap`; this part stores and deletes the chunks it names, a
worker's writes of a second for all its running jobs in one transaction. Deleting a job deletes its
output: the bundled backends do it with a trigger on the jobs table, as for its attempts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase

if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.output import OutputWrite

# A write for a job that is gone (removed while a stale worker still held its output) stores nothing.
_PUT = ("INSERT INTO {ot} (job_id, attempt, seq, data) SELECT :job_id, :attempt, :seq, :data"
        " WHERE EXISTS (SELECT 1 FROM {j} WHERE id = :job_id)"
        " ON CONFLICT (job_id, attempt, seq) DO UPDATE SET data = excluded.data")
_DROP = "DELETE FROM {ot} WHERE job_id = :job_id AND attempt = :attempt AND seq >= :first AND seq < :end"


class OutputMixin(SQLBase):
    output_table = "job_output"  # qualified by a backend that keeps its tables in a schema

    def _output_sql(self, sql: str) -> str:
        return sql.replace("{ot}", self.output_table)

    def write_output(self, writes: Sequence[OutputWrite]) -> None:
        """Store the chunks, delete the ranges: one transaction, one executemany per kind."""
        run = self._output_runner(writes)
        if run is not None:
            self._tx(run)

    def _output_runner(self, writes: Sequence[OutputWrite]) -> Callable[[Tx], None] | None:
        """What :meth:`write_output` runs in its transaction, and ``apply_batch`` and
        ``apply_and_claim`` in theirs before the changes (a finished attempt's last output and
        its outcome, one commit); None when there is nothing to write."""
        drops = [dict(job_id=w.job_id, attempt=w.attempt, first=w.drop[0], end=w.drop[1])
                 for w in writes if w.drop is not None]
        puts = [dict(job_id=w.job_id, attempt=w.attempt, seq=seq, data=data)
                for w in writes for seq, data in w.chunks]
        if not drops and not puts:
            return None

        def run(tx: Tx) -> None:
            if drops:
                tx.many(self._sql(self._output_sql(_DROP)), drops)
            if puts:
                tx.many(self._sql(self._output_sql(_PUT)), puts)

        return run

    def read_output(self, job_id: str, attempt: int, after: int = 0) -> list[tuple[int, bytes]]:
        rows = self._read(self._output_sql("SELECT seq, data FROM {ot} WHERE job_id = :job_id AND attempt = :attempt"
                                           " AND seq > :after ORDER BY seq"),
                          job_id=job_id, attempt=attempt, after=after)
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def output_sizes(self, job_id: str) -> dict[int, int]:
        rows: list[Sequence[Any]] = self._read(self._output_sql(
            "SELECT attempt, SUM(LENGTH(data)) FROM {ot} WHERE job_id = :job_id GROUP BY attempt"), job_id=job_id)
        return {int(r[0]): int(r[1]) for r in rows if r[1]}


__all__ = ["OutputMixin"]
