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
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from queuectl_core import lifecycle
from queuectl_core.errors import StorageError
from queuectl_core.interfaces import RunContext
from queuectl_core.models import AttemptResult, EventKind, Job, JobEvent, WorkerInfo
from queuectl_core.plugins import debug_traceback, emit
from queuectl_core.signals import GRACEFUL, HANDLED, IMMEDIATE

if TYPE_CHECKING:
    from datetime import datetime

    from queuectl_core.app import App
    from queuectl_core.janitor import Janitor

T = TypeVar("T")
HOUSEKEEPING_SECONDS = 1.0  # how often a worker says it is alive, checks for stop, recovers leases
# After a job, `worker stop` is checked before the next claim unless it was checked this recently:
# a stopping worker claims nothing more, and a drain of tiny jobs pays at most ~5 extra writes/s.
STOP_CHECK_SECONDS = 0.2
BURST_RECHECK_SECONDS = 0.02  # a burst worker waiting only on other workers' running jobs
# A busy worker looks for expired leases this often (one indexed read; a write only when found).
BUSY_RECOVERY_SECONDS = 2.0
CANCEL_CHECK_SECONDS = 0.5  # a running job's worker looks for a cancel request this often
RETENTION_SECONDS = 60.0  # how often a worker applies retention.* (spec: at most once a minute)


