"""What ``status`` shows (and a dashboard can too): counts, ready vs scheduled, queues, live workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from queuectl_core.timeutil import format_time

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.models import JobState, WorkerInfo


@dataclass(frozen=True)
class Overview:
    now: datetime
    counts: dict[JobState, int]
    ready: int
    scheduled: int
    oldest_ready: datetime | None  # run_at of the job that has been runnable longest
    queues: dict[str, dict[str, Any]]
    workers: list[WorkerInfo]

    def to_dict(self) -> dict[str, Any]:
        """``status --json`` (spec §10)."""
        return {
            "counts": {str(s): n for s, n in self.counts.items()},
            "pending": {"ready": self.ready, "scheduled": self.scheduled},
            "oldest_ready_at": format_time(self.oldest_ready),
            "oldest_ready_age_seconds": (round((self.now - self.oldest_ready).total_seconds(), 3)
                                         if self.oldest_ready is not None else None),
            "queues": self.queues,
            "workers": [w.to_dict() for w in self.workers],
        }


def _alive_here(worker: WorkerInfo, hostname: str) -> bool:
    """A worker on this host whose process is gone (SIGKILL, OOM) is not listed while its row
    ages out: its pid is checked. Workers on other hosts are listed by their last heartbeat."""
    if worker.hostname != hostname:
        return True
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def overview(storage: Storage) -> Overview:
    import socket

    counts = storage.counts()
    ready, scheduled, oldest = storage.pending_summary()
    queues: dict[str, dict[str, Any]] = {}
    for name, per_state in storage.queue_counts().items():
        # paused/concurrency are §11's; a storage without queue settings has neither.
        settings = getattr(storage, "queue_settings", None)
        conf = settings(name) if callable(settings) else {}
        queues[name] = {**{str(s): n for s, n in per_state.items()},
                        "paused": bool(conf.get("paused", False)), "concurrency": int(conf.get("concurrency", 0))}
    host = socket.gethostname()
    workers = [w for w in storage.live_workers() if _alive_here(w, host)]
    return Overview(storage.now(), counts, ready, scheduled, oldest, queues, workers)


__all__ = ["Overview", "overview"]
