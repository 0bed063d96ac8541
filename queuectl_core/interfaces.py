"""The typed interfaces a storage backend, an executor and a backoff policy satisfy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from queuectl_core.lifecycle import Change
    from queuectl_core.models import AttemptResult, Job, JobState, NewJob, WorkerInfo
    from queuectl_core.settings import Config


@runtime_checkable
class Storage(Protocol):
    """Where jobs and workers live: persistence only. What a change means is decided in
    :mod:`queuectl_core.lifecycle`; a storage applies it atomically, fenced by the lease token.

    Times a backend writes (created_at, run_at, leases) come from its own clock (:meth:`now`).
    SQL backends get every method but the connection, locking and wake-ups from
    :class:`queuectl_core.sqlstore.SQLStore`. Every method may raise StorageError (unreachable,
    locked too long); a worker waits that out.
    """

    def now(self) -> datetime: ...

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert all the jobs, pending, or none; raise DuplicateJobError naming an id that exists
        (or repeats within the batch)."""

    def get(self, job_id: str) -> Job | None: ...

    def list_jobs(self, state: JobState | None = None, limit: int | None = None,
                  before: str | None = None) -> list[Job]:
        """Jobs newest first (created_at, then id, descending), optionally only one state;
        ``before`` (a job id) starts after that job, for paging."""

    def attempts_by_state(self) -> dict[JobState, int]:
        """The sum of ``attempts`` over the jobs of each state, every state present."""

    def counts(self) -> dict[JobState, int]:
        """How many jobs in each state, every state present."""

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        """Atomically take the next runnable job (pending or failed with run_at reached; highest
        priority, then earliest run_at, then id): processing, attempts + 1, a fresh lease_token,
        lease_expires_at = now + lease, cancel_requested cleared. None when nothing is runnable."""

    def apply(self, job_id: str, token: str | None, change: Change) -> Job | None:
        """Persist one decided change atomically, only while the job is in one of
        ``change.from_states``, still holds ``token`` (when given), and (``expired_only``) its lease
        has expired by this storage's clock. Returns the updated job, or None when fenced out.
        A repeat of a worker's final write (``change.idempotent``) after a lost reply returns the
        row it already wrote."""

    def expired(self, limit: int = 100) -> list[Job]:
        """Processing jobs whose lease has expired by this storage's clock."""

    def next_run_at(self) -> datetime | None:
        """The earliest run_at among pending and failed jobs, or None."""

    def register_worker(self, info: WorkerInfo) -> None: ...

    def worker_seen(self, worker_id: str, current_job: str | None) -> bool:
        """Record that a worker is alive; True when it has been asked to stop."""

    def unregister_worker(self, worker_id: str) -> None: ...

    def live_workers(self) -> list[WorkerInfo]:
        """Workers seen in the last 15 seconds, by id."""

    def request_stop(self) -> int:
        """Ask every live worker to stop after its current job; returns how many were asked."""

    def wait_for_work(self, timeout: float, wakeup_fd: int | None = None) -> None:
        """Block until work may be available (a wake-up from enqueue, a runnable change or a stop
        request), ``wakeup_fd`` is readable, or ``timeout`` seconds pass. Polling alone must stay
        correct. Never raises."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunContext:
    """What the worker hands the executor for one attempt."""

    attempt: int
    tick_interval: float
    # Called at least every tick_interval seconds and whenever wakeup_fd is readable; it renews the
    # lease. True means stop the job now (a second Ctrl+C, or this worker lost the lease).
    tick: Callable[[], bool]
    wakeup_fd: int | None = None
    # The job's process group, so the worker can take it down with it if the worker dies.
    on_spawn: Callable[[int], None] = lambda pgid: None
    on_reaped: Callable[[int], None] = lambda pgid: None


@runtime_checkable
class Executor(Protocol):
    """Runs one attempt of a job and reports how it ended. Never raises for a job's own failure."""

    def run(self, job: Job, ctx: RunContext) -> AttemptResult: ...


@runtime_checkable
class BackoffPolicy(Protocol):
    def delay(self, attempt: int, job: Job) -> float:
        """Seconds to wait before retry number ``attempt`` (1 after the first failure)."""


StorageFactory = Callable[["Config"], Storage]
ExecutorFactory = Callable[["Config"], Executor]
BackoffFactory = Callable[["Config"], BackoffPolicy]
