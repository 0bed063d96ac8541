"""The typed interfaces a storage backend, an executor and a backoff policy satisfy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config
    from queuectl_core.jobs.lifecycle import Change
    from queuectl_core.jobs.models import Job, JobState, NewJob
    from queuectl_core.jobs.records import AttemptResult, QueueInfo, Schedule, WorkerInfo


class Tx(Protocol):
    """One open transaction, as a backend hands it to the SQL layer (queuectl_core.storage.sql, which
    also exports it)."""

    # True when statements sent with :meth:`later` travel together (PostgreSQL's pipeline mode):
    # their rows come back with the next read, one round trip for all of them.
    pipelined: bool

    def rows(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]: ...

    def later(self, sql: str, params: dict[str, Any]) -> Callable[[], list[Sequence[Any]]]:
        """Send a statement whose rows are read later, by calling what this returns. A backend that
        does not pipeline runs it at once (and ``pipelined`` is False)."""

    def wake(self) -> None:
        """Wake idle workers once this transaction commits."""

    def many(self, sql: str, params: Sequence[dict[str, Any]]) -> None:
        """Run one statement for each parameter set (executemany)."""


class Jobs(Protocol):
    """Jobs: inserted, read and deleted.

    Times a backend writes (created_at, run_at, leases) come from its own clock (:meth:`now`)."""

    def now(self) -> datetime:
        """This storage's clock (aware): every time it writes, and every "due" it judges, is by it."""

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert all the jobs, pending, or none; raise DuplicateJobError naming an id that exists
        (or repeats within the batch). Also: record NewJob.queue (creating the queue); refuse a
        unique_key held by a job in lifecycle.HOLDING_STATES (UniqueKeyError naming the holder; of
        concurrent enqueuers exactly one wins); record ``after``: an unknown id is a
        ValidationError (nothing inserted), and the job waits (``Job.waiting``: how many of those
        it names have not completed) until each has completed. A parent that already ended is
        handled at once as :func:`queuectl_core.jobs.lifecycle.dependants` says (dead or cancelled:
        the job is cancelled with the reason naming it)."""

    def get(self, job_id: str) -> Job | None: ...

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  states: Sequence[JobState] | None = None, tag: str | None = None,
                  queue: str | None = None, before: str | None = None) -> list[Job]:
        """Jobs newest first (created_at, then id, descending); optionally only one state (or any of
        ``states``), one tag, one queue; ``before`` (a job id) starts after that job, for paging
        (an unknown id: nothing)."""

    def counts(self) -> dict[JobState, int]:
        """How many jobs in each state, every state present."""

    def delete(self, job_ids: Sequence[str], states: Sequence[JobState]) -> list[Job] | None:
        """Delete every listed job if each exists and is in ``states``, else nothing (None). Which
        states may be removed is the lifecycle's rule (``check_removable``), checked by core."""


