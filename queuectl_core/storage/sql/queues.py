"""Queues: their settings (concurrency, paused) and counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase

if TYPE_CHECKING:

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.records import QueueInfo


class QueuesMixin(SQLBase):
    def queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or settings (a concurrency limit, or paused), by name."""
        from queuectl_core.jobs.models import JobState
        from queuectl_core.jobs.records import QueueInfo

        settings = {r[0]: (r[1], bool(r[2])) for r in self._read("SELECT name, concurrency, paused FROM {qt}")}
        counts: dict[str, dict[str, int]] = {}
        for queue, state, _, n, _ in self._tallies():
            if n:
                counts.setdefault(queue, {str(s): 0 for s in JobState})[state] += n
        out = []
        for name in sorted(set(settings) | set(counts)):
            concurrency, paused = settings.get(name, (0, False))
            if name not in counts and not concurrency and not paused:
                continue
            out.append(QueueInfo(name, concurrency, paused, counts.get(name, {str(s): 0 for s in JobState})))
        return out

    def set_queue(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None:
        """Change a queue's settings (creating its row); wakes idle workers."""
        sets, p = [], {"name": name, "concurrency": concurrency or 0, "paused": bool(paused)}
        if concurrency is not None:
            sets.append("concurrency = :concurrency")
        if paused is not None:
            sets.append("paused = :paused")

        def run(tx: Tx) -> None:
            self._q(tx, "INSERT INTO {qt} (name, concurrency, paused) VALUES (:name, :concurrency, :paused)"
                    " ON CONFLICT (name) DO UPDATE SET " + ", ".join(sets) + " RETURNING name", **p)
            tx.wake()

        self._tx(run)

    def set_all_paused(self, paused: bool) -> list[str]:
        """Pause or resume every queue that exists now; the names changed."""
        def run(tx: Tx) -> list[str]:
            rows = self._q(tx, "UPDATE {qt} SET paused = :paused WHERE paused <> :paused RETURNING name",
                           paused=paused)
            tx.wake()
            return sorted(r[0] for r in rows)

        return self._tx(run)
