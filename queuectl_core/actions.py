"""Control actions on one job (cancel, restart, DLQ replay), for the CLI and plugin commands.

Each reads the job, asks :mod:`queuectl_core.lifecycle` what the action means in its state, and has
the storage apply that change, compare-and-set on the state read: a job that moved on in between
is reported, never overwritten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from queuectl_core import lifecycle
from queuectl_core.errors import JobNotFoundError, ValidationError

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.models import Job


def _act(storage: Storage, job_id: str, decide: Callable[[Job], lifecycle.Change]) -> Job:
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
    """``cancel``: cancelled at once if waiting; if running, a request its worker honours at its
    next heartbeat (the returned job then still says processing, with ``cancel_requested``)."""
    return _act(storage, job_id, lifecycle.cancel)


__all__ = ["cancel", "replay", "restart"]
