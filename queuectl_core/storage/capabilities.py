"""A storage's optional capabilities, detected once, each with core's fallback.

A storage must provide :class:`~queuectl_core.interfaces.Storage`. It may also provide any of the
capabilities below, each a small protocol of its own; core detects them with ``isinstance`` (never by
probing attribute names at the call site) and otherwise falls back on the required methods. A
backend gains speed from a capability, never behaviour: the fallbacks keep every rule.

:func:`with_fallbacks` wraps a storage so that every caller (the worker above all) has one code path
whatever the backend offers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Protocol, Sequence, cast, runtime_checkable

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.jobs.lifecycle import Change
    from queuectl_core.jobs.limits import Limits
    from queuectl_core.jobs.models import Job, JobState, NewJob
    from queuectl_core.jobs.needs import ResourceUsage
    from queuectl_core.jobs.notifications import OutboxEntry, OutboxItem
    from queuectl_core.jobs.output import OutputWrite
    from queuectl_core.jobs.records import Attempt

    Changes = Sequence[tuple[str, str | None, Change]]


@runtime_checkable
class ClaimMany(Protocol):
    def claim_many(self, worker_id: str, lease_seconds: float, limit: int,
                   queues: Sequence[str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs, each taken as ``claim`` takes one (its own token and lease;
        priorities, run_at, dependencies, pauses and queue limits as for that many claims), in one
        transaction. Empty when nothing is runnable. Fallback: ``claim`` until it returns None."""


@runtime_checkable
class ApplyBatch(Protocol):
    def apply_batch(self, changes: Changes, output: Sequence[OutputWrite] = ()) -> list[Job | None]:
        """Apply several ``(job_id, token, change)`` in one transaction, each fenced on its own as
        ``apply`` is: the updated job, or None for one fenced out (the others still apply).
        ``output`` is only ever given to a storage with ``AttemptOutput``: the finished attempts'
        last output, stored in the same transaction before the changes, as ``write_output`` stores
        it. Fallback: ``write_output``, then ``apply`` for each."""


@runtime_checkable
class ApplyAndClaim(Protocol):
    def apply_and_claim(self, changes: Changes, worker_id: str, lease_seconds: float, limit: int,
                        queues: Sequence[str] | None = None,
                        output: Sequence[OutputWrite] = ()) -> tuple[list[Job | None], list[Job]]:
        """``apply_batch`` (with ``output``) then ``claim_many``, in one transaction (one commit a
        finished job, not two). Fallback: the two, one after the other."""


@runtime_checkable
class CancelRequests(Protocol):
    def cancel_requests(self, job_ids: Sequence[str]) -> list[tuple[str, str | None]]:
        """(id, lease_token) of those of ``job_ids`` processing with a cancel requested; one read.
        Fallback: ``get`` for each."""


@runtime_checkable
class StreamingInsert(Protocol):
    def enqueue_stream(self, batches: Iterable[Sequence[NewJob]]) -> Iterator[list[Job]]:
        """Insert every job of every batch in one transaction, all or none (an exception from
        ``batches`` rolls everything back); then yield the stored jobs batch by batch without
        holding them all in memory. Fallback: every batch read into memory, then one ``enqueue``."""


# -- reads a backend answers from counters or one statement; the fallbacks read every job -----------
@runtime_checkable
class CountJobs(Protocol):
    def count_jobs(self, state: JobState | None = None, *, states: Sequence[JobState] | None = None,
                   tag: str | None = None, queue: str | None = None) -> int:
        """How many jobs ``list_jobs`` would list with these filters and no limit (``list``'s "N
        more"). Fallback: ``list_jobs`` page by page, counted."""


@runtime_checkable
class PendingSummary(Protocol):
    def pending_summary(self) -> tuple[int, int, datetime | None]:
        """(pending jobs due now, pending jobs scheduled later, the earliest run_at among due
        runnable jobs): ``status``'s ready/scheduled split and the oldest ready job. Jobs still
        waiting on ``after`` are in none of the three. Fallback: the pending and failed jobs read
        page by page."""


@runtime_checkable
class AttemptsByState(Protocol):
    def attempts_by_state(self) -> dict[JobState, int]:
        """The sum of ``attempts`` over the jobs of each state, every state present (what a
        metrics exporter reports). Fallback: every job read page by page."""


