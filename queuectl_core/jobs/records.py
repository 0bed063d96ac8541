"""What storage and the executor report beside jobs: queues, schedules, workers, attempts and how
an attempt ended. Kept apart from :mod:`queuectl_core.jobs.models` so a command that handles only
jobs (`queuectl enqueue`) does not create these dataclasses at import (~4 ms)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from queuectl_core.jobs.timeutil import format_time


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
    # What the job's processes used, when the executor measures it (None: it does not say).
    cpu_seconds: float | None = None  # user + system CPU time
    max_rss_bytes: int | None = None  # peak resident memory
    # -- limits: the executor stopped the job for exceeding one (a queuectl_core.jobs.limits.Limit
    # value, "memory" or "cpu_time"); the lifecycle words the reason. peak_memory: the tree's peak.
    exceeded: str | None = None
    peak_memory: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.aborted and self.error is None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a job, as its history keeps it (``show``): numbered from 1, never reused."""

    job_id: str
    attempt: int
    started_at: datetime | None  # when it was claimed (None: not known, from before history was kept)
    finished_at: datetime | None = None  # None: still running
    duration: float | None = None  # seconds, as the executor measured it; None if it never reported
    exit_code: int | None = None  # as recorded: negative for a signal, None if it never ran
    error: str | None = None
    worker_id: str | None = None
    host: str | None = None
    log_path: str | None = None
    cpu_seconds: float | None = None  # user + system CPU time, as the executor measured it
    max_rss_bytes: int | None = None  # peak resident memory, as the executor measured it

    @property
    def signal(self) -> str | None:
        """The signal that ended it (``SIGKILL``), or None."""
        if self.exit_code is None or self.exit_code >= 0:
            return None
        import signal

        try:
            return signal.Signals(-self.exit_code).name
        except ValueError:
            return f"signal {-self.exit_code}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape ``show --json`` prints for each attempt."""
        return {
            "attempt": self.attempt,
            "started_at": format_time(self.started_at),
            "finished_at": format_time(self.finished_at),
            "duration": round(self.duration, 3) if self.duration is not None else None,
            "exit_code": self.exit_code if self.exit_code is None or self.exit_code >= 0 else None,
            "signal": self.signal,
            "worker_id": self.worker_id,
            "host": self.host,
            "error": self.error,
            "log_path": self.log_path,
            "cpu_seconds": round(self.cpu_seconds, 3) if self.cpu_seconds is not None else None,
            "max_rss_bytes": self.max_rss_bytes,
        }


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as it registered itself, and what it last reported."""

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
        """The keys ``status --json`` shows (``host``, ``last_seen_at``), and the older ``hostname``/``last_seen``."""
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
