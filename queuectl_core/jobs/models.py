"""The job model: its states, a job to enqueue and a stored job, and the events plugins receive.

What storage and the executor report beside jobs (queues, schedules, workers, attempts and their
outcomes) is in :mod:`queuectl_core.jobs.records`, made only by the commands that use it: each
frozen dataclass costs ~0.6-1.5 ms to create at import, and `queuectl enqueue` needs only these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from queuectl_core.jobs.timeutil import format_time, now

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config
    from queuectl_core.jobs.records import AttemptResult


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
    # -- limits: its own (None: its queue's or the config's; 0: none), see queuectl_core.jobs.limits --
    memory: int | None = None  # bytes
    cpu_time: float | None = None  # seconds
    # -- needs: units of resources a worker (or a pool) must give it, {"gpu": 1} --
    needs: dict[str, int] = field(default_factory=dict, hash=False)


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
    # -- accounting: what the last finished attempt used, as its executor measured it --
    last_cpu_seconds: float | None = None
    last_max_rss_bytes: int | None = None
    # -- limits: its own as stored; while an attempt runs, the executor is given the limits in force --
    memory: int | None = None  # bytes
    cpu_time: float | None = None  # seconds
    # -- needs: what it must be given to run, {"gpu": 1} (queuectl_core.jobs.needs) --
    needs: dict[str, int] = field(default_factory=dict, hash=False)

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
            "last_cpu_seconds": round(self.last_cpu_seconds, 3) if self.last_cpu_seconds is not None else None,
            "last_max_rss_bytes": self.last_max_rss_bytes,
            "memory": self.memory,
            "cpu_time": self.cpu_time,
            "needs": dict(self.needs),  # -- needs
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
