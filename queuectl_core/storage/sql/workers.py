"""The worker directory: who is alive, what each holds, and stop requests."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase

if TYPE_CHECKING:
    from typing import Any, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.records import WorkerInfo

# A worker that has not been seen for this long is not listed as live.
WORKER_LIVE_SECONDS = 15.0


class WorkersMixin(SQLBase):
    def worker_seen(self, worker_id: str, current_job: str | None) -> int:
        """Record that a worker is alive. 0: carry on; 1 (true): stop after the current job;
        2: stop now (``worker stop --now``)."""
        rows = self._tx(lambda tx: self._q(
            tx, "UPDATE {w} SET last_seen = {now}, current_job = :job WHERE hostname = :host AND id = :id"
            " RETURNING stop_requested, stop_now", job=current_job, host=self.hostname, id=worker_id))
        if not rows or not rows[0][0]:
            return 0
        return 2 if rows[0][1] else 1

    def unregister_worker(self, worker_id: str) -> None:
        self._tx(lambda tx: self._q(tx, "DELETE FROM {w} WHERE hostname = :host AND id = :id RETURNING id",
                                    host=self.hostname, id=worker_id))

    def live_workers(self) -> list[WorkerInfo]:
        from queuectl_core.jobs.records import WorkerInfo

        t = self.dialect.from_db
        # The jobs a worker runs are read from the jobs table, where the claim itself records them,
        # so a job shows as running from the moment it is claimed (the worker's own report lags).
        # One row per (worker, job it holds), or one row with no job for an idle worker.
        rows = self._read("SELECT w.id, w.hostname, w.pid, w.started_at, w.last_seen, w.current_job, j.id, j.updated_at"
                          " FROM {w} w LEFT JOIN {j} j ON j.worker_id = w.id AND j.state = 'processing'"
                          " WHERE w.last_seen >= " + self.dialect.after("window") +
                          " ORDER BY w.id, j.updated_at DESC, j.id", window=-WORKER_LIVE_SECONDS)
        grouped: dict[str, tuple[Sequence[Any], list[tuple[str, datetime]]]] = {}
        for r in rows:
            _, jobs = grouped.setdefault(r[0], (r, []))
            if r[6] is not None:
                jobs.append((r[6], t(r[7])))
        out = []
        for r, jobs in grouped.values():
            current, since = jobs[0] if jobs else (r[5], None)
            out.append(WorkerInfo(r[0], r[1], r[2], t(r[3]), t(r[4]), current, since, tuple(jobs)))
        return out

    def request_stop(self, now: bool = False) -> int:
        """Ask every live worker to stop: after its current job, or (``now``) at once, releasing it."""
        def stop(tx: Tx) -> int:
            rows = self._q(tx, "UPDATE {w} SET stop_requested = " + self.dialect.true +
                           (", stop_now = " + self.dialect.true if now else "") +
                           " WHERE last_seen >= " + self.dialect.after("window") + " RETURNING id",
                           window=-WORKER_LIVE_SECONDS)
            tx.wake()
            return len(rows)

        return self._tx(stop)