class Claims(Protocol):
    """Taking jobs under a lease, and persisting the lifecycle's decided changes."""

    def claim(self, worker_id: str, lease_seconds: float, queues: Sequence[str] | None = None) -> Job | None:
        """Atomically take the next runnable job (in lifecycle.RUNNABLE_STATES with run_at reached,
        waiting on no unfinished job, in an unpaused queue below its concurrency limit, of
        ``queues`` when given; highest priority, then earliest run_at, then id): processing,
        attempts + 1, a fresh lease_token, worker_id, lease_expires_at = now + lease,
        cancel_requested cleared, updated_at = now. None when nothing is runnable. A queue's
        concurrency is never exceeded, however many claim at once."""

    def apply(self, job_id: str, token: str | None, change: Change) -> Job | None:
        """Persist one decided change atomically, only while the job is in one of
        ``change.from_states``, still holds ``token`` (when given), and (``expired_only``) its lease
        has expired by this storage's clock. Returns the updated job, or None when fenced out.
        A repeat of a worker's final write (``change.idempotent``) after a lost reply returns the
        row it already wrote. In the same transaction, applies
        ``lifecycle.dependants_of(job_id, change)`` to every job still waiting on this one, and so
        on down the chain."""

    def apply_many(self, changes: Sequence[tuple[str, str | None, Change]]) -> list[Job] | None:
        """Apply several ``(job_id, token, change)`` as :meth:`apply` does, in one transaction: all,
        or none (None) when any one is fenced out."""

    def expired(self, limit: int = 100) -> list[Job]:
        """Processing jobs whose lease has expired by this storage's clock."""

    def next_run_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        """The earliest run_at among jobs a claim of ``queues`` could take once due (not waiting,
        in an open queue), or None."""

    def burst_remaining(self, queues: Sequence[str] | None = None) -> tuple[int, int]:
        """(jobs a --burst worker of ``queues`` still waits for, how many of them are running):
        its queues' running jobs, their runnable jobs waiting on nothing (unpaused queues only),
        and running jobs in any queue that a pending job of its unpaused queues waits on."""

    def waits_on(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        """For each job that still waits on others, the ids of those not yet completed, sorted."""


class Queues(Protocol):
    """Queues: a concurrency limit and a pause each."""

    def queues(self) -> list[QueueInfo]:
        """Queues with jobs or settings, by name, with counts per state (every state present)."""

    def set_queue(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None: ...

    def set_all_paused(self, paused: bool) -> list[str]:
        """Pause or resume every existing queue; the names that changed."""


class Schedules(Protocol):
    """Schedules, shared by every host."""

    def add_schedule(self, schedule: Schedule) -> None:
        """Store a schedule; ValidationError if the name exists."""

    def schedules(self) -> list[Schedule]: ...

    def remove_schedule(self, name: str) -> bool: ...

    def set_schedule_paused(self, name: str, paused: bool) -> bool:
        """Pause or resume; resuming sets last_tick to now (missed ticks are skipped)."""

    def enqueue_tick(self, name: str, tick: datetime, job: NewJob) -> Job | None:
        """Enqueue a schedule's tick exactly once across all workers and hosts: only when the
        schedule (unpaused) has no later or equal tick recorded and the job id is new."""


class Workers(Protocol):
    """The worker directory, and waiting for work."""

    def register_worker(self, info: WorkerInfo) -> None: ...

    def worker_seen(self, worker_id: str, current_job: str | None) -> int:
        """Record that a worker is alive: 0 carry on, 1 (truthy) asked to stop after its current
        job, 2 asked to stop now (``worker stop --now``)."""

    def unregister_worker(self, worker_id: str) -> None: ...

    def live_workers(self) -> list[WorkerInfo]:
        """Workers seen in the last 15 seconds, by id, each with the jobs it holds (from the claim,
        so from the moment it is claimed; newest claim first, with since when); a worker holding
        none shows the ``current_job`` it last gave :meth:`worker_seen`."""

    def request_stop(self, now: bool = False) -> int:
        """Ask every live worker to stop after its current job (``now``: at once, releasing it);
        returns how many were asked."""

    def wait_for_work(self, timeout: float, wakeup_fd: int | None = None) -> None:
        """Block until work may be available (a wake-up from enqueue, a runnable change or a stop
        request), ``wakeup_fd`` is readable, or ``timeout`` seconds pass. Polling alone must stay
        correct. Never raises."""

    def close(self) -> None: ...


@runtime_checkable
class Storage(Jobs, Claims, Queues, Schedules, Workers, Protocol):
    """Where jobs and workers live: persistence only, the methods every backend must have. What a
    change means, and what it does to the jobs waiting on the job it changes, is decided in
    :mod:`queuectl_core.jobs.lifecycle`; a storage applies it atomically, fenced by the lease token.

    Faster forms of some work (claiming or applying many at once, streaming inserts, counting
    without reading) are optional capabilities (:mod:`queuectl_core.storage.capabilities`), each with
    core's fallback on these methods. SQL backends get every method but the connection, locking
    and wake-ups from :class:`queuectl_core.storage.sql.SQLStore`; docs/plugins/api.md states every
    rule, and :mod:`queuectl_core.testing.memory` is the smallest complete example. Every method
    may raise StorageError (unreachable, locked too long); a worker waits that out.
    """


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
    # The executor reports (log path, the last few KiB of output so far) before each tick, so a
    # heartbeat can store them for `logs` on other hosts.
    on_output: Callable[[str, str], None] = lambda log_path, tail: None
    # The executor hands every piece of output it reads (stdout and stderr, interleaved as written)
    # here, as it comes; the worker keeps it in the storage (`logs` from any host). It must return
    # at once: it only files the bytes away, bounded in memory.
    on_chunk: Callable[[bytes], None] = lambda data: None
    # True when the storage keeps what on_chunk receives (it has AttemptOutput), so `logs` reads
    # it from any host: an executor then need not keep a copy of its own, nor report on_output.
    output_kept: bool = False


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
