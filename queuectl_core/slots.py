"""``worker start --slots N``: one worker process running up to N jobs at once.

Each running attempt gets a thread that only runs the executor (which spends its time blocked in
``poll`` on the job's exit, its output and a wake-up fd); everything that touches storage or emits
events stays on the main thread, which batches it: free slots are filled by one ``claim_many``,
finished attempts are recorded by one ``apply_batch`` (each fenced by its own token), the leases of
all running jobs are renewed by one heartbeat statement and their cancel requests read in one query.
Every job keeps what a one-slot worker gives it: its own lease, fencing token, heartbeat, timeout,
log, cancel and release, each transition decided by :mod:`queuectl_core.lifecycle`.

The main thread tells a slot to stop its job (a second Ctrl+C, `worker stop --now`, a lost lease, a
cancel request) by setting the slot's flag and writing to the slot's own wake-up fd, which the
executor watches as ``RunContext.wakeup_fd``; the executor then calls ``tick`` and stops the group.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections import deque
from queue import SimpleQueue
from typing import TYPE_CHECKING, Sequence

from queuectl_core import lifecycle
from queuectl_core.errors import StorageError
from queuectl_core.interfaces import RunContext
from queuectl_core.models import AttemptResult, EventKind, JobEvent
from queuectl_core.plugins import emit
from queuectl_core.worker import (
    BURST_RECHECK_SECONDS,
    CANCEL_CHECK_SECONDS,
    HOUSEKEEPING_SECONDS,
    STOP_CHECK_SECONDS,
    Worker,
)

if TYPE_CHECKING:
    from queuectl_core.app import App
    from queuectl_core.models import Job

RECORD_RETRY_SECONDS = 0.5  # a result storage refused (an outage) is tried again this often
# An idle worker that has just claimed waits this long at most for its first job's spawn before
# it goes back to storage: that query (next_run_at before the idle wait, a round trip on
# PostgreSQL) taken at once held the attempt thread's spawn up ~1.2 ms (W4, slots 4, PostgreSQL).
SPAWN_WAIT_SECONDS = 0.05
# Descriptors one running job holds (its output pipe, pidfd, log file, wake-up fd), and what the
# worker holds besides: the soft RLIMIT_NOFILE is raised to fit, within the hard limit.
FDS_PER_SLOT = 5
FDS_BASE = 64


class _Wakeup:
    """A slot's wake-up fd: an eventfd on Linux (one descriptor), a pipe elsewhere."""

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


class _Slot:
    """One running attempt, shared by the main thread (which sets the flags) and the attempt's
    thread (which runs the executor and hands back ``result``)."""

    __slots__ = ("job", "token", "wakeup", "stop", "lease_lost", "cancel", "progress", "sent", "result")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.token = job.lease_token or ""
        self.wakeup: _Wakeup | None = None  # the attempt thread's, from when it takes the slot up
        self.stop = False  # tell the executor to stop the job now (tick returns True)
        self.lease_lost = False
        self.cancel = False
        self.progress: tuple[str, str] | None = None  # (log path, output so far), from the executor
        self.sent: tuple[str, str] | None = None  # the progress the last heartbeat stored
        self.result: AttemptResult | None = None

    def halt(self) -> None:
        self.stop = True
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup.set()  # else the thread taking the slot up sees ``stop`` itself

    def take_up(self, wakeup: _Wakeup) -> None:
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


