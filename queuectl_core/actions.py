"""Control actions (cancel, restart, DLQ replay, remove, purge), for the CLI, plugin commands and
a web UI alike.

Each reads the jobs, asks :mod:`queuectl_core.lifecycle` what the action means in each one's state,
and has the storage apply every change in one transaction, compare-and-set on the states read. An
action on many jobs is all-or-nothing: one refusal (unknown id, wrong state) changes nothing, and a
job that moved on in between is reported, never overwritten.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Sequence

from queuectl_core import lifecycle
from queuectl_core.capabilities import with_fallbacks
from queuectl_core.errors import JobNotFoundError, ValidationError

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.models import Job, JobState


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
    return updated


def _announce(jobs: Iterable[Job], changes: dict[str, lifecycle.Change]) -> None:
    from queuectl_core.models import JobEvent
    from queuectl_core.plugins import emit

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
        from queuectl_core.models import JobState

        job_ids = [j.id for j in storage.list_jobs(JobState.DEAD)]
        if not job_ids:
            return []
    return _act_many(storage, job_ids, lambda job: lifecycle.replay(job, command))


class Removed(NamedTuple):
    """A deleted job: its id, and where its last attempt's log was."""

    id: str
    log_path: str | None


def remove(storage: Storage, job_ids: Sequence[str] | None, states: Sequence[JobState] = lifecycle.REMOVABLE_STATES,
           log_dir: str | None = None) -> list[Removed]:
    """``remove`` / ``dlq remove``: delete the listed jobs (``None``: every job in ``states``) and
    their log files on this host. Only jobs in ``states`` (the lifecycle says which may be
    removed); one that is not refuses them all."""
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
    remove_logs(removed, log_dir)
    return removed


def purge(storage: Storage, older_than: float, states: Sequence[JobState] = lifecycle.REMOVABLE_STATES,
          log_dir: str | None = None, limit: int | None = None) -> list[Removed]:
    """``purge`` and retention: delete finished jobs last changed more than ``older_than`` seconds
    ago (at most ``limit``), and their logs on this host."""
    lifecycle.check_purgeable(list(states))
    removed = [Removed(*r) for r in with_fallbacks(storage).purge(states, older_than, limit)]
    remove_logs(removed, log_dir)
    return removed


_LOG_NAME = re.compile(r"(.+)\.(\d+)\.log\Z")


def remove_logs(jobs: Iterable[Job | Removed], log_dir: str | None = None) -> int:
    """Delete every attempt's log file (``ID.N.log``) of these jobs found on this host, in their
    recorded log directory and ``log_dir``; one directory listing however many jobs."""
    by_dir: dict[str, set[str]] = {}
    for job in jobs:
        dirs = {os.path.dirname(job.log_path)} if job.log_path else set()
        if log_dir:
            dirs.add(os.path.expanduser(log_dir))
        for d in dirs:
            by_dir.setdefault(d, set()).add(job.id)
    gone = 0
    for d, ids in by_dir.items():
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            m = _LOG_NAME.match(name)
            if m and m.group(1) in ids:
                try:
                    os.unlink(os.path.join(d, name))
                    gone += 1
                except OSError:
                    pass
    return gone


__all__ = ["Removed", "cancel", "cancel_many", "purge", "remove", "remove_logs", "replay", "replay_many", "restart",
           "restart_many"]
