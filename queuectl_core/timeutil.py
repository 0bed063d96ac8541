"""One time format everywhere: UTC, ISO 8601, millisecond precision, ``Z`` suffix."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_FORMAT = "%Y-%m-%dT%H:%M:%S"


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
    return f"{dt.strftime(_FORMAT)}.{dt.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse ISO 8601; a time without a zone is rejected rather than guessed.

    Raises ``ValueError`` with a readable message.
    """
    try:
        dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        raise ValueError(f"time has no zone (add 'Z' for UTC): {text!r}")
    return from_ms(to_ms(dt))


__all__ = ["UTC", "format_time", "from_ms", "now", "now_ms", "parse_time", "to_ms"]
