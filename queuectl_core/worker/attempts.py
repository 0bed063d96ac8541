"""A worker's slots: the threads that run attempts, and what the worker's loop shares with each.

An attempt thread runs the executor and nothing else (no storage, no events): the executor spends
its time blocked in ``poll`` on the job's exit, its output and the thread's wake-up fd. The worker's
loop tells a slot to stop its job (a second Ctrl+C, `worker stop --now`, a lost lease, a cancel
request) by setting the slot's flag and writing to that wake-up fd; the executor then calls
``tick`` and stops the group. A finished attempt is queued for the loop, which is woken through
its own fd.

Threads are kept and handed the next attempt: starting a thread per job waits for it to start
(``Thread.start``), which cost ~0.6 ms a job in a drain of `true` (cProfile).
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING

from queuectl_core.interfaces import RunContext
from queuectl_core.jobs.records import AttemptResult

if TYPE_CHECKING:
    from queuectl_core.interfaces import Executor
    from queuectl_core.jobs.models import Job
    from queuectl_core.worker.janitor import Janitor
    from queuectl_core.worker.output import AttemptOutput

# Descriptors one running job holds (its output pipe, pidfd, log file, wake-up fd), and what the
# worker holds besides: the soft RLIMIT_NOFILE is raised to fit, within the hard limit.
FDS_PER_SLOT = 5
FDS_BASE = 64


def _ignore(data: bytes) -> None:
    """``RunContext.on_chunk`` where the storage keeps no output."""


class Wakeup:
    """A thread's wake-up fd: an eventfd on Linux (one descriptor), a pipe elsewhere."""

    __slots__ = ("r", "w")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self.r = self.w = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            self.r, self.w = os.pipe()
            os.set_blocking(self.r, False)
            os.set_blocking(self.w, False)

    def set(self) -> None:
        try:
            os.write(self.w, (1).to_bytes(8, sys.byteorder))
        except OSError:
            pass  # already pending (a full pipe, or a closed slot): the executor will tick

    def clear(self) -> None:
        try:
            os.read(self.r, 512)
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.r)
        if self.w != self.r:
            os.close(self.w)


class Slot:
    """One running attempt, shared by the worker's loop (which sets the flags and reads the rest)
    and the attempt's thread (which runs the executor and hands back ``result``)."""

    __slots__ = ("job", "token", "wakeup", "stop", "lease_lost", "cancel", "progress", "sent", "spawned",
                 "announced", "result", "output")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.token = job.lease_token or ""
        self.wakeup: Wakeup | None = None  # the attempt thread's, from when it takes the slot up
        self.stop = False  # tell the executor to stop the job now (tick returns True)
        self.lease_lost = False
        self.cancel = False
        self.progress: tuple[str, str] | None = None  # (log path, output so far), from the executor
        self.sent: tuple[str, str] | None = None  # the progress the last heartbeat stored
        self.spawned = False  # the executor reported the job's start (or the attempt is over)
        self.announced = False  # `claimed` has gone out
        self.result: AttemptResult | None = None
        self.output: AttemptOutput | None = None  # its output on the way to storage, when kept there

    def halt(self) -> None:
        self.stop = True
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup.set()  # else the thread taking the slot up sees ``stop`` itself

    def take_up(self, wakeup: Wakeup) -> None:
        """The attempt thread's side of :meth:`halt`: whichever runs first, the stop is seen."""
        wakeup.clear()
        self.wakeup = wakeup
        if self.stop:
            wakeup.set()

    def tick(self) -> bool:
        if self.wakeup is not None:
            self.wakeup.clear()
        return self.stop

    def on_output(self, log_path: str, tail: str) -> None:
        self.progress = (log_path, tail)


class _Runner:
    """An attempt thread's hand-off: the slot it is to run next, and a pipe that wakes it."""

    __slots__ = ("r", "w", "slot")

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.slot: Slot | None = None