class SlotWorker(Worker):
    """A worker that runs up to ``slots`` jobs at once (see the module's docstring)."""

    def __init__(self, app: App, *, slots: int, burst: bool = False, queues: Sequence[str] | None = None) -> None:
        super().__init__(app, burst=burst, queues=queues)
        self.slots = slots
        self._running: dict[str, _Slot] = {}
        self._done: deque[_Slot] = deque()  # filled by attempt threads (append is atomic)
        self._unwritten: list[tuple[_Slot, lifecycle.Change]] = []  # decided, not yet stored
        self._combined_failed = False  # the last record-and-claim raised: its reply may be lost
        # Attempt threads are kept and handed the next attempt: starting a thread per job waits
        # for it to start (Thread.start), which cost ~0.6 ms a job in a drain of `true` (cProfile).
        self._handoff: SimpleQueue[_Slot | None] = SimpleQueue()
        self._spawned = threading.Event()  # set by an attempt thread once its job is started (or over)
        self._threads = 0
        self._claim_many = getattr(self.storage, "claim_many", None)
        self._apply_batch = getattr(self.storage, "apply_batch", None)
        self._cancel_requests = getattr(self.storage, "cancel_requests", None)
        _raise_fd_limit(FDS_BASE + FDS_PER_SLOT * slots)

    def _janitor_slots(self) -> int:
        return self.slots

    # -- signals --------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: object) -> None:
        super()._on_signal(signum, frame)
        if self.signals > 1:
            self._halt_all()  # at once, even while the main thread waits on a locked database

    def _halt_all(self) -> None:
        for slot in list(self._running.values()):
            if not slot.stop:
                slot.halt()

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._run_slots()
        finally:
            for _ in range(self._threads):
                self._handoff.put(None)  # idle attempt threads end (a worker run in-process)

    def _run_slots(self) -> None:
        beat_every = self.lease / 3
        now = time.monotonic()
        self._next_housekeeping = self._last_housekeeping = 0.0
        next_beat = now + beat_every
        next_cancel_check = now + CANCEL_CHECK_SECONDS
        while True:
            self._drain_signal_pipe()
            if self.signals > 1:
                self._halt_all()
            self._finish()
            if self.stopping and not self._running and not self._unwritten:
                return
            now = time.monotonic()
            if now >= self._next_housekeeping:
                self._next_housekeeping = now + HOUSEKEEPING_SECONDS
                self._last_housekeeping = now
                self._housekeeping(next(iter(self._running), None))
                continue  # it may have asked to stop (now): look again before claiming
            if self._next_schedule_at is not None and self.storage.now() >= self._next_schedule_at:
                self._run_schedules()
            if self._running and now >= next_beat:
                next_beat = now + beat_every
                self._heartbeat()
            if self._running and now >= next_cancel_check:
                next_cancel_check = now + CANCEL_CHECK_SECONDS
                self._check_cancels()
            free = self.slots - len(self._running)
            claimed = 0
            if free and not self.stopping:
                was_idle = not self._running
                jobs = self._record_and_claim(free)
                if was_idle and jobs:
                    self._spawned.clear()
                for job in jobs:
                    self._start(job)
                claimed = len(jobs)
                if was_idle and jobs:
                    # Picked up from idle: let the first job start before storage is used again.
                    self._spawned.wait(SPAWN_WAIT_SECONDS)
            elif self._unwritten:
                self._record_all()
            deadline = self._next_housekeeping
            if self._running:
                deadline = min(deadline, next_beat, next_cancel_check)
            timeout = max(0.0, deadline - time.monotonic())
            if self._unwritten:
                timeout = min(timeout, RECORD_RETRY_SECONDS)
            if self.stopping or claimed == free:
                # Full (or stopping): only a finished attempt or a signal matters until then.
                self._wait_for_a_slot(timeout)
                continue
            others_running = False
            if self.burst and not claimed and not self._running and not self._unwritten:
                left = self._storage_call(lambda: self.storage.burst_remaining(self.queues), default=None)
                if left is not None and left[0] == 0:
                    return
                # Nothing wakes us when another worker's job ends (see Worker._loop).
                others_running = left is None or left[1] > 0
            if others_running:
                timeout = min(timeout, BURST_RECHECK_SECONDS)
            # A slot is free: until a wake-up (enqueue), a finished attempt (the signal pipe), the
            # next run_at, or what is due above.
            self._idle(timeout)

    def _wait_for_a_slot(self, timeout: float) -> None:
        if self._done:
            return
        try:
            select.select([self._sig_r], [], [], timeout)
        except (OSError, ValueError):
            time.sleep(min(timeout, 0.05))

    def _claim(self, free: int) -> list[Job]:
        if self._claim_many is not None:
            claim_many = self._claim_many
            return self._storage_call(lambda: claim_many(self.id, self.lease, free, queues=self.queues),
                                      default=[])
        jobs: list[Job] = []
        while len(jobs) < free:
            job = self._storage_call(lambda: self.storage.claim(self.id, self.lease, queues=self.queues))
            if job is None:
                break
            jobs.append(job)
        return jobs

    # -- attempts ---------------------------------------------------------------------------
    def _start(self, job: Job) -> None:
        slot = _Slot(job)
        self._running[job.id] = slot
        if self.signals > 1:
            slot.stop = True
        self._handoff.put(slot)
        if self._threads < len(self._running):
            self._threads += 1
            threading.Thread(target=self._attempts, name=f"slot-{self._threads}", daemon=True).start()
        # After the hand-off, as a one-slot worker announces it after the spawn: no event plugin
        # holds up a job's start. Its result is recorded (and announced) by this thread, later.
        emit(JobEvent(EventKind.CLAIMED, job=job, worker_id=self.id))

    def _attempts(self) -> None:
        # One wake-up fd per thread, not per job: creating one per job cost ~0.2 ms a job in a
        # drain of `true` (cProfile, GIL waits included).
        wakeup = _Wakeup()
        try:
            while True:
                slot = self._handoff.get()
                if slot is None:
                    return
                slot.take_up(wakeup)
                self._attempt(slot, wakeup)
        finally:
            wakeup.close()

    def _attempt(self, slot: _Slot, wakeup: _Wakeup) -> None:
        """An attempt's thread: the executor, and nothing else (no storage, no events)."""
        janitor = self._janitor
        ctx = RunContext(
            attempt=slot.job.attempts,
            tick_interval=min(1.0, self.lease / 3),
            tick=slot.tick,
            wakeup_fd=wakeup.r,
            on_spawn=self._on_spawn,
            on_reaped=janitor.remove if janitor else (lambda pgid: None),
            on_output=slot.on_output,
        )
        try:
            result = self.executor.run(slot.job, ctx)
        except Exception as exc:  # an executor bug is a failed attempt, never a dead worker
            result = AttemptResult(exit_code=None, error=f"executor error: {exc!r}")
        except BaseException as exc:  # never leave the main thread waiting for this slot
            result = AttemptResult(exit_code=None, error=f"executor error: {exc!r}")
        self._spawned.set()  # an executor that never spawns (or failed to) must not hold it up
        slot.result = result
        self._done.append(slot)
        try:
            os.write(self._sig_w, b"\0")
        except OSError:
            pass  # the pipe is full of wake-ups already

    def _on_spawn(self, pgid: int) -> None:
        if self._janitor is not None:
            self._janitor.add(pgid)
        self._spawned.set()

    def _finish(self) -> None:
        """Decide the outcome of every finished attempt; they are recorded together, with the
        claim of their successors when slots are to be filled (:meth:`_record_and_claim`)."""
        if self._done:
            # `worker stop` is checked before the next claim unless it was checked this recently.
            self._next_housekeeping = min(self._next_housekeeping, self._last_housekeeping + STOP_CHECK_SECONDS)
        while self._done:
            slot = self._done.popleft()
            self._running.pop(slot.job.id, None)
            job, result = slot.job, slot.result
            assert result is not None
            if slot.lease_lost:
                emit(JobEvent(EventKind.LEASE_LOST, job=job, worker_id=self.id, result=result))
            elif slot.cancel:
                self._unwritten.append((slot, lifecycle.cancelled(result)))
            elif result.aborted:
                self._unwritten.append((slot, lifecycle.release(job)))
            elif result.ok:
                self._unwritten.append((slot, lifecycle.complete(result)))
            else:
                self._unwritten.append((slot, lifecycle.fail(job, result, self._delay(job))))

    def _record_and_claim(self, free: int) -> list[Job]:
        """Record the finished attempts and claim up to ``free`` jobs, in one transaction when the
        storage can (one commit, one lock, for both)."""
        pending = self._unwritten
        if not pending or self._apply_and_claim is None:
            if pending:
                self._record_all()
            return self._claim(free)
        changes = [(slot.job.id, slot.token, change) for slot, change in pending]
        try:
            updated, jobs = self._apply_and_claim(changes, self.id, self.lease, free, queues=self.queues)
        except StorageError as exc:
            self._combined_failed = True
            self._record_failed(exc)
            return []
        self._combined_failed = False
        self._recorded(updated)
        return list(jobs)

    def _record_all(self) -> None:
        unstarted: list[Job] = []
        try:
            if self._combined_failed and self._apply_and_claim is not None:
                # The last record-and-claim may have committed with its reply lost: only that call
                # takes up the jobs it claimed (PostgreSQL). None is started here: no slot is free,
                # or the worker is stopping; they are handed back.
                changes = [(slot.job.id, slot.token, change) for slot, change in self._unwritten]
                updated, unstarted = self._apply_and_claim(changes, self.id, self.lease, 1, queues=self.queues)
            else:
                updated = self._apply(self._unwritten)
        except StorageError as exc:
            self._record_failed(exc)
            return
        self._combined_failed = False
        self._recorded(updated)
        for job in unstarted:
            self._release_unstarted(job)

    def _record_failed(self, exc: StorageError) -> None:
        # Kept through a storage outage and tried again each turn of the loop (the running jobs
        # are still heartbeaten meanwhile), unless the lease has passed to another worker (fencing
        # rejects it, as it should). A stop signal ends the retrying: the jobs are left to their
        # leases, which expire.
        pending = self._unwritten
        self._reachable_since = float("inf")
        now = time.monotonic()
        if now - self._last_storage_error > 10:
            print(f"[{self.id}] storage unavailable, will retry: {exc}", file=sys.stderr, flush=True)
        self._last_storage_error = now
        if self.signals > 0:
            for slot, _ in pending:
                print(f"[{self.id}] could not record the result of {slot.job.id}: stopping; its lease will"
                      " expire and the job will be retried", file=sys.stderr, flush=True)
            self._unwritten = []

    def _recorded(self, updated: Sequence[Job | None]) -> None:
        pending, self._unwritten = self._unwritten, []
        if self._reachable_since == float("inf"):
            self._reachable_since = time.monotonic()
        for (slot, change), job in zip(pending, updated):
            if change.transition == lifecycle.Transition.RELEASE:
                emit(JobEvent(EventKind.RELEASED, job=job or slot.job, worker_id=self.id, result=slot.result))
            elif job is None:
                emit(JobEvent(EventKind.LEASE_LOST, job=slot.job, worker_id=self.id, result=slot.result))
            elif change.event is not None:
                emit(JobEvent(change.event, job=job, worker_id=self.id, result=slot.result))

    def _apply(self, items: Sequence[tuple[_Slot, lifecycle.Change]]) -> list[Job | None]:
        changes = [(slot.job.id, slot.token, change) for slot, change in items]
        if self._apply_batch is not None:
            result: list[Job | None] = self._apply_batch(changes)
            return result
        return [self.storage.apply(job_id, token, change) for job_id, token, change in changes]

    def _heartbeat(self) -> None:
        """Renew every running job's lease in one batch; a job fenced out has lost its lease."""
        slots = [s for s in self._running.values() if s.result is None]
        if not slots:
            return
        items = []
        for slot in slots:
            progress = slot.progress
            # The output so far is stored when it changed since the last heartbeat; the rest
            # renew their leases in one statement.
            items.append((slot, lifecycle.heartbeat(self.lease, progress if progress != slot.sent else None)))
        held = self._storage_call(lambda: self._apply(items), default=None)
        if held is None:
            return  # unreachable: keep running; results are recorded once storage is back
        for (slot, change), job in zip(items, held):
            if job is None:
                slot.lease_lost = True
                slot.halt()
            else:
                if change.progress is not None:
                    slot.sent = change.progress
                if job.cancel_requested and not slot.cancel:
                    slot.cancel = True
                    slot.halt()

    def _check_cancels(self) -> None:
        """`cancel` promises about a second; heartbeats may be far apart. One read, never a write."""
        ids = [job_id for job_id, s in self._running.items() if s.result is None and not s.cancel]
        if not ids:
            return
        found: list[tuple[str, str | None]] = []
        if self._cancel_requests is not None:
            cancel_requests = self._cancel_requests
            found = self._storage_call(lambda: cancel_requests(ids), default=[])
        else:
            for job_id in ids:
                job = self._storage_call(lambda: self.storage.get(job_id), default=None)
                if job is not None and job.cancel_requested:
                    found.append((job.id, job.lease_token))
        for job_id, token in found:
            slot = self._running.get(job_id)
            if slot is not None and slot.token == token and not slot.cancel:
                slot.cancel = True
                slot.halt()


def _raise_fd_limit(wanted: int) -> None:
    """Make room for every slot's descriptors: the soft limit up to the hard one if needed."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ImportError, ValueError, OSError):
        pass
