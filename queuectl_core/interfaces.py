"""The typed interfaces a storage backend, an executor and a backoff policy satisfy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from queuectl_core.lifecycle import Change
    from queuectl_core.models import AttemptResult, Job, JobState, NewJob, QueueInfo, Schedule, WorkerInfo
    from queuectl_core.settings import Config


class Tx(Protocol):
    """One open transaction, as a backend hands it to the SQL layer (queuectl_core.sqlstore, which
    also exports it)."""

    def rows(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]: ...

    def wake(self) -> None:
        """Wake idle workers once this transaction commits."""

    def many(self, sql: str, params: Sequence[dict[str, Any]]) -> None:
        """Run one statement for each parameter set (executemany)."""


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

    def enqueue_stream(self, batches: Iterable[Sequence[NewJob]]) -> Iterator[list[Job]]:
        """Insert every job of every batch in one transaction, all or none (an exception from
        ``batches`` rolls everything back); then return the stored jobs batch by batch, without
        holding them all in memory. Raises as :meth:`enqueue`."""

    def get(self, job_id: str) -> Job | None: ...

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  states: Sequence[JobState] | None = None, tag: str | None = None,
                  queue: str | None = None, before: str | None = None) -> list[Job]:
        """Jobs newest first (created_at, then id, descending); optionally only one state (or any of
        ``states``), one tag, one queue; ``before`` (a job id) starts after that job, for paging."""

    def attempts_by_state(self) -> dict[JobState, int]:
        """The sum of ``attempts`` over the jobs of each state, every state present."""

    def counts(self) -> dict[JobState, int]:
        """How many jobs in each state, every state present."""

    def claim(self, worker_id: str, lease_seconds: float, queues: Sequence[str] | None = None) -> Job | None:
        """Atomically take the next runnable job (pending or failed with run_at reached, waiting on
        no unfinished job, in an unpaused queue below its concurrency limit, of ``queues`` when
        given; highest priority, then earliest run_at, then id): processing, attempts + 1, a fresh
        lease_token, lease_expires_at = now + lease, cancel_requested cleared. None when nothing
        is runnable. A queue's concurrency is never exceeded, however many claim at once."""

    # -- many jobs per worker (`worker start --slots`); optional: a worker falls back to claim,
    # apply and get when a backend lacks them ----------------------------------------------------
    def claim_many(self, worker_id: str, lease_seconds: float, limit: int,
                   queues: Sequence[str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs, each taken as :meth:`claim` takes one (its own token and lease;
        priorities, run_at, dependencies, pauses and queue limits as for that many claims), in one
        transaction. Empty when nothing is runnable."""

    def apply_batch(self, changes: Sequence[tuple[str, str | None, Change]]) -> list[Job | None]:
        """Apply several ``(job_id, token, change)`` in one transaction, each fenced on its own as
        :meth:`apply` is: the updated job, or None for one fenced out (the others still apply)."""

    def apply_and_claim(self, changes: Sequence[tuple[str, str | None, Change]], worker_id: str,
                        lease_seconds: float, limit: int,
                        queues: Sequence[str] | None = None) -> tuple[list[Job | None], list[Job]]:
        """:meth:`apply_batch` then :meth:`claim_many`, in one transaction."""

    def cancel_requests(self, job_ids: Sequence[str]) -> list[tuple[str, str | None]]:
        """(id, lease_token) of those of ``job_ids`` processing with a cancel requested; a read."""

    # -- §10 control and visibility ------------------------------------------------------------
    def count_jobs(self, state: JobState | None = None, *, states: Sequence[JobState] | None = None,
                   tag: str | None = None, queue: str | None = None) -> int:
        """How many jobs ``list_jobs`` would list with these filters and no limit. (``list_jobs``
        takes the same keyword filters: ``states`` any of these, ``tag`` carrying this tag.)"""

    def pending_summary(self) -> tuple[int, int, datetime | None]:
        """(pending jobs due now, pending jobs scheduled later, the earliest run_at among due
        pending and failed jobs): ``status``'s ready/scheduled split and the oldest ready job."""

    def apply_many(self, changes: Sequence[tuple[str, str | None, Change]]) -> list[Job] | None:
        """Apply several ``(job_id, token, change)`` as :meth:`apply` does, in one transaction: all,
        or none (None) when any one is fenced out."""

    def delete(self, job_ids: Sequence[str], states: Sequence[JobState]) -> list[Job] | None:
        """Delete every listed job if each exists and is in ``states``, else nothing (None)."""

    def purge(self, states: Sequence[JobState], older_than: float,
              limit: int | None = None) -> list[tuple[str, str | None]]:
        """Delete jobs in ``states`` whose updated_at is more than ``older_than`` seconds ago by
        this storage's clock, oldest first, at most ``limit``; returns (id, log_path) of each."""
    # -- end §10

    def apply(self, job_id: str, token: str | None, change: Change) -> Job | None:
        """Persist one decided change atomically, only while the job is in one of
        ``change.from_states``, still holds ``token`` (when given), and (``expired_only``) its lease
        has expired by this storage's clock. Returns the updated job, or None when fenced out.
        A repeat of a worker's final write (``change.idempotent``) after a lost reply returns the
        row it already wrote."""

    def expired(self, limit: int = 100) -> list[Job]:
        """Processing jobs whose lease has expired by this storage's clock."""

    def next_run_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        """The earliest run_at among jobs a claim of ``queues`` could take once due, or None."""

    # -- scheduling (spec §11) ---------------------------------------------------------------
    # enqueue() also records NewJob.queue (creating the queue), refuses a unique_key held by a
    # pending, failed or processing job (UniqueKeyError naming it; a unique constraint, so of
    # concurrent enqueuers exactly one wins), and records ``after``: an unknown id is a
    # ValidationError (nothing inserted); a job waits until every one it names is completed.
    # apply() of a Change with release_children / cascade_reason updates the waiting jobs.
    def burst_remaining(self, queues: Sequence[str] | None = None) -> tuple[int, int]:
        """(jobs a --burst worker of ``queues`` still waits for, how many of them are running)."""

    def waits_on(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        """For each job that still waits on others, the ids of those not yet completed."""

    def queues(self) -> list[QueueInfo]:
        """Queues with jobs or settings, by name, with counts per state."""

    def set_queue(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None: ...

    def set_all_paused(self, paused: bool) -> list[str]:
        """Pause or resume every existing queue; the names that changed."""

    def add_schedule(self, schedule: Schedule) -> None:
        """Store a schedule; ValidationError if the name exists."""

    def schedules(self) -> list[Schedule]: ...

    def remove_schedule(self, name: str) -> bool: ...

    def set_schedule_paused(self, name: str, paused: bool) -> bool: ...

    def enqueue_tick(self, name: str, tick: datetime, job: NewJob) -> Job | None:
        """Enqueue a schedule's tick exactly once across all workers and hosts: only when the
        schedule (unpaused) has no later or equal tick recorded and the job id is new."""

    def register_worker(self, info: WorkerInfo) -> None: ...

    def worker_seen(self, worker_id: str, current_job: str | None) -> int:
        """Record that a worker is alive: 0 carry on, 1 (truthy) asked to stop after its current
        job, 2 asked to stop now (``worker stop --now``)."""

    def unregister_worker(self, worker_id: str) -> None: ...

    def live_workers(self) -> list[WorkerInfo]:
        """Workers seen in the last 15 seconds, by id, each with the job it holds (from the claim,
        so from the moment it is claimed) and since when."""

    def request_stop(self, now: bool = False) -> int:
        """Ask every live worker to stop after its current job (``now``: at once, releasing it);
        returns how many were asked."""

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
    # §10: the executor reports (log path, the last few KiB of output so far) before each tick, so a
    # heartbeat can store them for `logs` on other hosts.
    on_output: Callable[[str, str], None] = lambda log_path, tail: None


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
