"""The models `queuectl enqueue` never needs: queues, schedules, attempt results and workers.

Re-exported by :mod:`queuectl_core.models` on first use; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from queuectl_core.timeutil import format_time


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue: its settings and how many of its jobs are in each state."""

    name: str
    concurrency: int = 0  # 0: unlimited
    paused: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "concurrency": self.concurrency, "paused": self.paused,
                "counts": dict(self.counts)}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A recurring job: ``cron`` (5 fields, read in ``tz``) or ``every`` seconds. ``job`` holds the
    job options as a JSON job object (without id). ``last_tick`` is the latest tick enqueued."""

    name: str
    job: dict[str, Any]
    cron: str | None = None
    every: float | None = None
    tz: str | None = None
    paused: bool = False
    created_at: datetime | None = None
    last_tick: datetime | None = None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt ended, as the executor saw it."""

    exit_code: int | None
    error: str | None = None
    log_path: str | None = None
    output_tail: str | None = None
    duration: float = 0.0
    aborted: bool = False  # stopped by the worker (shutdown or lost lease), not by the job

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.aborted and self.error is None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    started_at: datetime
    last_seen: datetime
    current_job: str | None = None
    current_job_since: datetime | None = None  # when the current job was claimed
    # Every job the worker holds, newest claim first, as (id, claimed at): more than one for a
    # worker with --slots. current_job is the first of them (or the worker's own report).
    jobs: tuple[tuple[str, datetime], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Spec §10's keys (``host``, ``last_seen_at``), and the older ``hostname``/``last_seen``."""
        return {
            "id": self.id,
            "host": self.hostname,
            "pid": self.pid,
            "started_at": format_time(self.started_at),
            "last_seen_at": format_time(self.last_seen),
            "current_job": self.current_job,
            "current_job_since": format_time(self.current_job_since),
            "jobs": [{"id": job_id, "since": format_time(since)} for job_id, since in self.jobs],
            "hostname": self.hostname,
            "last_seen": format_time(self.last_seen),
        }