class Worker:
    def __init__(self, app: App, *, burst: bool = False, queues: Sequence[str] | None = None) -> None:
        self.app = app
        # -- scheduling (spec §11) --
        self.queues = tuple(queues) if queues is not None else None  # None: every queue
        self._next_schedule_at: datetime | None = None
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
        self._janitor: Janitor | None = None
        self._last_storage_error = 0.0
        # When storage last became reachable after failing. Expired leases are taken back only
        # once it has been reachable for a whole lease: after an outage every worker gets a lease
        # period to record the results it held, so a finished job is never re-run by recovery.
        self._reachable_since = float("-inf")
        self._next_recovery = 0.0
        self._next_retention = 0.0  # at the first idle housekeeping, then once a minute
        self._next_housekeeping = self._last_housekeeping = 0.0
        # The next job, claimed in the transaction that recorded the last one's result (_record).
        self._successor: Job | None = None
        self._apply_and_claim = getattr(self.storage, "apply_and_claim", None)

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
        self._janitor = Janitor(slots=self._janitor_slots())
        started = self.storage.now()
        info = WorkerInfo(self.id, socket.gethostname(), self.pid, started, started)
        self._storage_call(lambda: self.storage.register_worker(info), until=lambda: self.stopping)
        slots = self._janitor_slots()
        message = ", ".join(filter(None, ("burst" if self.burst else "", f"{slots} slots" if slots > 1 else "")))
        emit(JobEvent(EventKind.WORKER_STARTED, worker_id=self.id, message=message or None))
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

    def _janitor_slots(self) -> int:
        """How many process groups this worker may have running at once."""
        return 1

    def _restore_signals(self) -> None:
        """Leave the process as we found it (a worker run in-process, by a test or a plugin)."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._sig_r)
        os.close(self._sig_w)

    def _loop(self) -> None:
        # A job claimed with its predecessor's result (see _record) is handed back unstarted if a
        # stop came meanwhile: a stopping worker finishes what runs and starts nothing more.
        while not self.stopping or self._successor is not None:
            job, self._successor = self._successor, None
            if job is not None and self.stopping:
                self._release_unstarted(job)
                continue
            if job is None:
                now = time.monotonic()
                if now >= self._next_housekeeping:
                    self._next_housekeeping = now + HOUSEKEEPING_SECONDS
                    self._last_housekeeping = now
                    self._housekeeping(None)
                    if self.stopping:
                        break
                elif self._schedule_due():
                    self._run_schedules()  # a tick between housekeepings (--every below a second's slack)
                job = self._storage_call(lambda: self.storage.claim(self.id, self.lease, queues=self.queues),
                                         until=lambda: self.stopping)
            if job is not None:
                self._run_job(job)
                continue
            others_running = False
            if self.burst:
                # What is left for this worker: its queues' running jobs, their unpaused queues'
                # pending/failed jobs that wait on nothing, and running jobs anywhere that a job of
                # its unpaused queues waits on. A paused queue's waiting jobs never hold it.
                left = self._storage_call(lambda: self.storage.burst_remaining(self.queues), default=None)
                if left is not None and left[0] == 0:
                    return
                # Nothing wakes us when another worker's job ends, so a burst worker waiting only on
                # those rechecks often: it should exit (or take the retry) as soon as they finish.
                others_running = left is None or left[1] > 0
            # Wake for housekeeping when it is due (the stop check after a job comes due
            # STOP_CHECK_SECONDS later), so it runs while idle rather than between a wake-up for a
            # new job and its claim.
            at_most = max(0.0, self._next_housekeeping - time.monotonic())
            self._idle(min(at_most, BURST_RECHECK_SECONDS) if others_running else at_most)

    def _schedule_due(self) -> bool:
        return self._next_schedule_at is not None and self.storage.now() >= self._next_schedule_at

    def _may_claim_successor(self) -> bool:
        """Whether a finished job's result may be recorded together with the claim of the next job
        (one transaction, not two): only when nothing is due before that claim, as _loop would do
        first. That is a stop, the `worker stop` check after a job, housekeeping or a schedule tick."""
        if self.stopping:
            return False
        due = min(self._next_housekeeping, self._last_housekeeping + STOP_CHECK_SECONDS)
        return time.monotonic() < due and not self._schedule_due()

    def _release_unstarted(self, job: Job) -> None:
        """Hand back a job claimed with a result that the worker will not start after all (it is
        stopping): pending again, its attempt not counted. Through a storage outage this is retried
        until a second stop signal; then the job's lease expires."""
        change = lifecycle.release(job)
        released = self._storage_call(lambda: self.storage.apply(job.id, job.lease_token, change),
                                      until=lambda: self.signals > 1)
        emit(JobEvent(EventKind.RELEASED, job=released or job, worker_id=self.id,
                      message="not started: the worker is stopping"))

    def _housekeeping(self, current_job: str | None) -> None:
        stop = self._storage_call(lambda: self.storage.worker_seen(self.id, current_job), default=0)
        if stop == 2 and self.signals < 2:
            # `worker stop --now`: as a second Ctrl+C, the running job is stopped and released.
            self.stop_requested = True
            self.signals = 2
            emit(JobEvent(EventKind.WORKER_STOPPING, worker_id=self.id,
                          message="asked by `queuectl worker stop --now`; releasing the current job"))
        elif stop and not self.stop_requested:
            self.stop_requested = True
            emit(JobEvent(EventKind.WORKER_STOPPING, worker_id=self.id,
                          message="asked by `queuectl worker stop`; finishing the current job"))
        self._recover_expired(busy=current_job is not None)
        self._run_schedules()
        if current_job is None:
            self._apply_retention()

    def _run_schedules(self) -> None:
        """Every worker takes part in schedules; the storage makes each tick exactly once."""
        from queuectl_core.scheduling import run_due

        try:
            enqueued, self._next_schedule_at = run_due(self.storage, self.app.config["max_retries"])
        except StorageError:
            return
        for job in enqueued:
            emit(JobEvent(EventKind.ENQUEUED, job=job, worker_id=self.id, message="schedule"))

    def _apply_retention(self) -> None:
        """retention.completed / retention.dead, at most once a minute, by an idle worker. Every
        worker may do it: a purge deletes each row once, whoever gets there first."""
        now = time.monotonic()
        if now < self._next_retention:
            return
        self._next_retention = now + RETENTION_SECONDS
        from queuectl_core import actions
        from queuectl_core.models import JobState

        config = self.app.config
        try:
            log_dir = config["subprocess.log_dir"]
        except Exception:  # another executor: its logs are its own
            log_dir = None
        for state, key in ((JobState.COMPLETED, "retention.completed"), (JobState.DEAD, "retention.dead")):
            age = config[key]
            if age > 0:
                # A bounded batch: a backlog is worked off minute by minute, never in one long lock.
                self._storage_call(lambda: actions.purge(self.storage, age, [state], log_dir, limit=10_000),
                                   default=None)

    def _recover_expired(self, busy: bool) -> None:
        """Take back jobs whose worker is gone (their lease expired), busy or idle: a dead worker's
        job must not wait for an idle worker. Throttled for busy workers; held back for a lease
        after an outage (see ``_reachable_since``)."""
        now = time.monotonic()
        if now - self._reachable_since < self.lease or (busy and now < self._next_recovery):
            return
        self._next_recovery = now + BUSY_RECOVERY_SECONDS
        expired: list[Job] = self._storage_call(lambda: self.storage.expired(), default=[])
        for job in expired:
            change = lifecycle.recover(job)
            updated = self._storage_call(lambda: self.storage.apply(job.id, job.lease_token, change), default=None)
            if updated is not None and change.event is not None:
                emit(JobEvent(change.event, job=updated, worker_id=self.id))

    def _idle(self, at_most: float | None = None) -> None:
        # Never sleep past housekeeping: with a long poll_interval_ms an idle worker would otherwise
        # drop out of the live list and notice `worker stop` (or a wake-up for it) only a poll later.
        timeout = min(self.poll, HOUSEKEEPING_SECONDS, at_most if at_most is not None else HOUSEKEEPING_SECONDS)
        next_at = self._storage_call(lambda: self.storage.next_run_at(queues=self.queues), default=None)
        if next_at is not None:
            timeout = min(timeout, max(0.0, (next_at - self.storage.now()).total_seconds()))
        if self._next_schedule_at is not None:
            timeout = min(timeout, max(0.0, (self._next_schedule_at - self.storage.now()).total_seconds()))
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
                result = fn()
            except StorageError as exc:
                now = time.monotonic()
                self._reachable_since = float("inf")
                if now - self._last_storage_error > 10:
                    print(f"[{self.id}] storage unavailable, will retry: {exc}", file=sys.stderr, flush=True)
                self._last_storage_error = now
                if until is None or until():
                    return default  # type: ignore[return-value]
                self.storage.wait_for_work(delay, self._sig_r)
                self._drain_signal_pipe()
                # Never longer than a third of a lease: after an outage a held result must be recorded
                # before another worker may recover the job (see _recover_expired).
                delay = min(delay * 2, 5.0, self.lease / 3)
            else:
                if self._reachable_since == float("inf"):
                    self._reachable_since = time.monotonic()
                return result

    # -- one job ----------------------------------------------------------------------------
    def _run_job(self, job: Job) -> None:
        # ``claimed`` goes out once the job has started (the executor reports its spawn), so no
        # event plugin holds up a job's start (~0.1 ms of W4's pickup with the stdout plugin alone);
        # from an executor that does not report it, at its first tick or when the attempt ends.
        announced = False

        def announce() -> None:
            nonlocal announced
            if not announced:
                announced = True
                emit(JobEvent(EventKind.CLAIMED, job=job, worker_id=self.id))

        janitor = self._janitor

        def on_spawn(pgid: int) -> None:
            if janitor:
                janitor.add(pgid)
            announce()

        token = job.lease_token or ""
        lease_lost = cancel = False
        beat_every = self.lease / 3
        last_beat = time.monotonic()
        last_seen = last_cancel_check = last_beat
        progress: tuple[str, str] | None = None  # (log path, output so far), for the next heartbeat

        def on_output(log_path: str, tail: str) -> None:
            nonlocal progress
            progress = (log_path, tail)

        def tick() -> bool:
            nonlocal lease_lost, cancel, last_beat, last_seen, last_cancel_check
            announce()
            self._drain_signal_pipe()
            if self.signals > 1:
                return True
            now = time.monotonic()
            if now - last_beat >= beat_every:
                try:
                    held = self.storage.apply(job.id, token, lifecycle.heartbeat(self.lease, progress))
                except StorageError:
                    # Unreachable: keep running; the result is recorded once it is back. This
                    # worker saw the outage, so it holds back recovery for a lease afterwards.
                    self._reachable_since = float("inf")
                else:
                    last_beat = now
                    if self._reachable_since == float("inf"):
                        self._reachable_since = now
                    if held is None:
                        lease_lost = True
                        return True
                    if held.cancel_requested:
                        cancel = True
                        return True
            if now - last_cancel_check >= CANCEL_CHECK_SECONDS:
                # `cancel` promises about a second; heartbeats may be far apart (lease / 3). One
                # read by primary key, and never a write.
                last_cancel_check = now
                try:
                    current = self.storage.get(job.id)
                except StorageError:
                    current = None
                if current is not None and current.lease_token == token and current.cancel_requested:
                    cancel = True
                    return True
            if now - last_seen >= HOUSEKEEPING_SECONDS * 2:
                last_seen = now
                self._housekeeping(job.id)
            return False

        ctx = RunContext(
            attempt=job.attempts,
            tick_interval=min(1.0, beat_every),
            tick=tick,
            wakeup_fd=self._sig_r,
            on_spawn=on_spawn,
            on_reaped=janitor.remove if janitor else (lambda pgid: None),
            on_output=on_output,
        )
        try:
            result = self.executor.run(job, ctx)
        except Exception as exc:  # an executor bug is a failed attempt, never a dead worker
            result = AttemptResult(exit_code=None, error=f"executor error: {exc!r}")
        finally:
            announce()
        # After a job, `worker stop` is checked before the next claim unless it was checked
        # STOP_CHECK_SECONDS ago or less (until then the next claim may go with this result).
        self._next_housekeeping = min(self._next_housekeeping, self._last_housekeeping + STOP_CHECK_SECONDS)
        if lease_lost:
            emit(JobEvent(EventKind.LEASE_LOST, job=job, worker_id=self.id, result=result))
            return
        if cancel:
            self._record(job, token, result, lifecycle.cancelled(result))
            return
        if result.aborted:
            change = lifecycle.release(job)
            released = self._storage_call(lambda: self.storage.apply(job.id, token, change))
            emit(JobEvent(EventKind.RELEASED, job=released or job, worker_id=self.id, result=result))
            return
        if result.ok:
            self._record(job, token, result, lifecycle.complete(result))
        else:
            self._record(job, token, result, lifecycle.fail(job, result, self._delay(job)))

    def _delay(self, job: Job) -> float | None:
        """The backoff policy's delay before the next retry. A policy that fails is reported in one
        line naming it, and the spec's ``backoff_base ** k`` is used: the job is retried as the
        user configured rather than stranded or buried for a plugin's bug."""
        if not lifecycle.should_retry(job):
            return None
        try:
            return float(self.backoff.delay(job.attempts, job))
        except Exception as exc:
            name = self.app.config["backoff"]
            try:
                plugin = self.app.registries.backoffs.get(name).plugin
            except Exception:
                plugin = "?"
            print(f"[{self.id}] backoff policy {name!r} (plugin {plugin!r}) failed in delay(): {exc!r};"
                  f" using backoff_base ** {job.attempts}", file=sys.stderr, flush=True)
            debug_traceback()
            return lifecycle.fallback_delay(job.attempts, self.app.config["backoff_base"])

    def _record(self, job: Job, token: str, result: AttemptResult, change: lifecycle.Change) -> None:
        # Keep trying through a storage outage: the result is recorded once storage is back, unless
        # the lease has meanwhile passed to another worker (then fencing rejects it, as it should).
        # A stop signal ends the retrying: the job is then left to its lease, which expires.
        written = False
        combined = False  # the result is being written with the next claim (apply_and_claim)

        def write() -> Job | None:
            nonlocal written, combined
            # One transaction for both (one commit a job, not two; on PostgreSQL 4 round trips
            # instead of 6). Once tried, retried the same way: if the reply was lost after the
            # commit, only apply_and_claim takes up the job it claimed (PostgreSQL).
            apply_and_claim = self._apply_and_claim
            if apply_and_claim is not None and (combined or self._may_claim_successor()):
                combined = True
                (out,), jobs = apply_and_claim([(job.id, token, change)], self.id, self.lease, 1, queues=self.queues)
                self._successor = jobs[0] if jobs else None  # (released unstarted if a stop came: _loop)
            else:
                out = self.storage.apply(job.id, token, change)
            written = True
            return out

        updated = self._storage_call(write, until=lambda: self.signals > 0)
        if not written:
            print(f"[{self.id}] could not record the result of {job.id}: stopping; its lease will expire"
                  " and the job will be retried", file=sys.stderr, flush=True)
        elif updated is None:
            emit(JobEvent(EventKind.LEASE_LOST, job=job, worker_id=self.id, result=result))
        elif change.event is not None:
            emit(JobEvent(change.event, job=updated, worker_id=self.id, result=result))
