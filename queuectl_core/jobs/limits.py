"""A job's limits (``memory``, ``cpu_time``): how people write them, where a job's come from, and
the reason an attempt that exceeded one fails with.

A job's own value wins over its queue's default (``queue set Q --memory``), which wins over the
worker's config (``job.memory``, ``job.cpu_time``). They are resolved when an attempt starts, not at
enqueue: a queue default changed while jobs wait applies to their next attempt. A value of 0 means
no limit, and in a job it overrides the defaults.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.records import AttemptResult

SIZE_RULE = "bytes, or a number with K, M, G or T, powers of 1024: 512M, 1.5G"
_SIZE_RE = r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\Z"
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MAX_MEMORY = 1024**5  # a PiB: beyond any machine, and well inside a 64-bit column
MAX_CPU_TIME = 10 * 365 * 86400.0


class Limit(StrEnum):
    """A limit an executor enforces on an attempt."""

    MEMORY = "memory"
    CPU_TIME = "cpu_time"


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits as set in one place (a job, a queue, the config): None where that place sets none."""

    memory: int | None = None
    cpu_time: float | None = None


def parse_size(text: str) -> int:
    """Bytes from ``1048576``, ``512K``, ``100M``, ``1.5G``, ``2T`` (also ``100MB``, ``100MiB``;
    case-insensitive). Raises ValueError with a readable message."""
    m = re.match(_SIZE_RE, text.strip().upper())
    if m is None:
        raise ValueError(f"not a size: {text[:40]!r} ({SIZE_RULE})")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value > MAX_MEMORY:
        raise ValueError(f"size out of range: {text[:40]!r} (at most 1024T)")
    return int(value)


def format_size(n: int) -> str:
    """Bytes as a limit is written: exact in the largest unit that divides it (``256M``), else
    to one decimal (``1.5G``, ``301M``)."""
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit]:
            value = n / _UNITS[unit]
            if value == int(value):
                return f"{int(value)}{unit}"
            return f"{value:.1f}{unit}" if value < 10 else f"{round(value)}{unit}"
    return f"{n}B" if n else "0"


def _peak_size(peak: int, limit: int | None) -> str:
    """A peak as ``format_size`` writes it, except that one just over the limit never reads as
    the limit itself (``peak 100M`` beside ``limit 100M``): then to one decimal, rounded up."""
    text = format_size(peak)
    if not limit or peak <= limit or text != format_size(limit):
        return text
    unit = next(u for u in ("T", "G", "M", "K") if peak >= _UNITS[u])
    return f"{math.ceil(peak * 10 / _UNITS[unit]) / 10:.1f}{unit}"


def format_seconds(seconds: float) -> str:
    from queuectl_core.jobs.timeutil import format_duration

    return format_duration(seconds)


def _from_text(key: str, value: Any, parse: Callable[[str], Any]) -> Any:
    """``value`` as given, or parsed when a person wrote it as text ("512M", "90s")."""
    from queuectl_core.errors import ValidationError

    if not isinstance(value, str):
        return value
    try:
        return parse(value)
    except ValueError as exc:
        raise ValidationError(f"{key!r}: {exc}") from None


def memory_value(key: str, value: Any) -> int:
    """A job object's ``memory``: bytes as a JSON integer (or, from a person, a SIZE string)."""
    from queuectl_core.errors import ValidationError

    value = _from_text(key, value, parse_size)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MEMORY:
        raise ValidationError(f"{key!r} must be a number of bytes from 0 (no limit) to {MAX_MEMORY}, got {value!r:.60}")
    return value


def cpu_time_value(key: str, value: Any) -> float:
    """A job object's ``cpu_time``: seconds as a JSON number (or, from a person, a DURATION string)."""
    from queuectl_core.errors import ValidationError
    from queuectl_core.jobs.timeutil import parse_duration

    value = _from_text(key, value, parse_duration)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_CPU_TIME:
        raise ValidationError(f"{key!r} must be a number of seconds from 0 (no limit) to ten years, got {value!r:.60}")
    return float(value)


def limit_fields(obj: dict[str, Any]) -> tuple[int | None, float | None]:
    """The ``memory`` and ``cpu_time`` keys of a job object, validated (None where absent)."""
    memory, cpu_time = obj.get("memory"), obj.get("cpu_time")
    return (None if memory is None else memory_value("memory", memory),
            None if cpu_time is None else cpu_time_value("cpu_time", cpu_time))


def effective(job: Limits, queue: Limits | None, config: Limits) -> tuple[Limits, dict[str, str]]:
    """The limits an attempt runs under, and where each came from (``job``, ``queue``, ``config``);
    a 0 from the place that wins means no limit (None)."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name in ("memory", "cpu_time"):
        for where, limits in (("job", job), ("queue", queue), ("config", config)):
            value = getattr(limits, name) if limits is not None else None
            if value is not None:
                values[name] = value or None
                if value:
                    source[name] = where
                break
    return Limits(**values), source


def of_job(job: Job) -> Limits:
    return Limits(job.memory, job.cpu_time)


def configured(config: Any) -> Limits:
    """The config's ``job.memory`` and ``job.cpu_time`` (empty: none)."""
    from queuectl_core.jobs.timeutil import parse_duration

    memory, cpu_time = config["job.memory"], config["job.cpu_time"]
    return Limits(parse_size(memory) if memory.strip() else None,
                  parse_duration(cpu_time) if cpu_time.strip() else None)


def with_limits(job: Job, limits: Limits) -> Job:
    """The job as its attempt runs it: ``memory`` and ``cpu_time`` the limits in force."""
    if (job.memory, job.cpu_time) == (limits.memory, limits.cpu_time):
        return job
    return replace(job, memory=limits.memory, cpu_time=limits.cpu_time)


def reason(job: Job, result: AttemptResult) -> str | None:
    """Why an attempt that exceeded a limit failed, in words (None if it exceeded none):
    ``exceeded memory limit 256M (peak 301M)``, ``exceeded cpu time 10s``."""
    if result.exceeded == Limit.MEMORY:
        text = f"exceeded memory limit {format_size(job.memory)}" if job.memory else "exceeded its memory limit"
        peak = result.peak_memory
        return text + (f" (peak {_peak_size(peak, job.memory)})" if peak else "")
    if result.exceeded == Limit.CPU_TIME:
        return f"exceeded cpu time {format_seconds(job.cpu_time)}" if job.cpu_time else "exceeded its cpu time limit"
    return None


__all__ = ["Limit", "Limits", "SIZE_RULE", "configured", "cpu_time_value", "effective", "format_size",
           "limit_fields", "memory_value", "of_job", "parse_size", "reason", "with_limits"]