@runtime_checkable
class Purge(Protocol):
    def purge(self, states: Sequence[JobState], older_than: float,
              limit: int | None = None) -> list[tuple[str, str | None]]:
        """Delete jobs in ``states`` whose updated_at is more than ``older_than`` seconds ago by
        this storage's clock, oldest first, at most ``limit``, in one transaction; returns
        ``(id, log_path)`` of each deleted job (for its log files), not whole rows. Which states
        may be purged is the lifecycle's rule (``check_purgeable``), checked by core. Fallback:
        ``list_jobs`` of those states, then ``delete`` of the old enough ones."""


@runtime_checkable
class IdsWithPrefix(Protocol):
    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` ids of existing jobs that start with ``prefix``, sorted; an id equal to
        ``prefix`` is always among them (how the CLI takes a unique prefix of an id). Fallback:
        every job read page by page."""


# -- history: every attempt of a job ---------------------------------------------------------------
@runtime_checkable
class AttemptHistory(Protocol):
    def attempts(self, job_id: str) -> list[Attempt]:
        """Every finished attempt of the job, oldest first, across ``restart`` and ``dlq retry``.
        A storage with it records an attempt in the transaction of each change that ends one
        (``change.ends_attempt``), numbers attempts by ``Job.last_attempt`` (a claim adds one;
        nothing takes it back) and deletes them with the job. Fallback: the job's row, which
        knows only its last finished attempt (the one capability whose fallback knows less)."""


@runtime_checkable
class AttemptsPerMinute(Protocol):
    def attempts_per_minute(self, since: datetime) -> dict[datetime, tuple[int, int]]:
        """Finished attempts whose ``finished_at`` is at or after ``since``, counted per minute:
        {the minute's start (UTC, seconds zero): (succeeded, did not)}, minutes without one left
        out. An attempt succeeded when it exited 0 without an error; every other (failed, killed,
        timed out, cancelled) did not. Fallback: every job read page by page, each counted by its
        last finished attempt only (at its ``updated_at``), as ``attempts``' fallback knows it."""


@runtime_checkable
class FinishedAttempts(Protocol):
    def finished_attempts(self, since: datetime) -> list[tuple[str, Attempt]]:
        """Every attempt whose ``finished_at`` is at or after ``since``, oldest first, each with
        its job's queue: ``[(queue, attempt)]``. What ``/metrics`` reads its histograms from
        (duration, peak memory), a scrape at a time. Fallback: every job read page by page, each
        with its last finished attempt only (at its ``updated_at``), as ``attempts``' fallback
        knows it."""


# -- output: every attempt's output, kept by the storage ------------------------------------------
@runtime_checkable
class AttemptOutput(Protocol):
    def write_output(self, writes: Sequence[OutputWrite]) -> None:
        """Persist these changes to attempts' stored output, in one transaction: for each write,
        delete its attempt's chunks numbered in ``write.drop`` (``[first, end)``), then store each
        of ``write.chunks`` (``(seq, bytes)``), replacing a chunk of the same number. A write for a
        job that no longer exists is dropped, never an error. What to store is decided in core
        (:class:`queuectl_core.jobs.output.OutputCap`, the head and tail within ``logs.max_bytes``);
        deleting a job (``delete``, ``purge``) deletes its output in the same transaction. No
        fallback: without it, output stays where the executor put it (``logs`` reads the files
        and the stored tail, as before)."""

    def read_output(self, job_id: str, attempt: int, after: int = 0) -> list[tuple[int, bytes]]:
        """The stored chunks of attempt ``attempt`` of ``job_id`` numbered above ``after``, by
        number ([] when there are none)."""

    def output_sizes(self, job_id: str) -> dict[int, int]:
        """Bytes stored per attempt of ``job_id``: ``{attempt: bytes}``, attempts with none left
        out."""


# -- limits: a queue's default memory and CPU time limits for its jobs ------------------------------
@runtime_checkable
class QueueLimits(Protocol):
    def queue_limits(self) -> dict[str, Limits]:
        """Every queue with a default limit set: {name: its defaults}, None where it sets none.
        Read by workers as attempts start (queuectl_core.jobs.limits says how defaults apply).
        Fallback: no queue has defaults."""

    def set_queue_limits(self, name: str, *, memory: int | None = None, cpu_time: float | None = None) -> None:
        """Set the queue's defaults (creating its row): each given value replaces the stored one,
        0 clearing it (stored as NULL); one not given (None) is left as it is. Fallback: refused
        with a ValidationError saying the storage keeps no queue defaults."""


# -- notifications: an outbox delivered at least once (queuectl_core.worker.notify) -----------------
@runtime_checkable
class Outbox(Protocol):
    def outbox_add(self, entries: Sequence[OutboxEntry]) -> list[str]:
        """Keep each entry, due now, unless one with its (notifier, id) is kept already (delivered
        or not): returns the ids of those added, in one transaction. Fallback: an outbox in this
        process's memory (not durable, not shared: each worker delivers what it wrote)."""

    def outbox_claim(self, owner: str, notifiers: Sequence[str], lease_seconds: float,
                     limit: int) -> list[OutboxItem]:
        """Up to ``limit`` unsettled entries of ``notifiers`` that are due, oldest first, each
        leased to ``owner`` for ``lease_seconds`` under a new token (due again when it expires)
        with its try counted; concurrent claimers never get one row at once."""

    def outbox_settle(self, item: OutboxItem, outcome: str, retry_in: float | None,
                      error: str | None = None) -> bool:
        """Record a try of a claimed entry, fenced by its token: settled for good when
        ``retry_in`` is None, else due again in ``retry_in`` seconds; ``outcome`` is added to
        :meth:`notification_counts`. False (nothing changed) when the claim was lost."""

    def notification_counts(self) -> dict[tuple[str, str], int]:
        """Every try's outcome counted per (notifier, outcome) since the queue began, whichever
        process made it (what /metrics reports)."""

    def outbox_prune(self, older_than: float) -> int:
        """Delete entries settled more than ``older_than`` seconds ago; how many were deleted.
        (They are kept that long so a repeated write of one is still recognised.)"""
# -- needs: what jobs need, what workers have, pools ------------------------------------------------
@runtime_checkable
class ResourceNeeds(Protocol):
    """Jobs with ``needs``. A storage with it stores ``NewJob.needs`` and its claim takes a job only
    when each unit it needs is free: in the pool of that name when there is one (every worker's
    processing jobs count), else among what the claiming worker declared (its own processing jobs
    count); a pool is never over capacity, however many claim at once. Fallback: none of it; core
    refuses jobs with needs, and there are no pools."""

    def declare_resources(self, worker_id: str, resources: Mapping[str, str]) -> None:
        """Record the worker's resources ``{name: spec}`` (``queuectl_core.jobs.needs``), replacing
        what it declared before. Fallback: nothing."""

    def set_pool(self, name: str, capacity: int) -> None:
        """Create or resize a pool. Fallback: refused (ValidationError)."""

    def remove_pool(self, name: str) -> bool:
        """Remove a pool; False when there was none. Fallback: False."""

    def resource_usage(self) -> ResourceUsage:
        """Every pool with its units in use, and every live worker that declared resources with
        its units in use. Fallback: nothing."""

    def never_servable(self, worker_id: str, queues: Sequence[str] | None = None) -> int:
        """Of the jobs :meth:`Storage.burst_remaining` counts as runnable (pending or failed,
        waiting on nothing, in an unpaused queue of ``queues``), how many need more units of
        something than ``worker_id`` could ever be given: more than the pool's capacity, or (no
        pool of that name) more than that worker declared. A full pool is not "never". Fallback: 0."""


CAPABILITIES: tuple[type, ...] = (ClaimMany, ApplyBatch, ApplyAndClaim, CancelRequests, StreamingInsert,
                                  CountJobs, PendingSummary, AttemptsByState, Purge)
CAPABILITIES += (IdsWithPrefix, AttemptHistory, AttemptsPerMinute, FinishedAttempts)
CAPABILITIES += (AttemptOutput, QueueLimits)
CAPABILITIES += (Outbox,)
CAPABILITIES += (ResourceNeeds,)
PAGE = 1000  # jobs a fallback reads at once

if TYPE_CHECKING:
    class FullStorage(Storage, ClaimMany, ApplyBatch, ApplyAndClaim, CancelRequests, StreamingInsert, CountJobs,
                      PendingSummary, AttemptsByState, Purge, IdsWithPrefix, AttemptHistory, AttemptsPerMinute,
                      FinishedAttempts, QueueLimits, Outbox, ResourceNeeds, Protocol):
        """What :func:`with_fallbacks` gives, for type checkers: the required methods and every
        capability."""


def capabilities(storage: object) -> list[str]:
    """The names of the optional capabilities ``storage`` provides."""
    return [cap.__name__ for cap in CAPABILITIES if isinstance(storage, cap)]


class WithFallbacks:
    """A storage with every optional capability: its own where it has one, core's fallback where not.
    Every other attribute is the storage's own."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # Detected once: an isinstance check against a runtime protocol costs microseconds a call.
        self.native = frozenset(capabilities(storage))
        for cap in CAPABILITIES:
            if cap.__name__ in self.native:
                for name in (n for n in vars(cap) if not n.startswith("_")):  # (Outbox has several)
                    setattr(self, name, getattr(storage, name))  # the storage's own, called directly

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def claim_many(self, worker_id: str, lease_seconds: float, limit: int,
                   queues: Sequence[str] | None = None) -> list[Job]:
        jobs: list[Job] = []
        while len(jobs) < limit:
            job = self.storage.claim(worker_id, lease_seconds, queues=queues)
            if job is None:
                break
            jobs.append(job)
        return jobs

    def apply_batch(self, changes: Changes, output: Sequence[OutputWrite] = ()) -> list[Job | None]:
        if output:  # only ever given with AttemptOutput
            cast(AttemptOutput, self.storage).write_output(output)
        return [self.storage.apply(job_id, token, change) for job_id, token, change in changes]

    def apply_and_claim(self, changes: Changes, worker_id: str, lease_seconds: float, limit: int,
                        queues: Sequence[str] | None = None,
                        output: Sequence[OutputWrite] = ()) -> tuple[list[Job | None], list[Job]]:
        applied = self.apply_batch(changes, output) if changes or output else []
        return applied, (self.claim_many(worker_id, lease_seconds, limit, queues=queues) if limit > 0 else [])

    # -- needs: a storage without ResourceNeeds has no pools, and core refuses jobs with needs ---------
    def declare_resources(self, worker_id: str, resources: Mapping[str, str]) -> None:
        pass

    def set_pool(self, name: str, capacity: int) -> None:
        from queuectl_core.errors import ValidationError

        raise ValidationError(f"storage {type(self.storage).__name__} has no resource pools")

    def remove_pool(self, name: str) -> bool:
        return False

    def resource_usage(self) -> ResourceUsage:
        from queuectl_core.jobs.needs import ResourceUsage

        return ResourceUsage()

    def never_servable(self, worker_id: str, queues: Sequence[str] | None = None) -> int:
        return 0

    def cancel_requests(self, job_ids: Sequence[str]) -> list[tuple[str, str | None]]:
        found = []
        for job_id in job_ids:
            job = self.storage.get(job_id)
            if job is not None and job.cancel_requested and str(job.state) == "processing":
                found.append((job.id, job.lease_token))
        return found

    def enqueue_stream(self, batches: Iterable[Sequence[NewJob]]) -> Iterator[list[Job]]:
        jobs = [job for batch in batches for job in batch]
        return iter([self.storage.enqueue(jobs)] if jobs else [])


    # -- the reads --------------------------------------------------------------------------
    def _every(self, **filters: Any) -> Iterator[Job]:
        """Every job ``list_jobs`` lists with ``filters``, a page at a time (newest first)."""
        before: str | None = None
        while True:
            page = self.storage.list_jobs(limit=PAGE, before=before, **filters)
            yield from page
            if len(page) < PAGE:
                return
            before = page[-1].id

    def count_jobs(self, state: JobState | None = None, *, states: Sequence[JobState] | None = None,
                   tag: str | None = None, queue: str | None = None) -> int:
        return sum(1 for _ in self._every(state=state, states=states, tag=tag, queue=queue))

    def pending_summary(self) -> tuple[int, int, datetime | None]:
        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        now = self.storage.now()
        ready = scheduled = 0
        oldest: datetime | None = None
        for job in self._every(states=lifecycle.RUNNABLE_STATES):
            if job.waiting:
                continue  # held by `after`: neither ready nor scheduled
            due = job.run_at <= now
            if job.state == JobState.PENDING:
                ready, scheduled = ready + due, scheduled + (not due)
            if due and (oldest is None or job.run_at < oldest):
                oldest = job.run_at
        return ready, scheduled, oldest

    def attempts_by_state(self) -> dict[JobState, int]:
        from queuectl_core.jobs.models import JobState

        totals = {s: 0 for s in JobState}
        for job in self._every():
            totals[job.state] += job.attempts
        return totals

    def purge(self, states: Sequence[JobState], older_than: float,
              limit: int | None = None) -> list[tuple[str, str | None]]:
        if not states:
            return []
        # A job that changes between the read and the delete refuses the delete (all or nothing):
        # read again; each round, whatever moved on is no longer old enough or in ``states``.
        for _ in range(5):
            cutoff = self.storage.now() - timedelta(seconds=older_than)
            old = sorted((j for j in self._every(states=list(states)) if j.updated_at < cutoff),
                         key=lambda j: (j.updated_at, j.id))[:limit]
            if not old:
                return []
            deleted = self.storage.delete([j.id for j in old], list(states))
            if deleted is not None:
                return [(j.id, j.log_path) for j in deleted]
        from queuectl_core.errors import StorageError

        raise StorageError("purge: jobs kept changing while being deleted; try again")

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        exact = self.storage.get(prefix) is not None
        found = sorted(j.id for j in self._every() if j.id.startswith(prefix) and j.id != prefix)
        return ([prefix] if exact else []) + found[:max(limit - exact, 0)]


    # -- history ----------------------------------------------------------------------------
    def attempts(self, job_id: str) -> list[Attempt]:
        from queuectl_core.jobs.models import JobState

        job = self.storage.get(job_id)
        if job is None or job.state == JobState.PROCESSING or not job.attempts:
            return []  # running: its last finished attempt's number is not known
        return [_last_attempt(job)]

    def attempts_per_minute(self, since: datetime) -> dict[datetime, tuple[int, int]]:
        from queuectl_core.jobs.models import JobState

        counts: dict[datetime, tuple[int, int]] = {}
        for job in self._every():
            # A finished last attempt ended at updated_at (pending: restarted or replayed since,
            # its last attempt is no longer described by the row).
            if job.state in (JobState.PROCESSING, JobState.PENDING) or not job.attempts or job.updated_at < since:
                continue
            if job.state == JobState.CANCELLED and job.last_exit_code is None and job.last_duration is None:
                continue  # cancelled before it ran again: no attempt ended then
            minute = minute_of(job.updated_at)
            ok, bad = counts.get(minute, (0, 0))
            good = job.state == JobState.COMPLETED
            counts[minute] = (ok + good, bad + (not good))
        return counts


    def finished_attempts(self, since: datetime) -> list[tuple[str, Attempt]]:
        from queuectl_core.jobs.models import JobState

        found = []
        for job in self._every():
            # As attempts_per_minute's fallback: the row describes a finished last attempt only.
            if job.state in (JobState.PROCESSING, JobState.PENDING) or not job.attempts or job.updated_at < since:
                continue
            if job.state == JobState.CANCELLED and job.last_exit_code is None and job.last_duration is None:
                continue
            found.append((job.queue, _last_attempt(job)))
        return sorted(found, key=lambda f: (f[1].finished_at or since, f[1].job_id))

    # -- limits --
    def queue_limits(self) -> dict[str, Limits]:
        return {}

    def set_queue_limits(self, name: str, *, memory: int | None = None, cpu_time: float | None = None) -> None:
        if "QueueLimits" in self.native:
            self.storage.set_queue_limits(name, memory=memory, cpu_time=cpu_time)  # type: ignore[attr-defined]
            return
        from queuectl_core.errors import ValidationError

        raise ValidationError(f"this storage ({type(self.storage).__name__}) keeps no default limits for queues;"
                              " give each job its own (enqueue --memory, --cpu-time) or set job.memory, job.cpu_time")

    # -- notifications ----------------------------------------------------------------------
    @property
    def _outbox(self) -> MemoryOutbox:
        box = self.__dict__.get("_memory_outbox")
        if box is None:
            box = self.__dict__["_memory_outbox"] = MemoryOutbox()
        return box

    def outbox_add(self, entries: Sequence[OutboxEntry]) -> list[str]:
        return self._outbox.add(entries, self.storage.now())

    def outbox_claim(self, owner: str, notifiers: Sequence[str], lease_seconds: float,
                     limit: int) -> list[OutboxItem]:
        return self._outbox.claim(notifiers, lease_seconds, limit, self.storage.now())

    def outbox_settle(self, item: OutboxItem, outcome: str, retry_in: float | None,
                      error: str | None = None) -> bool:
        return self._outbox.settle(item, outcome, retry_in, self.storage.now())

    def notification_counts(self) -> dict[tuple[str, str], int]:
        return self._outbox.counts()

    def outbox_prune(self, older_than: float) -> int:
        return self._outbox.prune(older_than, self.storage.now())


class MemoryOutbox:
    """An outbox in memory, behind one lock: the in-memory storage's, and core's fallback (one per
    process there). Rows: (notifier, id) -> [entry, created_at, due_at, tries, token, settled_at]."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str], list[Any]] = {}
        self.tallies: dict[tuple[str, str], int] = {}

    def add(self, entries: Sequence[OutboxEntry], now: datetime) -> list[str]:
        added = []
        with self.lock:
            for e in entries:
                if (e.notifier, e.id) not in self.rows:
                    self.rows[(e.notifier, e.id)] = [e, now, now, 0, None, None]
                    added.append(e.id)
        return added

    def claim(self, notifiers: Sequence[str], lease_seconds: float, limit: int, now: datetime) -> list[OutboxItem]:
        import uuid

        from queuectl_core.jobs.notifications import OutboxItem

        with self.lock:
            due = sorted((r for (n, _), r in self.rows.items() if n in notifiers and r[5] is None and r[2] <= now),
                         key=lambda r: (r[1], r[0].id))[:max(limit, 0)]
            items = []
            for r in due:
                r[2], r[3], r[4] = now + timedelta(seconds=lease_seconds), r[3] + 1, uuid.uuid4().hex
                items.append(OutboxItem(r[0], r[1], r[3], r[4]))
            return items

    def settle(self, item: OutboxItem, outcome: str, retry_in: float | None, now: datetime) -> bool:
        with self.lock:
            r = self.rows.get((item.entry.notifier, item.entry.id))
            if r is None or r[4] != item.token or r[5] is not None:
                return False
            r[4] = None
            if retry_in is None:
                r[5] = now
            else:
                r[2] = now + timedelta(seconds=retry_in)
            key = (item.entry.notifier, outcome)
            self.tallies[key] = self.tallies.get(key, 0) + 1
            return True

    def counts(self) -> dict[tuple[str, str], int]:
        with self.lock:
            return dict(self.tallies)

    def prune(self, older_than: float, now: datetime) -> int:
        cutoff = now - timedelta(seconds=older_than)
        with self.lock:
            old = [k for k, r in self.rows.items() if r[5] is not None and r[5] < cutoff]
            for k in old:
                del self.rows[k]
            return len(old)


def _last_attempt(job: Job) -> Attempt:
    """A finished job's last attempt, as its row describes it (when it started is not known)."""
    from queuectl_core.jobs.records import Attempt

    return Attempt(job.id, job.attempt_number, None, job.updated_at, job.last_duration, job.last_exit_code,
                   job.last_error, job.worker_id, job.host, job.log_path, job.last_cpu_seconds,
                   job.last_max_rss_bytes)


def minute_of(when: datetime) -> datetime:
    """The start of ``when``'s minute, in UTC."""

    return when.astimezone(UTC).replace(second=0, microsecond=0)


def attempt_output(storage: object) -> AttemptOutput | None:
    """``storage`` (or the storage :func:`with_fallbacks` wraps) if it keeps attempts' output
    (:class:`AttemptOutput`, which has no fallback), else None."""
    inner = storage.storage if isinstance(storage, WithFallbacks) else storage
    return inner if isinstance(inner, AttemptOutput) else None


def with_fallbacks(storage: Storage) -> WithFallbacks:
    """``storage`` with every optional capability (see :class:`WithFallbacks`)."""
    return storage if isinstance(storage, WithFallbacks) else WithFallbacks(storage)


__all__ = ["AttemptOutput", "attempt_output", "AttemptHistory", "AttemptsByState", "AttemptsPerMinute", "ApplyAndClaim", "ApplyBatch",
           "CAPABILITIES", "CancelRequests", "ClaimMany", "CountJobs", "FinishedAttempts", "IdsWithPrefix", "MemoryOutbox", "Outbox",
           "PendingSummary", "Purge", "QueueLimits", "ResourceNeeds", "StreamingInsert", "WithFallbacks",
           "capabilities", "minute_of", "with_fallbacks"]
