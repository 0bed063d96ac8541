"""Limits: each job's own (``memory``, ``cpu_time`` columns of the jobs table) and each queue's
defaults (the same columns of the queues table), for the ``QueueLimits`` capability."""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase
from queuectl_core.storage.sql.rows import COLS, JOB_COLUMNS

if TYPE_CHECKING:
    from typing import Any, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.limits import Limits
    from queuectl_core.jobs.models import NewJob


def store_job_limits(store: SQLBase, tx: Tx, jobs: Sequence[NewJob], rows: list[Sequence[Any]]) -> list[Sequence[Any]]:
    """Write the limits of the jobs just inserted that have any (a backend's insert writes the
    columns every job has; these few are set after it, in the same transaction), returning the
    batch's rows with every column, in the order given."""
    limited = [j for j in jobs if j.memory is not None or j.cpu_time is not None]
    if not limited:
        return rows
    by_id: dict[str, Sequence[Any]] = {}
    for j in limited:
        found = store._q(tx, "UPDATE {j} SET memory = :memory, cpu_time = :cpu_time WHERE id = :id RETURNING " + COLS,
                         id=j.id, memory=j.memory, cpu_time=float(j.cpu_time) if j.cpu_time is not None else None)
        by_id.update({r[0]: r for r in found})
    width = len(JOB_COLUMNS)
    return [by_id.get(r[0]) or (tuple(r) + (None,) * (width - len(r))) for r in rows]


class LimitsMixin(SQLBase):
    def queue_limits(self) -> dict[str, Limits]:
        from queuectl_core.jobs.limits import Limits

        rows = self._read("SELECT name, memory, cpu_time FROM {qt} WHERE memory IS NOT NULL OR cpu_time IS NOT NULL")
        return {r[0]: Limits(r[1], float(r[2]) if r[2] is not None else None) for r in rows}

    def set_queue_limits(self, name: str, *, memory: int | None = None, cpu_time: float | None = None) -> None:
        sets = []
        if memory is not None:
            sets.append("memory = :memory")
        if cpu_time is not None:
            sets.append("cpu_time = :cpu_time")
        if not sets:
            return
        params = {"name": name, "memory": memory or None, "cpu_time": float(cpu_time) if cpu_time else None}

        def run(tx: Tx) -> None:
            self._q(tx, "INSERT INTO {qt} (name, concurrency, paused, memory, cpu_time)"
                    " VALUES (:name, 0, FALSE, :memory, :cpu_time)"
                    " ON CONFLICT (name) DO UPDATE SET " + ", ".join(sets) + " RETURNING name", **params)

        self._tx(run)
