"""The optional capabilities of the in-memory storage, apart from its required protocol.

:class:`~queuectl_core.testing.memory.MemoryStorage` (``memory.py``) is the required ``Storage``
protocol, the part every backend writes; it takes the methods below from :class:`MemoryCapabilities`.
They are the capabilities no fallback can give as a database does: ``QueueLimits`` (each queue's
default limits), ``ResourceNeeds`` (what jobs need, what workers have, pools: without it a storage
refuses jobs with needs), ``AttemptHistory`` (every attempt of a job, recorded by ``_apply`` in the
change's own transaction), ``AttemptOutput`` (every attempt's output, kept by the storage) and
``Outbox`` (notifications, shared by every MemoryStorage of the queue, as a database's are). A
backend adds each the same way: methods over the data it already holds, under the same lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from queuectl_core.jobs.models import JobState
from queuectl_core.jobs.records import QueueInfo

if TYPE_CHECKING:
    from datetime import datetime

    from queuectl_core.jobs.limits import Limits
    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.notifications import OutboxEntry, OutboxItem
    from queuectl_core.jobs.output import OutputWrite
    from queuectl_core.jobs.records import Attempt, WorkerInfo
    from queuectl_core.testing.memory import MemoryQueue


class MemoryCapabilities:
    """Methods of :class:`~queuectl_core.testing.memory.MemoryStorage`, on its ``q`` and its lock."""

    if TYPE_CHECKING:  # what MemoryStorage provides
        q: MemoryQueue

        def now(self) -> datetime: ...
        def _wake(self) -> None: ...
        def _live(self) -> list[WorkerInfo]: ...
        def _open(self, queues: Sequence[str] | None, limits: bool = True) -> set[str]: ...
        def _ready(self, open_queues: set[str]) -> list[Job]: ...

    # -- QueueLimits: each queue's default limits ---------------------------------------------------
    def queue_limits(self) -> dict[str, Limits]:
        with self.q.lock:
            return dict(self.q.limits)

    def set_queue_limits(self, name: str, *, memory: int | None = None, cpu_time: float | None = None) -> None:
        from queuectl_core.jobs.limits import Limits

        with self.q.lock:
            self.q.queues.setdefault(name, QueueInfo(name))
            old = self.q.limits.get(name, Limits())
            new = Limits(old.memory if memory is None else (memory or None),
                         old.cpu_time if cpu_time is None else (float(cpu_time) or None))
            if new == Limits():
                self.q.limits.pop(name, None)
            else:
                self.q.limits[name] = new


    # -- optional: the ResourceNeeds capability ----------------------------------------------------
    def _used(self, name: str, worker_id: str | None = None) -> int:
        """Units of ``name`` held by processing jobs (of ``worker_id`` only, when given); lock held."""
        return sum(j.needs.get(name, 0) for j in self.q.jobs.values()
                   if j.state == JobState.PROCESSING and (worker_id is None or j.worker_id == worker_id))

    def _fits(self, job: Job, worker_id: str) -> bool:
        """Whether every unit the job needs is free now: in the pool of that name, or else among
        what the claiming worker declared (lock held)."""
        from queuectl_core.jobs.needs import units_of

        for name, units in job.needs.items():
            if name in self.q.pools:
                free = self.q.pools[name] - self._used(name)
            else:
                spec = self.q.resources.get(worker_id, {}).get(name)
                free = (units_of(name, spec) if spec is not None else 0) - self._used(name, worker_id)
            if units > free:
                return False
        return True

    def never_servable(self, worker_id: str, queues: Sequence[str] | None = None) -> int:
        """Of the jobs ``burst_remaining`` counts as runnable, those needing more of something than
        its pool's capacity, or (no pool of that name) than this worker declared."""
        from queuectl_core.jobs.needs import units_of

        with self.q.lock:
            have = self.q.resources.get(worker_id, {})

            def most(name: str) -> int:
                if name in self.q.pools:
                    return self.q.pools[name]
                return units_of(name, have[name]) if name in have else 0

            return sum(1 for j in self._ready(self._open(queues, limits=False))
                       if any(units > most(name) for name, units in j.needs.items()))

    def declare_resources(self, worker_id: str, resources: dict[str, str]) -> None:
        with self.q.lock:
            self.q.resources = {w: r for w, r in self.q.resources.items() if w in self.q.workers and w != worker_id}
            if resources:
                self.q.resources[worker_id] = dict(resources)
            self._wake()

    def set_pool(self, name: str, capacity: int) -> None:
        with self.q.lock:
            self.q.pools[name] = capacity
            self._wake()

    def remove_pool(self, name: str) -> bool:
        with self.q.lock:
            self._wake()
            return self.q.pools.pop(name, None) is not None

    def resource_usage(self) -> Any:
        from queuectl_core.jobs.needs import PoolUsage, ResourceUsage, WorkerUsage

        with self.q.lock:
            pools = tuple(PoolUsage(n, c, self._used(n)) for n, c in sorted(self.q.pools.items()))
            workers = tuple(WorkerUsage(w.id, w.hostname, dict(self.q.resources[w.id]),
                                        {k: u for k in self.q.resources[w.id] if k not in self.q.pools
                                         and (u := self._used(k, w.id))})
                            for w in self._live() if self.q.resources.get(w.id))
            return ResourceUsage(pools, workers)

    # -- optional: the AttemptHistory capability (core falls back when a storage lacks it) ---------
    def attempts(self, job_id: str) -> list[Attempt]:
        """Every finished attempt of the job, oldest first, as ``_apply`` records them."""
        with self.q.lock:
            return list(self.q.history.get(job_id, []))

    # -- optional: the AttemptOutput capability (without it, output stays in the executor's files) --
    def write_output(self, writes: Sequence[OutputWrite]) -> None:
        """Store and delete the chunks core decided (:class:`~queuectl_core.jobs.output.OutputCap`),
        all at once; a job that is gone gets nothing."""
        with self.q.lock:
            for w in writes:
                if w.job_id not in self.q.jobs:
                    continue
                chunks = self.q.output.setdefault((w.job_id, w.attempt), {})
                if w.drop is not None:
                    for seq in [s for s in chunks if w.drop[0] <= s < w.drop[1]]:
                        del chunks[seq]
                chunks.update(w.chunks)

    def read_output(self, job_id: str, attempt: int, after: int = 0) -> list[tuple[int, bytes]]:
        with self.q.lock:
            chunks = self.q.output.get((job_id, attempt), {})
            return sorted((seq, data) for seq, data in chunks.items() if seq > after)

    def output_sizes(self, job_id: str) -> dict[int, int]:
        with self.q.lock:
            sizes = {n: sum(map(len, chunks.values())) for (i, n), chunks in self.q.output.items() if i == job_id}
        return {n: size for n, size in sorted(sizes.items()) if size}

    # -- optional: the Outbox capability (notifications delivered at least once) --------------------
    def outbox_add(self, entries: Sequence[OutboxEntry]) -> list[str]:
        return self.q.outbox.add(entries, self.now())

    def outbox_claim(self, owner: str, notifiers: Sequence[str], lease_seconds: float,
                     limit: int) -> list[OutboxItem]:
        return self.q.outbox.claim(notifiers, lease_seconds, limit, self.now())

    def outbox_settle(self, item: OutboxItem, outcome: str, retry_in: float | None,
                      error: str | None = None) -> bool:
        return self.q.outbox.settle(item, outcome, retry_in, self.now())

    def notification_counts(self) -> dict[tuple[str, str], int]:
        return self.q.outbox.counts()

    def outbox_prune(self, older_than: float) -> int:
        return self.q.outbox.prune(older_than, self.now())


__all__ = ["MemoryCapabilities"]
