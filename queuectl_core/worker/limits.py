"""The limits an attempt runs under: the job's own, else its queue's default, else the worker's
config (:mod:`queuectl_core.jobs.limits`), resolved as each attempt starts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from queuectl_core.jobs.limits import Limits, configured, effective, of_job, with_limits

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job

# How long the queues' defaults are reused before they are read again: a `queue set` reaches
# running workers within this, without a read per claimed job.
REFRESH_SECONDS = 5.0


class LimitDefaults:
    """The queues' default limits (read from a storage with the ``QueueLimits`` capability, at most
    every REFRESH_SECONDS) and the config's, applied to each job a worker starts."""

    def __init__(self, storage: Any, config: Any) -> None:
        self.storage = storage
        self.config = configured(config)
        self._queues: dict[str, Limits] = {}
        self._read_at = float("-inf")

    def queue_defaults(self) -> dict[str, Limits]:
        now = time.monotonic()
        if now - self._read_at >= REFRESH_SECONDS:
            read = getattr(self.storage, "queue_limits", None)
            if read is not None:
                try:
                    self._queues = read()
                except Exception:  # a storage outage: keep what was read last (the loop reports outages)
                    pass
            self._read_at = now
        return self._queues

    def apply(self, job: Job) -> Job:
        """The job with ``memory`` and ``cpu_time`` the limits in force for its attempt."""
        own = of_job(job)
        if own.memory is not None and own.cpu_time is not None:
            limits, _ = effective(own, None, self.config)
        else:
            limits, _ = effective(own, self.queue_defaults().get(job.queue), self.config)
        return with_limits(job, limits)
