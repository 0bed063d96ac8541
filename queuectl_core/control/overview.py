"""What ``status`` shows (and a dashboard can too): counts, ready vs scheduled, queues, live workers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from queuectl_core.jobs.models import JobState
from queuectl_core.jobs.timeutil import format_time

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.jobs.records import WorkerInfo


@dataclass(frozen=True)
class Overview:
    now: datetime
    counts: dict[JobState, int]
    ready: int
    scheduled: int
    oldest_ready: datetime | None  # run_at of the job that has been runnable longest
    queues: dict[str, dict[str, Any]]
    workers: list[WorkerInfo]

    @property
    def waiting(self) -> int:
        """Pending jobs held by `--after` until the jobs they wait on complete."""
        return max(0, self.counts[JobState.PENDING] - self.ready - self.scheduled)

    def to_dict(self) -> dict[str, Any]:
        """``status --json``."""
        return {
            "counts": {str(s): n for s, n in self.counts.items()},
            "pending": {"ready": self.ready, "scheduled": self.scheduled, "waiting": self.waiting},
            "oldest_ready_at": format_time(self.oldest_ready),
            "oldest_ready_age_seconds": (round((self.now - self.oldest_ready).total_seconds(), 3)
                                         if self.oldest_ready is not None else None),
            "queues": self.queues,
            "workers": [w.to_dict() for w in self.workers],
        }


def overview(storage: Storage, here: str) -> Overview:
    """What ``status`` shows; ``here`` is this machine's ``worker.host``."""
    from queuectl_core.jobs.history import live
    from queuectl_core.storage.capabilities import with_fallbacks

    counts = storage.counts()
    ready, scheduled, oldest = with_fallbacks(storage).pending_summary()
    queues: dict[str, dict[str, Any]] = {}
    for q in storage.queues():
        queues[q.name] = {**{str(s): q.counts.get(str(s), 0) for s in JobState},
                          "paused": q.paused, "concurrency": q.concurrency}
    # Grouped by the host each reports (config worker.host), by id within a host; a worker of this
    # host (``here``, this machine's worker.host) whose process is gone is left out.
    workers = sorted(live(storage.live_workers(), here), key=lambda w: (w.hostname, w.id))
    return Overview(storage.now(), counts, ready, scheduled, oldest, queues, workers)


__all__ = ["Overview", "overview"]
