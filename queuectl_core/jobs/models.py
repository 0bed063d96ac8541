"""The job model: states, jobs, attempt outcomes, workers and the events plugins receive."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from queuectl_core.jobs.timeutil import format_time, now

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config


class JobState(StrEnum):
    """Every state a job can be in: the one list of them (queuectl_core.jobs.lifecycle groups them)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"  # final: stopped by `cancel`, or never to run


DEFAULT_QUEUE = "default"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated job about to be enqueued; ``run_at`` None means now (storage's clock)."""

    id: str
    command: str
    max_retries: int
    priority: int = 0
    run_at: datetime | None = None
    delay: float | None = None
    timeout: float | None = None
    # -- scheduling --
    queue: str = "default"
    after: tuple[str, ...] = ()  # ids this job waits on (each must end completed)
    unique_key: str | None = None
    retry_on: tuple[int, ...] | None = None  # retry only these exit codes
    no_retry_on: tuple[int, ...] | None = None  # these exit codes go straight to the DLQ
    # -- where and how it runs, and how it is found again --------------------------------
    cwd: str | None = None  # None: the worker's own directory
    env: dict[str, str] = field(default_factory=dict, hash=False)  # added to the worker's environment
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """A job as storage knows it."""

    id: str
    command: str
    state: JobState
    attempts: int
    max_retries: int
    priority: int
    created_at: datetime
    updated_at: datetime
    run_at: datetime
    timeout: float | None = None
    last_exit_code: int | None = None
    last_error: str | None = None
    log_path: str | None = None
    output_tail: str | None = None
    worker_id: str | None = None
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    # `cancel` of a running job asks its worker to stop it; the worker records it cancelled.
    cancel_requested: bool = False
    # -- scheduling --
    queue: str = "default"
    waiting: int = 0  # how many of the jobs it waits on (`after`) have not completed yet
    unique_key: str | None = None
    retry_on: tuple[int, ...] | None = None
    no_retry_on: tuple[int, ...] | None = None
    # -- where and how it runs, and how it is found again --------------------------------
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict, hash=False)
    tags: tuple[str, ...] = ()
    last_duration: float | None = None  # seconds the last finished attempt ran
    # -- history --
    # The number of its latest attempt, running or finished: every claim adds one, and neither
    # `restart`, `dlq retry` nor a release takes it back, so no two attempts of a job share one
    # (``attempts`` is the count toward max_retries, which restart and replay reset).
    last_attempt: int = 0
    host: str | None = None  # the machine of the worker that claimed it last

    @property
    def attempt_number(self) -> int:
        """The number of the job's latest attempt (what its log file is named after). A storage
        that keeps no history (no ``last_attempt``) numbers them by ``attempts``, as before."""
        return self.last_attempt or self.attempts

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a job, as ``list --json`` prints it."""
        return {
            "id": self.id,
            "command": self.command,
            "state": str(self.state),
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "priority": self.priority,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "run_at": format_time(self.run_at),
            "timeout": self.timeout,
            "last_exit_code": self.last_exit_code,
            "last_error": self.last_error,
            "log_path": self.log_path,
            "worker_id": self.worker_id,
            "lease_expires_at": format_time(self.lease_expires_at),
            # -- scheduling --
            "queue": self.queue,
            "waiting": self.waiting,
            "unique_key": self.unique_key,
            "retry_on": list(self.retry_on) if self.retry_on is not None else None,
            "no_retry_on": list(self.no_retry_on) if self.no_retry_on is not None else None,
            "cancel_requested": self.cancel_requested,
            "cwd": self.cwd,
            "env": masked_env(self.env),
            "tags": list(self.tags),
            "last_duration": round(self.last_duration, 3) if self.last_duration is not None else None,
            "last_attempt": self.attempt_number,
            "host": self.host,
        }


_SECRET_NAME = r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|PRIVATE|DSN|COOKIE|SESSION"  # compiled (and cached) by re on first use


def masked_env(env: dict[str, str]) -> dict[str, str]:
    """A job's env as shown: every key, and the value of any key that looks secret as ``***``."""
    return {k: ("***" if re.search(_SECRET_NAME, k, re.IGNORECASE) else v) for k, v in env.items()}


class EventKind(StrEnum):
    ENQUEUED = "enqueued"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"  # an attempt failed and a retry is scheduled
    DEAD = "dead"
    RETRIED = "retried"  # replayed from the DLQ
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"  # a running job's worker was asked to stop it
    RESTARTED = "restarted"  # a finished job put back to pending
    RELEASED = "released"  # handed back unfinished by a worker stopping at once
    LEASE_LOST = "lease_lost"  # another claim took over; this worker's result was discarded
    WORKER_STARTED = "worker_started"
    WORKER_STOPPING = "worker_stopping"
    WORKER_STOPPED = "worker_stopped"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One thing that happened, broadcast to every ``queuectl_job_event`` implementation."""

    kind: EventKind
    job: Job | None = None
    worker_id: str | None = None
    result: AttemptResult | None = None
    message: str | None = None
    at: datetime = field(default_factory=now)  # when it happened (the emitting process's clock)
    # The emitting process's configuration, so a notifier reads its own keys from the event.
    config: Config | None = field(default=None, compare=False, repr=False)


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
