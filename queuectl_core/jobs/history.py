"""A job's history and whether its worker is gone: what ``show``, ``list`` and ``status`` tell.

Every finished attempt is kept by the storage (the ``AttemptHistory`` capability; core's fallback
knows the last one only); the running attempt is the job's own row (claimed at ``updated_at``
by ``worker_id`` on ``host``). A processing job is *orphaned* when its worker is known gone: a
dead pid on this host, or no heartbeat for longer than a lease (its lease expired) anywhere. Any
live worker's housekeeping takes it back once its lease has expired.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from queuectl_core.jobs.models import JobState
from queuectl_core.jobs.records import Attempt

if TYPE_CHECKING:
    from typing import Any, Sequence

    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.records import WorkerInfo


def attempts(storage: Any, job: Job) -> list[Attempt]:
    """Every attempt of ``job``, oldest first: the finished ones as stored, then the running one."""
    done = list(storage.attempts(job.id))
    if job.state == JobState.PROCESSING:
        done = [a for a in done if a.attempt != job.attempt_number]
        done.append(Attempt(job.id, job.attempt_number, job.updated_at, None, None, None, None, job.worker_id,
                            job.host, job.log_path))
    return done


@dataclass(frozen=True, slots=True)
class Details:
    """What ``show`` and the dashboard's job view tell of one job, read once."""

    job: Job
    attempts: list[Attempt]  # every attempt, oldest first, the running one last
    after: list[str]  # the ids it still waits on
    orphaned: bool  # processing, and its worker is known gone
    workers_live: bool  # whether a live worker will take it back (only read when orphaned)
    now: datetime  # the storage's clock


def details(storage: Any, job: Job, here: str) -> Details:
    """Everything ``show`` tells of ``job``, beyond its row; ``here`` as for :func:`orphans`."""
    after = storage.waits_on([job.id]).get(job.id, []) if job.waiting else []
    gone, workers_live = orphans(storage, [job], here)
    return Details(job, attempts(storage, job), after, bool(gone), workers_live, storage.now())


def _pid_gone(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # someone else's process: alive
        return False
    return False


def _pid_of(worker_id: str | None) -> int | None:
    """The pid in a bundled worker's id (``worker-PID``), for a worker no longer listed."""
    found = re.fullmatch(r"worker-(\d+)", worker_id or "")
    return int(found.group(1)) if found else None


def orphaned(job: Job, workers: Sequence[WorkerInfo], here: str, now: datetime) -> bool:
    """Whether processing ``job``'s worker is known gone: its process is dead on this host (``here``),
    or it has not renewed the job's lease for longer than a lease (the lease expired)."""
    if job.state != JobState.PROCESSING:
        return False
    if job.lease_expires_at is not None and job.lease_expires_at <= now:
        return True
    worker = next((w for w in workers if w.id == job.worker_id and (job.host is None or w.hostname == job.host)), None)
    host = job.host if job.host is not None else (worker.hostname if worker is not None else None)
    if host != here:
        return False
    return _pid_gone(worker.pid if worker is not None else _pid_of(job.worker_id))


def live(workers: Sequence[WorkerInfo], here: str) -> list[WorkerInfo]:
    """The listed workers whose process is not known gone: on this host (``here``) a worker whose
    pid is dead (SIGKILL, OOM) is gone while its row ages out; elsewhere its last heartbeat counts."""
    return [w for w in workers if not (w.hostname == here and _pid_gone(w.pid))]


def orphans(storage: Any, jobs: Sequence[Job], here: str) -> tuple[set[str], bool]:
    """The ids of the orphaned jobs among ``jobs``, and whether a live worker will take them back
    once their leases expire; one read of the live workers, and none when no job is processing.
    ``here`` is the host name this machine's workers report (config ``worker.host``): only their
    processes can be looked up here."""
    running = [j for j in jobs if j.state == JobState.PROCESSING]
    if not running:
        return set(), True
    workers, now = storage.live_workers(), storage.now()
    return {j.id for j in running if orphaned(j, workers, here, now)}, bool(live(workers, here))


__all__ = ["Details", "attempts", "details", "live", "orphaned", "orphans"]
