"""An attempt's output as the storage keeps it: the start and the end, within ``logs.max_bytes``.

The output is stored as numbered chunks (``seq`` 1, 2, ...) of one attempt. The first half of the
limit (the *head*) is stored as it comes and never changes. Once the head is full, one chunk is set
aside for the line saying how much was cut, and what follows is the *tail*: the latest bytes, at
most the other half of the limit. When the tail outgrows its half, its oldest chunks are deleted and
the oldest one kept is rewritten to its last part, so what is stored never exceeds the limit (plus
that one line), and the last line printed is always there.

:class:`OutputCap` is that rule, once, for every storage: it turns the bytes an attempt prints into
:class:`OutputWrite` values (chunks to store, a range of chunks to delete), which a storage with the
``AttemptOutput`` capability persists without deciding anything. Memory stays bounded too: what is
not yet written is at most the limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
CUT_PREFIX = b"[queuectl: "
CUT_SUFFIX = b" bytes cut]\n"


@dataclass(frozen=True, slots=True)
class OutputWrite:
    """One attempt's change to its stored output: delete its chunks numbered ``drop[0]`` up to (not
    including) ``drop[1]`` (when given), then store each of ``chunks`` (``(seq, bytes)``),
    replacing a chunk of the same number."""

    job_id: str
    attempt: int
    chunks: tuple[tuple[int, bytes], ...] = ()
    drop: tuple[int, int] | None = None


def cut_line(cut: int, after_newline: bool = True) -> bytes:
    """The line standing for ``cut`` bytes taken out of the middle, e.g.
    ``[queuectl: 936,512 bytes cut]``."""
    line = CUT_PREFIX + f"{cut:,}".encode() + CUT_SUFFIX
    return line if after_newline else b"\n" + line


def joined(chunks: Iterable[tuple[int, bytes]]) -> bytes:
    """The output, from its stored chunks (in any order)."""
    return b"".join(data for _, data in sorted(chunks))


class _Chunk:
    __slots__ = ("seq", "data", "dirty")

    def __init__(self, seq: int, data: bytes) -> None:
        self.seq = seq
        self.data = data
        self.dirty = True  # changed since it was last written


class OutputCap:
    """The stored form of one attempt's output, kept up to date as bytes come (:meth:`add`), and
    what has changed since the last write (:meth:`take`; :meth:`give_back` after a failed write).

    Not thread-safe: the caller holds a lock (see :mod:`queuectl_core.worker.output`)."""

    def __init__(self, job_id: str, attempt: int, limit: int = DEFAULT_MAX_BYTES,
                 chunk_size: int | None = None) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        # Small enough that rewriting the oldest tail chunk, or the one still filling, costs
        # little; large enough that a job printing a lot makes few rows.
        self.chunk_size = chunk_size or max(1024, min(64 * 1024, self.tail_limit // 8))
        self.total = 0  # bytes printed
        self.cut = 0  # bytes taken out of the middle
        self.head_size = 0
        self.head_newline = True  # whether the head ends a line (the cut line then needs no newline first)
        self.next_seq = 1
        self.head: list[_Chunk] = []  # head chunks not yet written, and the last one while it fills
        self.marker: int | None = None  # the seq of the cut line, once the head is full
        self.marker_dirty = False
        self.tail: deque[_Chunk] = deque()
        self.tail_size = 0
        self.dropped_to = 0  # tail chunks below this seq are gone; the storage deletes them
        self.drop_sent = 0  # ... and has been told up to here

    @property
    def stored(self) -> int:
        """Bytes kept: printed, less what was cut."""
        return self.total - self.cut

    def add(self, data: bytes) -> None:
        """What the attempt printed next."""
        if not data:
            return
        self.total += len(data)
        room = self.head_limit - self.head_size
        if room > 0:
            part, data = data[:room], data[room:]
            self.head_size += len(part)
            self._append(self.head, part)
            if self.head_size == self.head_limit:
                self.head_newline = part.endswith(b"\n")
        if not data:
            return
        if self.marker is None:
            self.marker = self.next_seq
            self.next_seq += 1
            self.dropped_to = self.drop_sent = self.next_seq
        self.tail_size += len(data)
        self._append(self.tail, data)
        self._trim()

    def _append(self, chunks: list[_Chunk] | deque[_Chunk], data: bytes) -> None:
        size = self.chunk_size
        if chunks:
            last = chunks[-1]
            if len(last.data) < size and last.seq == self.next_seq - 1:
                room = size - len(last.data)
                last.data += data[:room]
                last.dirty = True
                data = data[room:]
        for at in range(0, len(data), size):
            chunks.append(_Chunk(self.next_seq, data[at:at + size]))
            self.next_seq += 1

    def _trim(self) -> None:
        excess = self.tail_size - self.tail_limit
        if excess <= 0:
            return
        self.cut += excess
        self.tail_size -= excess
        self.marker_dirty = True
        while excess >= len(self.tail[0].data):
            excess -= len(self.tail.popleft().data)
        first = self.tail[0]
        if excess:
            first.data = first.data[excess:]
            first.dirty = True
        self.dropped_to = first.seq

    def take(self) -> OutputWrite | None:
        """What changed since the last call, to write; None when nothing did. The chunks handed
        out count as written: :meth:`give_back` if the write fails."""
        chunks = [(c.seq, c.data) for c in self.head if c.dirty]
        for c in self.head:
            c.dirty = False
        # Written head chunks leave memory, except the last while it may still grow.
        self.head = [c for c in self.head[-1:] if self.head_size < self.head_limit and len(c.data) < self.chunk_size]
        if self.marker is not None and self.marker_dirty:
            chunks.append((self.marker, cut_line(self.cut, self.head_newline)))
            self.marker_dirty = False
        for c in self.tail:
            if c.dirty:
                chunks.append((c.seq, c.data))
                c.dirty = False
        drop = (self.drop_sent, self.dropped_to) if self.dropped_to > self.drop_sent else None
        self.drop_sent = self.dropped_to
        if not chunks and drop is None:
            return None
        return OutputWrite(self.job_id, self.attempt, tuple(chunks), drop)

    def give_back(self, write: OutputWrite) -> None:
        """``write`` was not stored: what it carried is to be written again (with whatever has
        changed since, which is already marked so)."""
        seqs = {seq for seq, _ in write.chunks}
        kept = {c.seq for c in self.head} | {c.seq for c in self.tail}
        # Head chunks taken out of memory by take() come back as they were written.
        lost = [_Chunk(seq, data) for seq, data in write.chunks
                if seq not in kept and seq != self.marker and (self.marker is None or seq < self.marker)]
        self.head = sorted(lost + self.head, key=lambda c: c.seq)
        for c in [*self.head, *self.tail]:
            if c.seq in seqs:
                c.dirty = True
        if self.marker in seqs:
            self.marker_dirty = True
        if write.drop is not None:
            self.drop_sent = min(self.drop_sent, write.drop[0])


def rebuilt(writes: Sequence[OutputWrite]) -> dict[int, bytes]:
    """The chunks a sequence of writes of one attempt leaves (what a storage holds), for tests and
    the reference storage."""
    stored: dict[int, bytes] = {}
    for w in writes:
        if w.drop is not None:
            for seq in range(*w.drop):
                stored.pop(seq, None)
        stored.update(w.chunks)
    return stored


__all__ = ["CUT_PREFIX", "DEFAULT_MAX_BYTES", "OutputCap", "OutputWrite", "cut_line", "joined", "rebuilt"]
