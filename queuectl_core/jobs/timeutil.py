"""One time format everywhere: UTC, ISO 8601, millisecond precision, ``Z`` suffix."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime


def now() -> datetime:
    """The current time, aware, in UTC, truncated to milliseconds."""
    return from_ms(now_ms())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(dt: datetime) -> int:
    """Milliseconds since the Unix epoch; what storage compares, so no two formats ever meet."""
    return int(dt.timestamp() * 1000 + (0.5 if dt.timestamp() >= 0 else -0.5))


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def format_time(dt: datetime | None) -> str | None:
    """``2026-01-10T10:35:00.000Z``: the only way a time is ever shown or serialised."""
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    # Not strftime: glibc's %Y drops the zero padding of years before 1000, a form parse_time refuses.
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
            f".{dt.microsecond // 1000:03d}Z")


def parse_time(text: str, local_if_naive: bool = False) -> datetime:
    """Parse ISO 8601. A time without a zone is rejected rather than guessed, unless
    ``local_if_naive`` (a person typing ``--run-at``): then it is read in the machine's zone.

    Raises ``ValueError`` with a readable message.
    """
    try:
        dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
        if dt.tzinfo is None:
            if not local_if_naive:
                raise ValueError(f"time has no zone (add 'Z' for UTC): {text!r}")
            dt = dt.astimezone()  # a naive datetime's astimezone() reads it as local time
        return from_ms(to_ms(dt))
    except ValueError as exc:
        if "no zone" in str(exc):
            raise
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    except (OverflowError, OSError):  # year 9999 +14:00 and the like: out of the clock's range
        raise ValueError(f"time out of range: {text!r}") from None


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Compiled (and cached) by re on first use, not at import.
_PART = r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)"
_PLAIN_NUMBER = r"[+]?(\d+(?:\.\d*)?|\.\d+)(e[+-]?\d+)?\Z"


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``1.5s``, ``250ms``, ``5m``, ``1h30m`` or ``7d`` (units combined,
    largest first or not; no sign, no spaces inside). Finite and >= 0.

    Raises ``ValueError`` with a readable message.
    """
    s = text.strip().lower()
    if re.match(_PLAIN_NUMBER, s, re.IGNORECASE):
        seconds = float(s)
    else:
        pos, seconds = 0, 0.0
        for m in re.finditer(_PART, s):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise ValueError(f"not a duration: {text[:40]!r} (seconds, or units ms s m h d: 90, 1.5s, 5m, 1h30m, 7d)")
    if not math.isfinite(seconds):
        raise ValueError(f"duration out of range: {text[:40]!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """What :func:`parse_duration` reads back: ``1d``, ``1h30m``, ``90`` s as ``1m30s``, ``1.5s``,
    ``250ms``; exact, in the largest units that divide it (how config shows a duration)."""
    if not math.isfinite(seconds) or seconds < 0:
        return f"{seconds:g}"
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms % 1000 == 0 and ms:
        parts.append(f"{ms // 1000}s")
    elif ms:
        parts.append(f"{ms / 1000:g}s" if ms >= 1000 else f"{ms}ms")
    return "".join(parts)


__all__ = ["UTC", "format_duration", "format_time", "from_ms", "now", "now_ms", "parse_duration", "parse_time", "to_ms"]
