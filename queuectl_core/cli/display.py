"""Output for people (never for ``--json``): tables that fit the terminal, relative times,
durations, and colour only on a terminal without ``NO_COLOR``."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Sequence

ELLIPSIS = "…"

# ANSI SGR codes per job state (and a few words); nothing else is coloured.
_COLOURS = {"pending": "36", "ready": "36", "scheduled": "2;36", "processing": "33", "completed": "32",
            "failed": "35", "dead": "31", "cancelled": "2", "idle": "2", "error": "31", "dim": "2", "bold": "1"}


def use_colour(stream: IO[str] | None = None) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (https://no-color.org), nor TERM=dumb."""
    import sys

    stream = stream or sys.stdout
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def paint(text: str, what: str, colour: bool) -> str:
    code = _COLOURS.get(what)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code and text else text


def width() -> int:
    """The terminal's width; on a pipe, COLUMNS or 120 (wide enough that little is cut)."""
    return max(40, shutil.get_terminal_size((120, 24)).columns)


def one_line(text: str) -> str:
    return " ".join(text.split()) if any(c in text for c in "\n\r\t") else text


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters on one line, cut with ``…``."""
    text = one_line(text)
    if len(text) <= limit:
        return text
    return text[:max(limit - 1, 0)] + ELLIPSIS if limit > 0 else ""


def duration(seconds: float | None) -> str:
    """``850ms``, ``4.2s``, ``12s``, ``4m05s``, ``1h02m``, ``3d04h``."""
    if seconds is None:
        return ""
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    whole = int(s)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def size(n: int | None) -> str:
    """Bytes as ``ls -h`` shows them, in powers of 1024: ``512B``, ``900K``, ``12M``, ``1.5G``."""
    if n is None:
        return ""
    value = float(max(0, n))
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "B":
                return f"{value:.0f}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    return ""


def _span(seconds: float) -> str:
    s = int(abs(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def relative(when: datetime | None, now: datetime) -> str:
    """``12s ago``, ``in 4m``, ``now``."""
    if when is None:
        return ""
    delta = (when - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {_span(delta)}" if delta > 0 else f"{_span(delta)} ago"


def clock(when: datetime | None, now: datetime | None = None) -> str:
    """Local clock time: ``14:03:12`` today, ``2026-12-08 01:30:00`` on another day. The one way a
    moment is written for people (UTC ISO 8601 is for JSON, the API and config only)."""
    if when is None:
        return ""
    local = when.astimezone()
    today = local.date() if now is when else (now or datetime.now().astimezone()).astimezone().date()
    hms = f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    return hms if local.date() == today else f"{local.year:04d}-{local.month:02d}-{local.day:02d} {hms}"


def moment(when: datetime | None, now: datetime) -> str:
    """Relative, then the local clock time: ``in 4m (14:07:12)``, ``12s ago (14:02:48)``."""
    if when is None:
        return ""
    return f"{relative(when, now)} ({clock(when, now)})"


@dataclass(frozen=True)
class Column:
    header: str
    min_width: int = 0  # a flexible column (min_width > 0) shrinks to this, cutting with …
    weight: int = 0  # how the spare width is shared among flexible columns
    right: bool = False
    drop_first: int = 0  # when even the minimums do not fit, columns are dropped: empty ones, then highest first


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], total: int | None = None,
          colours: Sequence[Sequence[str]] | None = None, colour: bool = False) -> list[str]:
    """Lines of a table fitting ``total`` columns: fixed columns as wide as their widest cell,
    flexible ones sharing what is left (cut with …), every row on one line."""
    total = total or width()
    keep = list(range(len(columns)))
    gap = 2

    def natural(i: int) -> int:
        return max([len(columns[i].header)] + [len(one_line(r[i])) for r in rows])

    while True:
        fixed = sum(natural(i) for i in keep if not columns[i].min_width)
        flex = [i for i in keep if columns[i].min_width]
        need = fixed + sum(min(columns[i].min_width, natural(i)) for i in flex) + gap * (len(keep) - 1)
        droppable = [i for i in keep if columns[i].drop_first]
        if need <= total or not droppable:
            break
        # An empty column goes first (no error to show), then by drop_first, highest first.
        keep.remove(max(droppable, key=lambda i: (not any(r[i] for r in rows), columns[i].drop_first)))
    widths = {i: natural(i) for i in keep}
    spare = total - fixed - gap * (len(keep) - 1)
    # Flexible columns: each gets its natural width if all fit, else shares by weight above its minimum.
    if sum(widths[i] for i in flex) > spare:
        mins = {i: min(columns[i].min_width, widths[i]) for i in flex}
        left = max(0, spare - sum(mins.values()))
        weights = sum(columns[i].weight or 1 for i in flex) or 1
        for i in flex:
            widths[i] = min(widths[i], mins[i] + left * (columns[i].weight or 1) // weights)
        # Hand what rounding (or a narrower column's natural width) left over to the widest wants.
        left = spare - sum(widths[i] for i in flex)
        for i in sorted(flex, key=lambda i: natural(i) - widths[i], reverse=True):
            add = min(left, natural(i) - widths[i])
            widths[i] += add
            left -= add
    last = keep[-1]
    out = []
    for n, cells in enumerate([[c.header for c in columns]] + [list(r) for r in rows]):
        parts = []
        for i in keep:
            text = cut(cells[i], widths[i])
            pad = widths[i] - len(text)
            if n > 0 and colours is not None and colours[n - 1][i]:
                shown = paint(text, colours[n - 1][i], colour)
            elif n == 0:
                shown = paint(text, "bold", colour)
            else:
                shown = text
            if columns[i].right:
                parts.append(" " * pad + shown)
            else:
                parts.append(shown + ("" if i == last else " " * pad))
        out.append((" " * gap).join(parts).rstrip())
    return out


__all__ = ["ELLIPSIS", "Column", "clock", "cut", "duration", "moment", "one_line", "paint", "relative", "size", "table",
           "use_colour", "width"]
