"""Every running attempt's output, on its way from the executor to the storage.

The executor hands each piece of output it reads to ``RunContext.on_chunk`` on the attempt's
thread: :meth:`AttemptOutput.add` files it into the attempt's :class:`~queuectl_core.jobs.output.OutputCap`
(head and tail within ``logs.max_bytes``, so memory stays bounded whatever the job prints) and
returns. The worker's loop, which alone uses storage, writes what changed for every running attempt
in one transaction (:meth:`OutputWriter.flush`) at least once a second while jobs run; a finished
attempt's last output is stored in the transaction that records its outcome, so whoever sees the
attempt ended sees all of its output. Neither the job nor the next claim waits on it; a job that
prints nothing costs nothing.

Only with a storage that has the ``AttemptOutput`` capability; with any other, nothing here is
used and output stays where the executor puts it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Iterable

from queuectl_core.jobs.output import OutputCap
from queuectl_core.storage.capabilities import attempt_output

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.output import OutputWrite
    from queuectl_core.storage.capabilities import AttemptOutput as Store

FLUSH_SECONDS = 0.5  # how often the running attempts' new output is written (at least once a second)


class AttemptOutput:
    """One running attempt's output not yet written: filled by its thread, taken by the loop."""

    __slots__ = ("cap", "lock", "changed")

    def __init__(self, job: Job, limit: int) -> None:
        self.cap = OutputCap(job.id, job.attempt_number, limit)
        self.lock = threading.Lock()
        self.changed = False

    def add(self, data: bytes) -> None:
        """``RunContext.on_chunk``: called on the attempt's thread with what the job printed."""
        with self.lock:
            self.cap.add(data)
            self.changed = True

    def take(self) -> OutputWrite | None:
        if not self.changed:  # read without the lock: a change missed now is taken next time
            return None
        with self.lock:
            self.changed = False
            return self.cap.take()

    def give_back(self, write: OutputWrite) -> None:
        with self.lock:
            self.cap.give_back(write)
            self.changed = True


class OutputWriter:
    """Writes the running attempts' output for the worker's loop (see the module's docstring)."""

    def __init__(self, storage: object, limit: int) -> None:
        self.store: Store | None = attempt_output(storage)
        self.limit = limit
        self.next_flush = 0.0

    def open(self, job: Job) -> AttemptOutput | None:
        """The buffer for a job about to start; None when the storage keeps no output."""
        return AttemptOutput(job, self.limit) if self.store is not None else None

    def due(self, now: float) -> bool:
        return self.store is not None and now >= self.next_flush

    def flush(self, buffers: Iterable[AttemptOutput | None]) -> None:
        """Write what changed in ``buffers``, in one transaction. Raises StorageError (after
        keeping it all to be written again) when the storage refuses it."""
        self.next_flush = time.monotonic() + FLUSH_SECONDS
        if self.store is None:
            return
        taken = self.take(buffers)
        if not taken:
            return
        try:
            self.store.write_output([w for _, w in taken])
        except BaseException:
            self.give_back(taken)
            raise

    def take(self, buffers: Iterable[AttemptOutput | None]) -> list[tuple[AttemptOutput, OutputWrite]]:
        """What changed in ``buffers``, for a caller that writes it in a transaction of its own
        (finished attempts' last output with their outcomes); :meth:`give_back` if that fails."""
        return [(b, w) for b in buffers if b is not None for w in (b.take(),) if w is not None]

    @staticmethod
    def give_back(taken: Iterable[tuple[AttemptOutput, OutputWrite]]) -> None:
        for buffer, write in taken:
            buffer.give_back(write)


__all__ = ["FLUSH_SECONDS", "AttemptOutput", "OutputWriter"]
