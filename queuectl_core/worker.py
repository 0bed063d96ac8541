"""The worker: claim a job under a lease, run it while renewing the lease, record the outcome.

Shutdown: the first SIGINT/SIGTERM/SIGHUP (or ``queuectl worker stop``) means claim nothing more and let
the running job finish; the second stops the job's process group at once and releases the job.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Callable, TypeVar

from queuectl_core.errors import StorageError
from queuectl_core.interfaces import RunContext
from queuectl_core.models import UNFINISHED_STATES, AttemptResult, EventKind, Job, JobEvent, JobState, WorkerInfo
from queuectl_core.plugins import emit
from queuectl_core.signals import GRACEFUL, HANDLED, IMMEDIATE

if TYPE_CHECKING:
    from queuectl_core.app import App
    from queuectl_core.janitor import Janitor

T = TypeVar("T")
HOUSEKEEPING_SECONDS = 1.0  # how often a worker says it is alive, checks for stop, recovers leases
# After a job, `worker stop` is checked before the next claim unless it was checked this recently:
# a stopping worker claims nothing more, and a drain of tiny jobs pays at most ~5 extra writes/s.
STOP_CHECK_SECONDS = 0.2
BURST_RECHECK_SECONDS = 0.02  # a burst worker waiting only on other workers' running jobs


class Worker:
    def __init__(self, app: App, *, burst: bool = False) -> None:
        self.app = app
        self.storage = app.storage
        self.executor = app.executor
        self.backoff = app.backoff
        self.burst = burst
        self.lease = float(app.config["lease_seconds"])
        self.poll = app.config["poll_interval_ms"] / 1000
        self.pid = os.getpid()
        self.id = f"worker-{self.pid}"
        self.signals = 0  # stop requests by signal: 1 graceful, 2 or more immediate
        self.stop_requested = False  # by `queuectl worker stop`
        self._sig_r, self._sig_w = os.pipe()
        self._janitor: Janitor = None  # type: ignore[assignment]  # set first thing in run()
        self._last_storage_error = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self.signals > 0 or self.stop_requested

    def _on_signal(self, signum: int, frame: object) -> None:
        before = self.signals
        if signum == GRACEFUL:
            self.signals = max(self.signals, 1)
        elif signum == IMMEDIATE:
            self.signals = max(self.signals, 2)
        else:
            self.signals += 1
        if before == 0 and self.signals == 1:
            name = "stop request" if signum == GRACEFUL else signal.Signals(signum).name
            emit(JobEvent(EventKind.WORKER_STOPPING, worker_id=self.id,
                          message=f"{name}: finishing the current job; signal again to stop now"))

    def _install_signals(self) -> None:
        os.set_blocking(self._sig_w, False)
        os.set_blocking(self._sig_r, False)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        self._old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED}
        # `worker start` keeps these blocked until now, so one sent during start-up is not lost.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)

    def _drain_signal_pipe(self) -> None:
        try:
            while os.read(self._sig_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def run(self) -> int:
        """Work until stopped (or, with burst, until nothing is left to do). Returns the exit code."""
        from queuectl_core.janitor import Janitor

        self._install_signals()
        self._janitor = Janitor()
        started = self.storage.now()
        info = WorkerInfo(self.id, socket.gethostname(), self.pid, started, started)
        self._storage_call(lambda: self.storage.register_worker(info), until=lambda: self.stopping)
        emit(JobEvent(EventKind.WORKER_STARTED, worker_id=self.id, message="burst" if self.burst else None))
        try:
            self._loop()
        finally:
            try:
                self.storage.unregister_worker(self.id)
            except StorageError:
                pass
            self._janitor.close()
            emit(JobEvent(EventKind.WORKER_STOPPED, worker_id=self.id))
            self._restore_signals()
        return 0

    def _restore_signals(self) -> None:
        """Leave the process as we found it (a worker run in-process, by a test or a plugin)."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._sig_r)
        os.close(self._sig_w)

    def _loop(self) -> None:
        next_housekeeping = last_housekeeping = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_SECONDS
                last_housekeeping = now
                self._housekeeping(None)
                if self.stopping:
                    break
            job = self._storage_call(lambda: self.storage.claim(self.id, self.lease), until=lambda: self.stopping)
            if job is not None:
                self._run_job(job)
                next_housekeeping = min(next_housekeeping, last_housekeeping + STOP_CHECK_SECONDS)
                continue
            others_running = False
            if self.burst:
                counts = self._storage_call(self.storage.counts, default=None)
                if counts is not None and not any(counts[s] for s in UNFINISHED_STATES):
                    return
                # Nothing wakes us when another worker's job ends, so a burst worker waiting only on
                # those rechecks often: it should exit (or take the retry) as soon as they finish.
                others_running = counts is None or counts[JobState.PROCESSING] > 0
            self._idle(BURST_RECHECK_SECONDS if others_running else None)

    def _housekeeping(self, current_job: str | None) -> None:
        stop = self._storage_call(lambda: self.storage.worker_seen(self.id, current_job), default=False)
        if stop and not self.stop_requested:
            self.stop_requested = True
            emit(JobEvent(EventKind.WORKER_STOPPING, worker_id=self.id,
                          message="asked by `queuectl worker stop`; finishing the current job"))
        if current_job is None:
            recovered: list[Job] = self._storage_call(self.storage.recover_expired, default=[])
            for job in recovered:
                kind = EventKind.DEAD if job.state == JobState.DEAD else EventKind.FAILED
                emit(JobEvent(kind, job=job, worker_id=self.id))

    def _idle(self, at_most: float | None = None) -> None:
        # Never sleep past housekeeping: with a long poll_interval_ms an idle worker would otherwise
        # drop out of the live list and notice `worker stop` (or a wake-up for it) only a poll later.
        timeout = min(self.poll, HOUSEKEEPING_SECONDS, at_most if at_most is not None else HOUSEKEEPING_SECONDS)
        next_at = self._storage_call(self.storage.next_run_at, default=None)
        if next_at is not None:
            timeout = min(timeout, max(0.0, (next_at - self.storage.now()).total_seconds()))
        self.storage.wait_for_work(timeout, self._sig_r)
        self._drain_signal_pipe()

    def _storage_call(self, fn: Callable[[], T], default: T | None = None,
                      until: Callable[[], bool] | None = None) -> T:
        """Call storage; an outage is reported and waited out, never a crash and never a job failure.

        Without ``until`` one try is made and ``default`` returned on failure; with it, the call is
        retried with backoff until it succeeds or ``until()`` says to give up.
        """
        delay = 0.2
        while True:
            try:
                return fn()
            except StorageError as exc:
                now = time.monotonic()
                if now - self._last_storage_error > 10:
                    print(f"[{self.id}] storage unavailable, will retry: {exc}", file=sys.stderr, flush=True)
                self._last_storage_error = now
                if until is None or until():
                    return default  # type: ignore[return-value]
                self.storage.wait_for_work(delay, self._sig_r)
                self._drain_signal_pipe()
                delay = min(delay * 2, 5.0)

    # -- one job ----------------------------------------------------------------------------
    def _run_job(self, job: Job) -> None:
        emit(JobEvent(EventKind.CLAIMED, job=job, worker_id=self.id))
        token = job.lease_token or ""
        lease_lost = False
        beat_every = self.lease / 3
        last_beat = time.monotonic()
        last_seen = last_beat

        def tick() -> bool:
            nonlocal lease_lost, last_beat, last_seen
            self._drain_signal_pipe()
            if self.signals > 1:
                return True
            now = time.monotonic()
            if now - last_beat >= beat_every:
                try:
                    held = self.storage.heartbeat(job.id, token, self.lease)
                except StorageError:
                    held = True  # unreachable: keep running; the result is recorded once it is back
                else:
                    last_beat = now
                if not held:
                    lease_lost = True
                    return True
            if now - last_seen >= HOUSEKEEPING_SECONDS * 2:
                last_seen = now
                self._housekeeping(job.id)
            return False

        janitor = self._janitor
        ctx = RunContext(
            attempt=job.attempts,
            tick_interval=min(1.0, beat_every),
            tick=tick,
            wakeup_fd=self._sig_r,
            on_spawn=janitor.add if janitor else (lambda pgid: None),
            on_reaped=janitor.remove if janitor else (lambda pgid: None),
        )
        try:
            result = self.executor.run(job, ctx)
        except Exception as exc:  # an executor bug is a failed attempt, never a dead worker
            result = AttemptResult(exit_code=None, error=f"executor error: {exc!r}")
        if lease_lost:
            emit(JobEvent(EventKind.LEASE_LOST, job=job, worker_id=self.id, result=result))
            return
        if result.aborted:
            released = self._storage_call(lambda: self.storage.release(job.id, token))
            emit(JobEvent(EventKind.RELEASED, job=released or job, worker_id=self.id, result=result))
            return
        self._record(job, token, result)

    def _record(self, job: Job, token: str, result: AttemptResult) -> None:
        if result.ok:
            kind = EventKind.COMPLETED
            write = lambda: self.storage.complete(job.id, token, result)  # noqa: E731
        else:
            if job.attempts > job.max_retries:
                kind, retry_in = EventKind.DEAD, None
            else:
                kind, retry_in = EventKind.FAILED, self.backoff.delay(job.attempts, job)
            write = lambda: self.storage.fail(job.id, token, result, retry_in)  # noqa: E731
        # Keep trying through a storage outage: the result is recorded once storage is back, unless
        # the lease has meanwhile passed to another worker (then fencing rejects it, as it should).
        updated = self._storage_call(write, until=lambda: self.signals > 1)
        if updated is None:
            emit(JobEvent(EventKind.LEASE_LOST, job=job, worker_id=self.id, result=result))
        else:
            emit(JobEvent(kind, job=updated, worker_id=self.id, result=result))
