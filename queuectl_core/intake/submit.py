"""Enqueueing job objects for programs: the Python API (``queuectl.Queue``) and the dashboard's
``POST /api/jobs``. The same steps as ``queuectl enqueue`` with a JSON job or array: the job
objects validated by :mod:`queuectl_core.intake.jobspec` (defaults from the config), stored all or
none, then one ``enqueued`` event per job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from queuectl_core.framework.app import App
    from queuectl_core.jobs.models import Job


def submit(app: App, objs: list[Any], *, local_cwd: bool) -> list[Job]:
    """Enqueue the job objects (the keys of ``enqueue --file``), all or none, and emit an
    ``enqueued`` event for each; returns the jobs as stored. ``local_cwd``: a job without ``cwd``
    runs in this process's working directory, as with ``queuectl enqueue`` (else in the worker's).
    Raises ``ValidationError`` with the message ``queuectl enqueue`` prints (``job N:`` first in a
    batch), ``DuplicateJobError``, ``UniqueKeyError`` or ``StorageError``."""
    from queuectl_core.framework.plugins import emit_many
    from queuectl_core.intake import jobspec
    from queuectl_core.jobs.models import EventKind, JobEvent

    if not objs:
        raise jobspec.ValidationError("no jobs given")
    if local_cwd:
        objs = jobspec.with_control_defaults(objs, None, (), ())
    config = app.config
    no_retry = jobspec.configured_no_retry(config["no_retry_exit_codes"])
    jobs = jobspec.validate_all(objs, config["max_retries"], no_retry)
    # The backend as its plugin made it, as `queuectl enqueue` stores its jobs (enqueue is required).
    created = jobspec.enqueue_with_fresh_ids(app.backend, jobs, {o.get("id") for o in objs if isinstance(o, dict)})
    # This queue's config on each event (a process may hold queues of several homes).
    emit_many([JobEvent(EventKind.ENQUEUED, job=job, config=config) for job in created])
    return created


__all__ = ["submit"]
