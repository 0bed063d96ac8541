"""The janitor: a tiny forked process per worker that takes the worker's jobs down with it.

Jobs run in their own sessions so a terminal's Ctrl+C does not reach them, which also means
nothing stops them if their worker is SIGKILLed. The worker records each running job's process
group in a small table of shared memory (an anonymous MAP_SHARED mapping made before the fork);
the janitor only waits for end-of-file on a pipe whose write end the worker holds. When it comes
(the worker exited or was killed), the janitor terminates every group still in the table, then
exits. Cost: one fork per worker and no system call per job: the hot path never wakes the janitor.

A job's group is known only once its process exists, so before each attempt the worker also notes
the attempt it is about to start (:meth:`Janitor.expect`, a key made from the job's id and attempt
number), replaced by the group once the executor reports the spawn. A worker killed in between
leaves that key: the janitor then looks through ``/proc`` for processes whose environment names
that job and attempt (``QUEUECTL_JOB_ID``, ``QUEUECTL_ATTEMPT``: the subprocess executor gives every
job both) and terminates their groups too. Without it, a job started in the instant its worker was
killed ran on unsupervised, and again when its lease expired.
"""

from __future__ import annotations

import hashlib
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
        self._swap(0, pgid)

    def remove(self, pgid: int) -> None:
        self._swap(pgid, 0)

    def expect(self, job_id: str, attempt: int) -> int:
        """Note the attempt about to start; returns its entry, for :meth:`started` and :meth:`remove`."""
        entry = -attempt_key(job_id, attempt)
        self._swap(0, entry)
        return entry

    def started(self, entry: int, pgid: int) -> None:
        """The attempt noted as ``entry`` runs in process group ``pgid`` (one more group, if an
        executor reports a second spawn)."""
        if not self._swap(entry, pgid):
            self._swap(0, pgid)

    def _swap(self, old: int, new: int) -> bool:
        """The first slot holding ``old`` (0: a free one) holds ``new`` now; False if none did."""
        with self._lock:
            for slot in range(self._slots):
                if _SLOT.unpack_from(self._table, slot * _SLOT.size)[0] == old:
                    _SLOT.pack_into(self._table, slot * _SLOT.size, new)
                    return True
        return False

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
    entries = [e for (e,) in _SLOT.iter_unpack(table)]
    groups = {e for e in entries if e > 0} | _groups_of({-e for e in entries if e < 0})
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


def attempt_key(job_id: str, attempt: int) -> int:
    """A positive 56-bit key for one attempt of one job, the same in every process."""
    return int.from_bytes(hashlib.blake2b(f"{job_id}\0{attempt}".encode(), digest_size=7).digest(), "big")


def _groups_of(keys: set[int]) -> set[int]:
    """The process groups of the processes (of this user, on Linux) whose environment names one of
    these attempts: jobs started by a worker that was killed before it could note their group."""
    found: set[int] = set()
    if not keys:
        return found
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found  # no /proc: only the groups noted are taken down
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
            job_id, attempt = env.get(b"QUEUECTL_JOB_ID"), env.get(b"QUEUECTL_ATTEMPT")
            if job_id is not None and attempt is not None and attempt.isdigit() \
                    and attempt_key(job_id.decode("utf-8", "surrogateescape"), int(attempt)) in keys:
                found.add(os.getpgid(pid))
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return found


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
