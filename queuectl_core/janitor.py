"""The janitor: a tiny forked process per worker that takes the worker's jobs down with it.

Jobs run in their own sessions so a terminal's Ctrl+C does not reach them, which also means
nothing stops them if their worker is SIGKILLed. The worker tells its janitor each job's process
group over a pipe; when the pipe reaches end-of-file (the worker exited or was killed), the janitor
terminates every group still registered, then exits. Cost: one fork per worker, two tiny writes
per job.
"""

from __future__ import annotations

import os
import signal
import time


class Janitor:
    def __init__(self, grace: float = 2.0) -> None:
        r, w = os.pipe()
        # Forked with the stop signals blocked, so the worker's Python handlers (inherited) never
        # run in the janitor before it has set them to ignore; they stay blocked there.
        saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
            raise
        if pid == 0:  # the janitor
            try:
                os.close(w)
                _serve(r, grace)
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        os.close(r)
        self.pid = pid
        self._w: int | None = w

    def add(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def remove(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        if self._w is not None:
            try:
                os.write(self._w, line.encode())
            except OSError:
                pass

    def close(self) -> None:
        """The worker is exiting normally: nothing is registered, so the janitor just exits."""
        if self._w is not None:
            os.close(self._w)
            self._w = None
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


def _serve(r: int, grace: float) -> None:
    os.setsid()  # out of the worker's process group: a kill aimed at the group must not reach us
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    os.closerange(0, r)
    os.closerange(r + 1, 1 << 16)
    groups: set[int] = set()
    buf = b""
    while True:
        try:
            data = os.read(r, 4096)
        except InterruptedError:
            continue
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line[:1] == b"+":
                groups.add(int(line[1:]))
            elif line[:1] == b"-":
                groups.discard(int(line[1:]))
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
