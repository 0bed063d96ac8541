"""The job lifecycle, decided once: every transition a job can make, as data.

Nothing here touches a database or a clock. Each function takes what is known (the job as last read,
an attempt's result, a retry delay) and returns a :class:`Change`: the next state, attempts, when it
runs next (a delay on the storage's own clock), what happens to the lease, the reason text and the
event to announce. A storage applies a Change atomically and fenced (``Storage.apply``); it never
decides one. The table in docs/architecture.md is this module in prose.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from queuectl_core.errors import ValidationError
from queuectl_core.jobs.models import EventKind, JobState

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.records import AttemptResult

# The one place the states are grouped (JobState, in models, is the one list of them); storage
# backends write these groups into their SQL from here, never by hand.
ALL_STATES = tuple(JobState)
# A claim takes the next job in one of these states whose run_at has come.
RUNNABLE_STATES = (JobState.PENDING, JobState.FAILED)
FINISHED_STATES = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)
# A job in one of these states still has work ahead of it; --burst waits for them.
UNFINISHED_STATES = (JobState.PENDING, JobState.PROCESSING, JobState.FAILED)
# A unique_key is held by a job in one of these states: another job with that key is refused.
HOLDING_STATES = UNFINISHED_STATES
# What `remove` deletes unless told otherwise, and all that `purge` may ever delete: a job with work
# ahead of it is cancelled first, so its worker (if any) is not left holding a vanished row.
REMOVABLE_STATES = FINISHED_STATES
DEFAULT_PURGE_STATES = (JobState.COMPLETED, JobState.CANCELLED)  # `purge` without --state keeps the DLQ
LEASE_EXPIRED_REASON = "worker lost: lease expired while the job was running"
NOT_STARTED_REASON = "released before it started: its worker was stopping"
# A running attempt its worker stopped at once (a second Ctrl+C, `worker stop --now`): the signal
# alone would not say that queuectl sent it.
STOPPED_REASON = "stopped: its worker was stopping at once"
CANCELLED_REASON = "cancelled"
# The longest retry delay stored: a policy's absurd (or infinite) delay still fits every database.
MAX_DELAY_SECONDS = 10 * 365 * 86400.0


class Transition(StrEnum):
    HEARTBEAT = "heartbeat"
    COMPLETE = "complete"
    RETRY = "retry"  # a failed attempt with a retry scheduled
    BURY = "bury"  # a failed attempt that was the last allowed: to the DLQ
    RELEASE = "release"
    RECOVER = "recover"  # a lease expired: its worker is gone
    CANCEL = "cancel"
    REQUEST_CANCEL = "request_cancel"
    REPLAY = "replay"  # DLQ retry
    RESTART = "restart"
    # What a parent's transition does to a job still waiting on it (`after`): see dependants().
    PARENT_COMPLETED = "parent_completed"
    PARENT_FAILED = "parent_failed"


@dataclass(frozen=True, slots=True)
class Change:
    """One decided transition. Fields left None leave the stored value as it is.

    A storage applies it only while the job is in one of ``from_states`` (and, when a lease token is
    given to ``apply``, only while that token holds the lease; with ``expired_only``, only while the
    lease has expired by the storage's clock). Otherwise it changes nothing and returns None.
    """

    transition: Transition
    from_states: tuple[JobState, ...]
    event: EventKind | None
    state: JobState | None = None
    attempts: int | None = None  # the new count, absolute
    run_in: float | None = None  # run_at = storage clock + run_in seconds
    lease_seconds: float | None = None  # lease_expires_at = storage clock + lease_seconds
    clear_lease: bool = False  # lease_expires_at = NULL
    clear_token: bool = False  # lease_token = NULL (and worker_id = NULL)
    # last_exit_code, last_error, log_path, output_tail, and what it used (last_duration,
    # last_cpu_seconds, last_max_rss_bytes): what the executor measured, recorded as it is.
    result: AttemptResult | None = None
    reason: str | None = None  # last_error (last_exit_code and what it used NULL) when there is no result
    # What describes the last run (last_exit_code, last_error, what it used, log_path,
    # output_tail) cleared, until the job runs again: restart and replay. Its history stays.
    clear_result: bool = False
    cancel_requested: bool | None = None
    command: str | None = None  # restart/replay with a new command
    expired_only: bool = False
    # -- what the jobs waiting on this one (`after`) make of it: see dependants() --
    release_children: bool = False  # completed: one parent fewer to wait for
    cascade_reason: str | None = None  # dead/cancelled: waiting descendants are cancelled with this
    # A heartbeat's output so far (log_path and output_tail) when there is no result yet.
    progress: tuple[str, str] | None = None
    # Applied to a job waiting on a parent: one parent fewer to wait for (waiting - 1), and that
    # parent's edge marked met, so a parent completed twice never releases a child twice.
    parent_met: bool = False

    @property
    def ends_attempt(self) -> bool:
        """Whether this change ends the running attempt (a processing job leaves processing): a
        storage keeping history records the attempt in the same transaction."""
        return (self.state is not None and self.state != JobState.PROCESSING
                and JobState.PROCESSING in self.from_states)

    @property
    def idempotent(self) -> bool:
        """A worker's own final write keeps its token on the row, so repeating it after a lost
        reply finds the row already changed and returns it instead of reporting a lost lease."""
        return self.state is not None and not self.clear_token and self.lease_seconds is None


def heartbeat(lease_seconds: float, progress: tuple[str, str] | None = None) -> Change:
    """Renew the lease; ``progress`` (log path, output so far) lets `logs` on another host show the
    running attempt as of this heartbeat."""
    return Change(Transition.HEARTBEAT, (JobState.PROCESSING,), None, lease_seconds=lease_seconds,
                  progress=progress)


def complete(result: AttemptResult) -> Change:
    return Change(Transition.COMPLETE, (JobState.PROCESSING,), EventKind.COMPLETED,
                  state=JobState.COMPLETED, clear_lease=True, result=result, cancel_requested=False,
                  release_children=True)


# A job waiting on one that ended dead or cancelled is cancelled with this reason, and so on down
# the chain (each names the job it waited on): the ``cascade_reason`` template, formatted by
# dependants() with the parent's id and state.
DEPENDENCY_REASON = "cancelled: it waits on {parent}, which ended {state}"


def dependency_reason(parent: str, state: str) -> str:
    return DEPENDENCY_REASON.format(parent=parent, state=state)


def unknown_parent(job_id: str, parent: str, batch_size: int) -> ValidationError:
    """The refusal of a job whose ``after`` names a job that does not exist. The job is named only
    in a batch of several: a lone job's id may be one just generated, which means nothing to the
    person who typed the command."""
    where = f"job {job_id!r}: " if batch_size > 1 else ""
    return ValidationError(f"{where}'after' names {parent!r}, and no such job exists")


def dependency_met(state: JobState | str) -> bool:
    """Whether a parent in ``state`` no longer holds the jobs waiting on it: only a completed one
    does (a child enqueued after its parent completed waits for nothing)."""
    return state == JobState.COMPLETED


def dependants(parent: str, state: JobState | str | None, cascade_reason: str | None = DEPENDENCY_REASON,
               ) -> Change | None:
    """What becomes of each job still waiting (``after``) on ``parent``, now that ``parent`` is in
    ``state``: None (nothing), one parent fewer to wait for (it completed), or cancelled with
    ``cascade_reason`` naming it (it ended dead or cancelled; a ``cascade_reason`` of None spares
    them). A storage applies the Change to every such job in the transaction that changed
    ``parent``, and then the dependants of each job it changed in turn, down the chain; the
    cancellation is applied only to a job still pending and waiting (``from_states``).
    """
    if state is None:
        return None
    if dependency_met(state):
        return Change(Transition.PARENT_COMPLETED, ALL_STATES, None, parent_met=True)
    if state in (JobState.DEAD, JobState.CANCELLED) and cascade_reason is not None:
        # Not announced: nobody ran it, and the parent's own event says why.
        return Change(Transition.PARENT_FAILED, (JobState.PENDING,), None, state=JobState.CANCELLED,
                      reason=cascade_reason.format(parent=parent, state=state), cascade_reason=cascade_reason)
    return None


def dependants_of(parent: str, change: Change) -> Change | None:
    """:func:`dependants` of ``parent`` once ``change`` (just applied to it) holds."""
    if change.release_children:
        return dependants(parent, JobState.COMPLETED)
    return dependants(parent, change.state, change.cascade_reason)


def check_removable(job: Job, states: tuple[JobState, ...] | list[JobState] = REMOVABLE_STATES) -> None:
    """``remove``: raise ValidationError unless ``job`` is in one of ``states`` (saying why)."""
    bad = [s for s in states if s not in REMOVABLE_STATES]
    if bad:
        raise ValidationError(f"only finished jobs can be removed, not {bad[0]}")
    if job.state not in states:
        wanted = ", ".join(str(s) for s in states)
        raise ValidationError(f"job {job.id!r} is {job.state}; only {wanted} jobs can be removed"
                              + (" (cancel it first)" if job.state not in FINISHED_STATES else ""))


def check_purgeable(states: tuple[JobState, ...] | list[JobState]) -> None:
    """``purge`` and retention: raise ValidationError unless every one of ``states`` may be purged."""
    bad = [s for s in states if s not in REMOVABLE_STATES]
    if bad:
        raise ValidationError(f"only finished jobs can be purged, not {bad[0]}")


def exit_code_rule(job: Job, result: AttemptResult) -> str | None:
    """Whether the job's exit-code rules (``retry_on`` / ``no_retry_on``) forbid a retry of this
    failed attempt: the reason when they do, else None. Only a plain exit status is judged; a
    signal, a timeout or a command that could not run (126, 127) follows the normal rules unless
    ``no_retry_on`` names that code."""
    code = result.exit_code
    if code is None or code < 0 or result.aborted or result.exceeded is not None:  # (a limit: not the job's exit)
        return None
    if job.no_retry_on is not None and code in job.no_retry_on:
        return f"not retried: exit code {code} is in no_retry_on"
    if job.retry_on is not None and code not in job.retry_on:
        if code in (126, 127) or (result.error or "").startswith("timed out"):
            return None
        return f"not retried: exit code {code} is not in retry_on"
    return None


def should_retry(job: Job) -> bool:
    """``max_retries = N``: at most N retries after the first attempt (N + 1 runs)."""
    return job.attempts <= job.max_retries


def fail(job: Job, result: AttemptResult, delay: float | None) -> Change:
    """A failed attempt: a retry after ``delay`` seconds, or the DLQ when it was the last allowed
    (or ``delay`` is None: no retry could be scheduled)."""
    rule = exit_code_rule(job, result)
    if rule is not None:
        return bury(result, reason=f"{result.error}; {rule}" if result.error else rule)
    if delay is not None and should_retry(job):
        return retry(result, delay)
    return bury(result)


def retry(result: AttemptResult, delay: float) -> Change:
    """A failed attempt retried after ``delay`` seconds (:func:`fail` decides between the two)."""
    return Change(Transition.RETRY, (JobState.PROCESSING,), EventKind.FAILED, state=JobState.FAILED,
                  run_in=min(max(0.0, delay), MAX_DELAY_SECONDS), clear_lease=True, result=result,
                  cancel_requested=False)


def bury(result: AttemptResult, reason: str | None = None) -> Change:
    """A failed attempt that goes to the DLQ (jobs waiting on it are cancelled)."""
    return Change(Transition.BURY, (JobState.PROCESSING,), EventKind.DEAD, state=JobState.DEAD,
                  clear_lease=True, result=result, reason=reason, cancel_requested=False,
                  cascade_reason=DEPENDENCY_REASON)


def fallback_delay(attempt: int, backoff_base: float) -> float:
    """The spec's delay, used when the configured backoff policy fails: ``backoff_base ** k``."""
    try:
        return float(backoff_base) ** attempt
    except OverflowError:
        return float("inf")


def release(job: Job, result: AttemptResult | None = None) -> Change:
    """An interrupted attempt handed back: pending, runnable now, the attempt not counted toward
    its retries. ``result``: how it ended, when it had started (its history keeps it either way;
    its number is not reused)."""
    return Change(Transition.RELEASE, (JobState.PROCESSING,), EventKind.RELEASED, state=JobState.PENDING,
                  attempts=max(job.attempts - 1, 0), run_in=0.0, clear_lease=True, clear_token=True,
                  cancel_requested=False, result=result, reason=_release_reason(result))


def _release_reason(result: AttemptResult | None) -> str | None:
    """Why an attempt was handed back: the executor's own reason (a timeout hit while stopping)
    when it gave one, else that the worker stopped it, or that it never started."""
    if result is None:
        return NOT_STARTED_REASON
    return None if result.error else STOPPED_REASON


def recover(job: Job) -> Change:
    """A lease that expired (its worker died or vanished): the lost attempt counts as failed, retried
    at once, or dead when it was the last allowed. Applied only while the lease is still expired."""
    state = JobState.FAILED if should_retry(job) else JobState.DEAD
    if job.cancel_requested:
        state = JobState.CANCELLED
    event = {JobState.FAILED: EventKind.FAILED, JobState.DEAD: EventKind.DEAD}.get(state, EventKind.CANCELLED)
    return Change(Transition.RECOVER, (JobState.PROCESSING,), event, state=state, run_in=0.0,
                  clear_lease=True, clear_token=True, reason=LEASE_EXPIRED_REASON, expired_only=True,
                  cancel_requested=False, cascade_reason=None if state == JobState.FAILED else DEPENDENCY_REASON)


def cancel(job: Job) -> Change:
    """``cancel``: a waiting job is cancelled at once; a running one gets a request its worker
    honours (stopping the process group, then :func:`cancelled` under its lease)."""
    if job.state in (JobState.PENDING, JobState.FAILED):
        return Change(Transition.CANCEL, (JobState.PENDING, JobState.FAILED), EventKind.CANCELLED,
                      state=JobState.CANCELLED, clear_lease=True, clear_token=True, reason=CANCELLED_REASON,
                      cascade_reason=DEPENDENCY_REASON)
    if job.state == JobState.PROCESSING:
        return Change(Transition.REQUEST_CANCEL, (JobState.PROCESSING,), EventKind.CANCEL_REQUESTED,
                      cancel_requested=True)
    raise ValidationError(f"job {job.id!r} is already finished (its state is {job.state})")


def cancelled(result: AttemptResult) -> Change:
    """The running worker stopped a job whose cancel was requested: recorded under its lease."""
    return Change(Transition.CANCEL, (JobState.PROCESSING,), EventKind.CANCELLED, state=JobState.CANCELLED,
                  clear_lease=True, result=result, reason=CANCELLED_REASON, cancel_requested=False,
                  cascade_reason=DEPENDENCY_REASON)


def replay(job: Job, command: str | None = None) -> Change:
    """``dlq retry``: a dead job back to pending, attempts 0, runnable now."""
    if job.state != JobState.DEAD:
        raise ValidationError(f"job {job.id!r} is not in the DLQ (its state is {job.state})")
    return Change(Transition.REPLAY, (JobState.DEAD,), EventKind.RETRIED, state=JobState.PENDING, attempts=0,
                  run_in=0.0, clear_lease=True, clear_token=True, command=command, cancel_requested=False,
                  clear_result=True)


def restart(job: Job, command: str | None = None) -> Change:
    """``restart``: a finished job (completed, dead, cancelled) back to pending, attempts 0."""
    if job.state not in FINISHED_STATES:
        raise ValidationError(f"job {job.id!r} is not finished (its state is {job.state})")
    return Change(Transition.RESTART, FINISHED_STATES, EventKind.RESTARTED, state=JobState.PENDING, attempts=0,
                  run_in=0.0, clear_lease=True, clear_token=True, command=command, cancel_requested=False,
                  clear_result=True)


__all__ = [
    "CANCELLED_REASON", "DEPENDENCY_REASON", "FINISHED_STATES", "HOLDING_STATES", "MAX_DELAY_SECONDS",
    "LEASE_EXPIRED_REASON", "NOT_STARTED_REASON", "REMOVABLE_STATES", "STOPPED_REASON", "RUNNABLE_STATES", "UNFINISHED_STATES", "Change", "Transition",
    "bury", "cancel", "cancelled", "check_purgeable", "check_removable", "complete", "dependants", "dependants_of",
    "dependency_met", "dependency_reason", "exit_code_rule", "fail", "fallback_delay", "heartbeat", "recover",
    "release", "replay", "restart", "retry", "should_retry",
]


# -- an attempt's end, as the worker sees it ----------------------------------------------------
if TYPE_CHECKING:
    from typing import Callable


def outcome(job: Job, result: AttemptResult, *, cancel_requested: bool, lease_lost: bool,
            delay: Callable[[], float | None]) -> Change | None:
    """What the end of a worker's attempt does to its job, decided in this one place.

    ``cancel_requested``: the worker stopped the job because a cancel was requested; ``lease_lost``:
    it stopped it because another worker holds the job now; ``delay``: asked only for a failed
    attempt, the retry delay (None: no retry can be scheduled). None means there is nothing to
    write (the lease is lost); else the Change to apply under the attempt's lease token. What to
    announce once it is written is :func:`announcement`.
    """
    if lease_lost:
        return None
    if cancel_requested:
        return cancelled(result)
    if result.aborted:  # stopped by the worker (a second Ctrl+C, `worker stop --now`)
        return release(job, result)
    if result.exceeded is not None:  # over a limit: a failure whatever its exit, in words
        from dataclasses import replace

        from queuectl_core.jobs.limits import reason

        result = replace(result, error=reason(job, result))
    if result.ok:
        return complete(result)
    return fail(job, result, delay())


def announcement(change: Change | None, stored: Job | None) -> EventKind | None:
    """The event a worker announces for an attempt's :func:`outcome` once written: ``stored`` is
    what the write returned (None: fenced out, another worker holds the job now)."""
    if change is None:
        return EventKind.LEASE_LOST
    if change.transition == Transition.RELEASE:
        return EventKind.RELEASED  # handed back, whoever holds it now
    if stored is None:
        return EventKind.LEASE_LOST
    return change.event


__all__ += ["announcement", "outcome"]
