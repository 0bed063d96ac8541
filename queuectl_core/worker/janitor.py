"""The janitor: a tiny forked process per worker that takes the worker's jobs down with it.

Jobs run in their own sessions so a terminal's Ctrl+C does not reach them, which also means
nothing stops them if their worker is SIGKILLed. The worker records each running job's process
group in a small table of shared memory (an anonymous MAP_SHARED mapping made before the fork);
the janitor only waits for end-of-file on a pipe whose write end the worker holds. When it comes
(the worker exited or was killed), the janitor terminates every group still in the table, then
exits. Cost: one fork per worker and no system call per job: the hot path never wakes the janitor.
"""

from __future__ import annotations

import mmap
import os
import signal
import struct
import threading
import time

from queuectl_core.worker.signals import HANDLED, held

SLOTS = 64  # process groups one worker can have running at once, at least (more with --slots)
_SLOT = struct.Struct("=q")


class Janitor:
    def __init__(self, grace: float = 2.0, slots: int = 1) -> None:
        self._slots = max(SLOTS, slots)
        self._table = mmap.mmap(-1, self._slots * _SLOT.size)  # anonymous and shared across fork()
        self._lock = threading.Lock()  # a worker's attempt threads add and remove at once
        r, w = os.pipe()
        # Forked with the stop signals blocked, so the worker's Python handlers (inherited) never
        # run in the janitor before it has set them to ignore; they stay blocked there.
        with held():
            pid = os.fork()
            if pid == 0:  # the janitor
                try:
                    os.close(w)
                    _serve(r, grace, self._table)
                finally:
                    os._exit(0)
        os.close(r)
        self.pid = pid
        self._w: int | None = w

    def add(self, pgid: int) -> None:
        with self._lock:
            for slot in range(self._slots):
                if _SLOT.unpack_from(self._table, slot * _SLOT.size)[0] == 0:
                    _SLOT.pack_into(self._table, slot * _SLOT.size, pgid)
                    return

    def remove(self, pgid: int) -> None:
        with self._lock:
            for slot in range(self._slots):
                if _SLOT.unpack_from(self._table, slot * _SLOT.size)[0] == pgid:
                    _SLOT.pack_into(self._table, slot * _SLOT.size, 0)
                    return

    def close(self) -> None:
        """The worker is exiting normally: nothing is registered, so the janitor just exits."""
        if self._w is not None:
            os.close(self._w)
            self._w = None
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


def _serve(r: int, grace: float, table: mmap.mmap) -> None:
    os.setsid()  # out of the worker's process group: a kill aimed at the group must not reach us
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_IGN)
    os.closerange(0, r)
    os.closerange(r + 1, 1 << 16)
    while True:  # nothing is ever written: this read returns only at end-of-file
        try:
            if not os.read(r, 64):
                break
        except InterruptedError:
            continue
    groups = {g for (g,) in _SLOT.iter_unpack(table) if g > 0}
    if not groups:
        return
    for pgid in groups:
        _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        groups = {g for g in groups if _killpg(g, 0)}
        time.sleep(0.05)
    for pgid in groups:
        _killpg(pgid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