class Attempts:
    """The attempt threads of one worker: :meth:`start` hands a slot to an idle thread (starting
    one when none is idle); finished slots come back in ``done``, and ``done_fd`` is written to."""

    def __init__(self, executor: Executor, janitor: Janitor, tick_interval: float, done_fd: int) -> None:
        self.executor = executor
        self.janitor = janitor
        self.tick_interval = tick_interval
        self.done_fd = done_fd
        self.done: deque[Slot] = deque()  # appended by attempt threads (append is atomic)
        # Set when a started job spawned (or its attempt ended), so the loop can announce it.
        self.spawned = threading.Event()
        self._idle: deque[_Runner] = deque()  # threads waiting for a slot (appended by themselves)
        self._runners: list[_Runner] = []

    def start(self, slot: Slot) -> None:
        """Run ``slot``'s attempt on an idle thread, or a new one."""
        if self._idle:
            runner = self._idle.popleft()
        else:
            runner = _Runner()
            self._runners.append(runner)
            threading.Thread(target=self._serve, args=(runner,), name=f"slot-{len(self._runners)}",
                             daemon=True).start()
        runner.slot = slot
        # A pipe rather than a queue: a pipe's writer wakes the reader on its own CPU (a sync
        # wake-up), and the loop blocks right after; a futex wake-up crossed to the other CPU.
        os.write(runner.w, b"\0")

    def close(self) -> None:
        """Idle threads end (a worker run in-process must not leave them behind)."""
        for runner in self._runners:
            runner.slot = None
            os.write(runner.w, b"\0")
        self._runners = []
        self._idle.clear()

    def _serve(self, runner: _Runner) -> None:
        # One wake-up fd per thread, not per job: creating one per job cost ~0.2 ms a job in a
        # drain of `true` (cProfile, GIL waits included).
        wakeup = Wakeup()
        try:
            while True:
                os.read(runner.r, 1)
                slot, runner.slot = runner.slot, None
                if slot is None:
                    return
                slot.take_up(wakeup)
                self._attempt(slot, wakeup)
                self._idle.append(runner)  # before the loop hears of this slot's end
                self.done.append(slot)
                try:
                    os.write(self.done_fd, b"\0")
                except OSError:
                    pass  # the pipe is full of wake-ups already
        finally:
            wakeup.close()
            os.close(runner.r)
            os.close(runner.w)

    def _attempt(self, slot: Slot, wakeup: Wakeup) -> None:
        janitor = self.janitor
        attempt = slot.job.attempt_number
        # Noted before the job exists: a worker killed before on_spawn still has it taken down.
        expected = janitor.expect(slot.job.id, attempt)

        def on_spawn(pgid: int) -> None:
            janitor.started(expected, pgid)
            slot.spawned = True
            self.spawned.set()

        ctx = RunContext(attempt=attempt, tick_interval=self.tick_interval, tick=slot.tick,
                         wakeup_fd=wakeup.r, on_spawn=on_spawn, on_reaped=janitor.remove,
                         on_output=slot.on_output,
                         # Where the storage keeps the output, it goes there as it comes.
                         on_chunk=slot.output.add if slot.output is not None else _ignore,
                         output_kept=slot.output is not None)
        try:
            result = self.executor.run(slot.job, ctx)
        except BaseException as exc:  # an executor bug is a failed attempt, never a stranded slot
            result = AttemptResult(exit_code=None, error=f"executor error: {exc!r}")
        if not slot.spawned:
            janitor.remove(expected)  # the executor never reported the spawn
        slot.result = result
        slot.spawned = True  # an executor that never reports its spawn must not hold `claimed` up
        self.spawned.set()


def raise_fd_limit(slots: int) -> None:
    """Make room for every slot's descriptors: the soft limit up to the hard one if needed."""
    wanted = FDS_BASE + FDS_PER_SLOT * slots
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ImportError, ValueError, OSError):
        pass
