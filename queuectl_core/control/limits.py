"""Limits as `queue set`, `queue list` and `show` handle them: a queue's defaults, and where each of
a job's limits comes from (:mod:`queuectl_core.jobs.limits` has the rules)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from queuectl_core.errors import ValidationError
from queuectl_core.jobs.limits import Limits, configured, effective, format_size, of_job, parse_size

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.records import QueueInfo


def parse_queue_limits(memory: str | None, cpu_time: str | None) -> Limits:
    """``queue set --memory SIZE --cpu-time DURATION`` checked (0 clears a default); ValidationError
    naming the flag, before anything is written."""
    from queuectl_core.jobs.timeutil import parse_duration

    try:
        size = parse_size(memory) if memory is not None else None
    except ValueError as exc:
        raise ValidationError(f"--memory: {exc}") from None
    try:
        seconds = parse_duration(cpu_time) if cpu_time is not None else None
    except ValueError as exc:
        raise ValidationError(f"--cpu-time: {exc}") from None
    if seconds is not None and seconds > 10 * 365 * 86400:
        raise ValidationError(f"--cpu-time: at most ten years, got {cpu_time!r}")
    return Limits(size, seconds)


def set_queue_limits(storage: Storage, name: str, limits: Limits) -> None:
    from queuectl_core.control.scheduling import check_queue_name
    from queuectl_core.storage.capabilities import with_fallbacks

    with_fallbacks(storage).set_queue_limits(check_queue_name(name), memory=limits.memory, cpu_time=limits.cpu_time)


def queue_limits(storage: Storage) -> dict[str, Limits]:
    from queuectl_core.storage.capabilities import with_fallbacks

    return with_fallbacks(storage).queue_limits()


def describe(limits: Limits) -> str:
    """``memory 512M, cpu time 10m`` (what is set), or ``no limits``."""
    from queuectl_core.jobs.timeutil import format_duration

    parts = []
    if limits.memory:
        parts.append(f"memory {format_size(limits.memory)}")
    if limits.cpu_time:
        parts.append(f"cpu time {format_duration(limits.cpu_time)}")
    return ", ".join(parts) or "no limits"


def job_limits(storage: Storage, config: Any, job: Job) -> dict[str, Any]:
    """The limits the job's next attempt runs under, as `show --json` prints them: ``memory``
    (bytes) and ``cpu_time`` (seconds), None for none, and ``from`` where each came from (``job``,
    ``queue``, ``config``). The worker's config decides the last; this is this host's."""
    try:
        config_limits = configured(config)
    except ValueError:
        config_limits = Limits()
    limits, source = effective(of_job(job), queue_limits(storage).get(job.queue), config_limits)
    return {"memory": limits.memory, "cpu_time": limits.cpu_time, "from": source}


def with_default_queues(queues: list[QueueInfo], defaults: dict[str, Limits]) -> list[QueueInfo]:
    """``queues``, and a row for each queue that has default limits but no jobs nor other settings."""
    from queuectl_core.jobs.models import JobState
    from queuectl_core.jobs.records import QueueInfo

    names = {q.name for q in queues}
    extra = [QueueInfo(name, counts={str(s): 0 for s in JobState}) for name in defaults if name not in names]
    return sorted([*queues, *extra], key=lambda q: q.name)
