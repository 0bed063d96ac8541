"""``queuectl logs`` from the storage: an attempt's output as the storage keeps it (the optional
``AttemptOutput`` capability), the same from every host, while the attempt runs and after.

:func:`queuectl_core.control.joblogs.show` comes here first. A finished attempt the storage holds
nothing of (it ran before the storage kept output, or printed nothing) is left to the executor's
files and the stored tail, as with a storage without the capability.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, BinaryIO, Callable

from queuectl_core.jobs.output import joined

if TYPE_CHECKING:
    from queuectl_core.framework.app import App
    from queuectl_core.jobs.models import Job
    from queuectl_core.storage.capabilities import AttemptOutput

FOLLOW_POLL_SECONDS = 0.2  # how often -f reads new output (the worker writes it about twice a second)
STATE_POLL_SECONDS = 0.5  # how often -f asks whether the attempt has ended


def finished(store: AttemptOutput, job: Job, n: int) -> bytes | None:
    """Attempt ``n``'s stored output; None when the storage holds none of it."""
    chunks = store.read_output(job.id, n)
    return joined(chunks) if chunks else None


class _Reader:
    """What of an attempt's stored chunks is new since the last read. The last chunk may still
    grow in place (the worker fills it up to its size), so it is read again each time."""

    def __init__(self, store: AttemptOutput, job_id: str, n: int) -> None:
        self.store, self.job_id, self.n = store, job_id, n
        self.last_seq = 0
        self.last_len = 0

    def new(self) -> bytes:
        chunks = self.store.read_output(self.job_id, self.n, after=max(self.last_seq - 1, 0))
        out = []
        for seq, data in chunks:
            if seq == self.last_seq:
                data = data[self.last_len:] if len(data) > self.last_len else b""
            elif seq < self.last_seq:
                continue
            out.append(data)
        if chunks and chunks[-1][0] >= self.last_seq:
            self.last_seq, self.last_len = chunks[-1][0], len(chunks[-1][1])
        return b"".join(out)


def running(app: App, store: AttemptOutput, job: Job, n: int, follow: bool, first: Callable[[bytes], bytes],
            out: BinaryIO, closing: Callable[[str, Job | None, int], int]) -> int:
    """The attempt in progress, from the storage: what it printed so far (``first`` picks what of it
    to show: ``--tail``), and with ``follow`` the rest as it comes, until the attempt ends."""
    from queuectl_core.jobs.models import JobState

    reader = _Reader(store, job.id, n)
    data = first(reader.new())
    if data:
        out.write(data)
        out.flush()
    if not follow:
        return 0
    next_state = time.monotonic() + STATE_POLL_SECONDS
    while True:
        time.sleep(FOLLOW_POLL_SECONDS)
        now = time.monotonic()
        ended = None
        if now >= next_state:
            next_state = now + STATE_POLL_SECONDS
            current = app.storage.get(job.id)
            if current is None or current.attempt_number != n or current.state != JobState.PROCESSING:
                ended = (current,)  # its output is all stored before its outcome is recorded
        data = reader.new()
        if data:
            out.write(data)
            out.flush()
        if ended is not None:
            return closing(job.id, ended[0], n)


__all__ = ["finished", "running"]
