"""Stdout notifications: one line per worker event, ``[worker-10293] completed: job1``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from queuectl_core import hookimpl

if TYPE_CHECKING:
    from queuectl_core.jobs.models import JobEvent


def _took(event: JobEvent) -> str:
    from queuectl_core.cli.display import duration

    return f" in {duration(event.result.duration)}" if event.result is not None and event.result.duration else ""


def format_event(event: JobEvent, width: int | None = None) -> str | None:
    """The log line for an event, or None for events the CLI reports itself (enqueue, DLQ retry).
    Each starts with the local time of the event; a finished attempt says how long it took."""
    from queuectl_core.cli.display import clock, relative

    if event.worker_id is None:
        return None
    job = event.job
    kind = str(event.kind)
    prefix = f"{clock(event.at, event.at)} [{event.worker_id}]"
    if kind == "claimed" and job is not None:
        line = f"{prefix} Picked job: {job.id} | cmd: "
        if width is None:
            return line + job.command
        from queuectl_core.cli.display import cut

        # On a terminal, one line per event: the command is cut with … to the width.
        return line + cut(job.command, max(20, width - len(line)))
    if kind == "completed" and job is not None:
        return f"{prefix} completed: {job.id}{_took(event)}"
    if kind == "failed" and job is not None:
        # The line's own time says when; "retry in 4s" says how long until the next attempt.
        # "failed 1/4": attempts of at most, as list's TRIES column shows them.
        return _fitted(f"{prefix} failed {job.attempts}/{job.max_retries + 1}: {job.id} (", job.last_error,
                       f"){_took(event)}; retry {relative(job.run_at, event.at)}", width)
    if kind == "dead" and job is not None:
        return _fitted(f"{prefix} DLQ: {job.id} (", job.last_error, f"){_took(event)}", width)
    if kind == "cancelled" and job is not None:
        return f"{prefix} cancelled: {job.id}{_took(event)}"
    if kind == "released" and job is not None:
        why = event.message or "stopped before it finished"
        return f"{prefix} released: {job.id} ({why}; runnable again)"
    if kind == "lease_lost" and job is not None:
        return f"{prefix} lease lost: {job.id} (another worker holds it now; this attempt's result is discarded)"
    if kind == "worker_started":
        return f"{prefix} started{': ' + event.message if event.message else ''}"
    if kind == "worker_stopping":
        return f"{prefix} stopping: {event.message}"
    if kind == "worker_stopped":
        return f"{prefix} stopped{': ' + event.message if event.message else ''}"
    return None


def _fitted(head: str, error: str | None, tail: str, width: int | None) -> str:
    """``head + error + tail`` on one line: on a terminal, the error is cut with … to its width."""
    from queuectl_core.cli.display import cut, one_line

    text = one_line(error or "")
    if width is not None:
        text = cut(text, max(12, width - len(head) - len(tail)))
    return head + text + tail


_width: list[int | None] = []  # the terminal's width, looked up once; None when stdout is not one


def _terminal_width() -> int | None:
    if not _width:
        import shutil

        _width.append(shutil.get_terminal_size().columns if os.isatty(1) else None)
    return _width[0]


@hookimpl(trylast=True)
def queuectl_job_event(event: JobEvent) -> None:
    if event.worker_id is None:
        return  # the CLI reports its own events (enqueue, retry); not looking the width up saves importing shutil
    line = format_event(event, _terminal_width())
    if line is not None:
        # One write per line, so lines from several worker processes never interleave.
        os.write(1, (line + "\n").encode("utf-8", "replace"))
