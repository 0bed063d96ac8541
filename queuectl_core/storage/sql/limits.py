"""Limits: each job's own (``memory``, ``cpu_time`` columns of the jobs table, written by each
backend's insert) and each queue's defaults (the same columns of the queues table), for the
``QueueLimits`` capability."""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase

if TYPE_CHECKING:

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.limits import Limits


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
