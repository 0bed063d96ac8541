"""Control actions (cancel, restart, DLQ replay, remove, purge), for the CLI, plugin commands and
a web UI alike.

Each reads the jobs, asks :mod:`queuectl_core.jobs.lifecycle` what the action means in each one's state,
and has the storage apply every change in one transaction, compare-and-set on the states read. An
action on many jobs is all-or-nothing: one refusal (unknown id, wrong state) changes nothing, and a
job that moved on in between is reported, never overwritten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Sequence

from queuectl_core.control.joblogs import discard_logs
from queuectl_core.errors import JobNotFoundError, ValidationError
from queuectl_core.jobs import lifecycle
from queuectl_core.storage.capabilities import with_fallbacks

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.jobs.models import Job, JobState


def _read_all(storage: Storage, job_ids: Sequence[str]) -> list[Job]:
    if not job_ids:
        raise ValidationError("give at least one job id")
    jobs = []
    for job_id in dict.fromkeys(job_ids):
        job = storage.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        jobs.append(job)
    return jobs


def _act_many(storage: Storage, job_ids: Sequence[str], decide: Callable[[Job], lifecycle.Change]) -> list[Job]:
    jobs = _read_all(storage, job_ids)
    changes = [(job.id, None, decide(job)) for job in jobs]  # a refusal raises before anything changes
    updated = storage.apply_many(changes)
    if updated is None:
        for job in jobs:
            now = storage.get(job.id)
            if now is None or now.state != job.state:
                state = now.state if now is not None else "removed"
                raise ValidationError(f"job {job.id!r} changed while acting on it (its state is now {state});"
                                      " nothing was changed; try again")
        raise ValidationError("jobs changed while acting on them; nothing was changed; try again")
    _announce(updated, {job_id: change for job_id, _, change in changes})
    from queuectl_core.worker.notify import notify_from_command

    kinds = {job_id: change.event for job_id, _, change in changes}
    notify_from_command(storage, [(job, kinds[job.id]) for job in updated])
    return updated


def _announce(jobs: Iterable[Job], changes: dict[str, lifecycle.Change]) -> None:
    from queuectl_core.framework.plugins import emit
    from queuectl_core.jobs.models import JobEvent

    for job in jobs:
        event = changes[job.id].event
        if event is not None:
            emit(JobEvent(event, job=job))


def _act(storage: Storage, job_id: str, decide: Callable[[Job], lifecycle.Change]) -> Job:
    """One job, without announcing (the single-job form callers had before the many-job one)."""
    job = storage.get(job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    change = decide(job)  # raises ValidationError when the action makes no sense in this state
    updated = storage.apply(job_id, None, change)
    if updated is None:
        now = storage.get(job_id)
        state = now.state if now is not None else "removed"
        raise ValidationError(f"job {job_id!r} changed while acting on it (its state is now {state}); try again")
    return updated


def replay(storage: Storage, job_id: str, command: str | None = None) -> Job:
    """``dlq retry``: a dead job back to pending with attempts 0."""
    return _act(storage, job_id, lambda job: lifecycle.replay(job, command))


def restart(storage: Storage, job_id: str, command: str | None = None) -> Job:
    """``restart``: a finished job back to pending with attempts 0."""
    return _act(storage, job_id, lambda job: lifecycle.restart(job, command))


def cancel(storage: Storage, job_id: str) -> Job:
    """``cancel``: cancelled at once if waiting; if running, a request its worker honours within
    about a second (the returned job then still says processing, with ``cancel_requested``)."""
    return _act(storage, job_id, lifecycle.cancel)


# -- many jobs, all or nothing, announced (what the CLI and a web UI call) ---------------------------
def cancel_many(storage: Storage, job_ids: Sequence[str]) -> list[Job]:
    return _act_many(storage, job_ids, lifecycle.cancel)


def restart_many(storage: Storage, job_ids: Sequence[str], command: str | None = None) -> list[Job]:
    return _act_many(storage, job_ids, lambda job: lifecycle.restart(job, command))


def replay_many(storage: Storage, job_ids: Sequence[str] | None, command: str | None = None) -> list[Job]:
    """``dlq retry``: the listed dead jobs, or (``job_ids`` None) every dead job."""
    if job_ids is None:
        from queuectl_core.jobs.models import JobState

        job_ids = [j.id for j in storage.list_jobs(JobState.DEAD)]
        if not job_ids:
            return []
    return _act_many(storage, job_ids, lambda job: lifecycle.replay(job, command))


class Removed(NamedTuple):
    """A deleted job: its id, and where its last attempt's log was."""

    id: str
    log_path: str | None


def remove(storage: Storage, job_ids: Sequence[str] | None, states: Sequence[JobState] = lifecycle.REMOVABLE_STATES,
           executor: object = None) -> list[Removed]:
    """``remove`` / ``dlq remove``: delete the listed jobs (``None``: every job in ``states``) and,
    through ``executor`` (the configured one), their log files on this host. Only jobs in
    ``states`` (the lifecycle says which may be removed); one that is not refuses them all."""
    removed: list[Removed]
    if job_ids is None:
        lifecycle.check_purgeable(list(states))
        # "Changed before a moment far in the future": all of them.
        removed = [Removed(*r) for r in with_fallbacks(storage).purge(states, older_than=-1e9)]
    else:
        jobs = _read_all(storage, job_ids)
        for job in jobs:
            lifecycle.check_removable(job, list(states))
        deleted = storage.delete([j.id for j in jobs], states)
        if deleted is None:
            raise ValidationError("jobs changed while removing them; nothing was removed; try again")
        removed = [Removed(j.id, j.log_path) for j in deleted]
    discard_logs(executor, removed)
    return removed


def purge(storage: Storage, older_than: float, states: Sequence[JobState] = lifecycle.REMOVABLE_STATES,
          executor: object = None, limit: int | None = None) -> list[Removed]:
    """``purge`` and retention: delete finished jobs last changed more than ``older_than`` seconds
    ago (at most ``limit``), and, through ``executor`` (the configured one), their logs on this host."""
    lifecycle.check_purgeable(list(states))
    removed = [Removed(*r) for r in with_fallbacks(storage).purge(states, older_than, limit)]
    discard_logs(executor, removed)
    return removed


__all__ = ["Removed", "cancel", "cancel_many", "purge", "remove", "replay", "replay_many", "restart", "restart_many"]
