"""The worker's loop: claim jobs under leases, run them, record their outcomes, keep house.

One loop for any number of slots (``worker start --slots N``, 1 by default). Each running attempt
has a thread of its own that only runs the executor (:mod:`queuectl_core.worker.attempts`);
everything that touches storage or emits events stays on this loop's thread, which batches it:
free slots are filled by one ``claim_many``, finished attempts are recorded by one
``apply_batch`` (each fenced by its own token) or, when slots are to be filled, together with
those claims by one ``apply_and_claim``; the leases of all running jobs are renewed by one
heartbeat and their cancel requests read in one query. Storage is used through
:func:`~queuectl_core.storage.capabilities.with_fallbacks`, so the path is the same whatever the backend
provides. Every job keeps its own lease, fencing token, heartbeat, timeout, log, cancel and
release; what an attempt's end does to its job is :func:`queuectl_core.jobs.lifecycle.outcome`.

Shutdown: the first SIGINT/SIGTERM/SIGHUP (or ``queuectl worker stop``) means claim nothing more
and let the running jobs finish; the second stops the jobs' process groups at once and releases
the jobs.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from queuectl_core.errors import StorageError
from queuectl_core.framework.plugins import debug_traceback, emit
from queuectl_core.jobs import lifecycle
from queuectl_core.jobs.models import EventKind, JobEvent
from queuectl_core.jobs.records import WorkerInfo
from queuectl_core.storage.capabilities import with_fallbacks
from queuectl_core.worker.attempts import Attempts, Slot, raise_fd_limit
from queuectl_core.worker.output import OutputWriter
from queuectl_core.worker.signals import GRACEFUL, HANDLED, IMMEDIATE

if TYPE_CHECKING:
    from datetime import datetime

    from queuectl_core.framework.app import App
    from queuectl_core.jobs.models import Job
    from queuectl_core.worker.notify import Notifications

T = TypeVar("T")
HOUSEKEEPING_SECONDS = 1.0  # how often a worker says it is alive, checks for stop, recovers leases
# After a job, `worker stop` is checked before the next claim unless it was checked this recently:
# a stopping worker claims nothing more, and a drain of tiny jobs pays at most ~5 extra writes/s.
STOP_CHECK_SECONDS = 0.2
BURST_RECHECK_SECONDS = 0.02  # a burst worker waiting only on other workers' running jobs
# A busy worker looks for expired leases this often (one indexed read; a write only when found).
BUSY_RECOVERY_SECONDS = 2.0
CANCEL_CHECK_SECONDS = 0.5  # a running job's worker looks for a cancel request this often
RETENTION_SECONDS = 60.0  # how often a worker applies retention.* (at most once a minute)
RECORD_RETRY_SECONDS = 0.5  # a result storage refused (an outage) is tried again this often
# How long the loop waits at most for claimed jobs to start before it announces them (`claimed`
# goes out once a job has started, so no event plugin holds up its start) and uses storage again.
SPAWN_WAIT_SECONDS = 0.05
# A job due longer ago than this that a claim did not take waits on needs (or a racing worker):
# an idle worker then waits as usual, for a wake-up or its poll, rather than claim again at once.
OVERDUE_SECONDS = 0.2


class Worker:
    """One worker process: up to ``slots`` jobs at once, through one loop (see the module's docstring)."""

    def __init__(self, app: App, *, slots: int = 1, burst: bool = False,
                 queues: Sequence[str] | None = None, resources: dict[str, str] | None = None) -> None:
        self.app = app
        self.queues = tuple(queues) if queues is not None else None  # None: every queue
        self.storage = with_fallbacks(app.storage)
        self.executor = app.executor
        self.backoff = app.backoff
        self.slots = slots
        self.burst = burst
        self._stop_message: str | None = None  # why a --burst worker left jobs behind
        self.lease = float(app.config["lease_seconds"])
        self.poll = app.config["poll_interval_ms"] / 1000
        self.pid = os.getpid()
        self.id = f"worker-{self.pid}"
        self.signals = 0  # stop requests by signal: 1 graceful, 2 or more immediate
        self.stop_requested = False  # by `queuectl worker stop`
        # Signals and finished attempts both wake the loop through this pipe.
        self._sig_r, self._sig_w = os.pipe()
        self._attempts: Attempts | None = None  # from run()
        from queuectl_core.worker.limits import LimitDefaults

        self._limits = LimitDefaults(self.storage, app.config)
        self._running: dict[str, Slot] = {}
        self._unannounced: list[Slot] = []  # started, `claimed` not yet announced
        self._announce_by = 0.0
        self._unwritten: list[tuple[Slot, lifecycle.Change]] = []  # decided, not yet stored
        # The last record-and-claim raised: its reply may have been lost after the commit, and only
        # apply_and_claim takes up the jobs that call claimed (PostgreSQL), so it is retried as is.
        self._retry_combined = False
        self._last_storage_error = 0.0
        # When storage last became reachable after failing. Expired leases are taken back only
        # once it has been reachable for a whole lease: after an outage every worker gets a lease
        # period to record the results it held, so a finished job is never re-run by recovery.
        self._reachable_since = float("-inf")
        self._next_recovery = 0.0
        self._next_retention = 0.0  # at the first idle housekeeping, then once a minute
        self._next_housekeeping = self._last_housekeeping = 0.0
        self._next_schedule_at: datetime | None = None
        now = time.monotonic()
        self._next_beat = now + self.lease / 3
        self._next_cancel_check = now + CANCEL_CHECK_SECONDS
        # Running attempts' output, to the storage when it keeps it (queuectl_core.worker.output).
        self._output = OutputWriter(app.storage, app.config["logs.max_bytes"])
        raise_fd_limit(slots)
        self._notify: Notifications | None = None  # from run(): the notifiers' threads, if any
        # -- needs: what this worker declared ({name: spec}) and which instances its jobs hold --
        from queuectl_core.worker.resources import Resources

        self.resources = Resources(resources or {})

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
            self._emit(EventKind.WORKER_STOPPING, message=f"{name}: finishing the current job; signal again to stop now")
        if self.signals > 1:
            self._halt_all()  # at once, even while the loop waits on a locked database

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        """Broadcast this worker's event (built with the config, so emit need not copy it to add it)."""
        event = JobEvent(kind, worker_id=self.id, config=self.app.config, **fields)
        emit(event)
        if self._notify is not None:
            self._notify.offer(event)  # a put on a queue: the notifiers run in their own threads

    def _halt_all(self) -> None:
        for slot in list(self._running.values()):
            if not slot.stop:
                slot.halt()

    def _install_signals(self) -> None:
        os.set_blocking(self._sig_w, False)
        os.set_blocking(self._sig_r, False)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        self._old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED}
        # `worker start` keeps these blocked until now, so one sent during start-up is not lost.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)

    def _drain_signal_pipe(self) -> None:
        # One read empties it in practice (a wake-up is one byte); a full buffer is read again.
        try:
            while len(os.read(self._sig_r, 512)) == 512:
                pass
        except (BlockingIOError, OSError):
            pass

    def run(self) -> int:
        """Work until stopped (or, with burst, until nothing is left to do). Returns the exit code."""
        from queuectl_core.worker.janitor import Janitor
        from queuectl_core.worker.notify import Notifications

        self._install_signals()
        self._notify = Notifications.start(self.app, self.id)  # after: its threads' signal mask is the loop's
        janitor = Janitor(slots=self.slots)
        self._attempts = Attempts(self.executor, janitor, min(1.0, self.lease / 3), self._sig_w)
        started = self.storage.now()
        info = WorkerInfo(self.id, self.app.config["worker.host"], self.pid, started, started)
        self._storage_call(lambda: self.storage.register_worker(info), until=lambda: self.stopping)
        # -- needs: always, so a worker of a reused id never inherits another's declaration
        self._storage_call(lambda: self.storage.declare_resources(self.id, self.resources.declared),
                           until=lambda: self.stopping)
        from queuectl_core.jobs.needs import resources_text

        message = ", ".join(filter(None, ("burst" if self.burst else "",
                                          f"{self.slots} slots" if self.slots > 1 else "",
                                          resources_text(self.resources.declared) if self.resources.declared else "")))
        self._emit(EventKind.WORKER_STARTED, message=message or None)
        try:
            self._loop()
        finally:
            self._attempts.close()
            try:
                self.storage.unregister_worker(self.id)
            except StorageError:
                pass
            janitor.close()
            if self._notify is not None:
                self._notify.close()  # the outcomes' notifications written, what is due delivered
            self._emit(EventKind.WORKER_STOPPED, message=self._stop_message)
            self._restore_signals()
        return 0

    def _restore_signals(self) -> None:
        """Leave the process as we found it (a worker run in-process, by a test or a plugin)."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._sig_r)
        os.close(self._sig_w)

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        attempts = self._attempts
        assert attempts is not None
        while True:
            self._drain_signal_pipe()
            if self.signals > 1:
                self._halt_all()
            self._announce_started()
            self._finish()
            if self.stopping and not self._running and not self._unwritten:
                return
            now = time.monotonic()
            if now >= self._next_housekeeping:
                self._next_housekeeping = now + HOUSEKEEPING_SECONDS
                self._last_housekeeping = now
                self._housekeeping()
                continue  # it may have asked to stop (now): look again before claiming
            if self._schedule_due():
                self._run_schedules()  # a tick between housekeepings (--every below a second's slack)
            self._watch_running(now)
            free = 0 if self.stopping else self.slots - len(self._running)
            # The results of finished attempts go with the claims that refill their slots (one
            # transaction): nothing else is due before that claim, as it was all done above.
            claimed = self._record_and_claim(free) if free or self._unwritten else 0
            if 0 < claimed < free:
                # A slot is still free, so storage is used next (the idle wait): let a job just
                # claimed start first (a query then held its spawn up ~1.2 ms on PostgreSQL).
                attempts.spawned.wait(max(0.0, self._announce_by - time.monotonic()))
                self._announce_started()
            if claimed == free:
                # Full (or stopping): only a finished attempt or a signal matters until then.
                self._wait_for_a_slot(self._timeout())
                continue
            timeout = self._timeout()
            if self.burst and not claimed and not self._running and not self._unwritten:
                left = self._burst_left()
                if left is None:
                    return
                timeout = min(timeout, left)
            self._idle(timeout)

    def _timeout(self) -> float:
        """Until housekeeping is due, or a running job's heartbeat or cancel check, a started job's
        announcement, or a retry of held results."""
        deadline = self._next_housekeeping
        if self._running:
            deadline = min(deadline, self._next_beat, self._next_cancel_check)
        if self._unannounced:
            deadline = min(deadline, self._announce_by)
        timeout = max(0.0, deadline - time.monotonic())
        return min(timeout, RECORD_RETRY_SECONDS) if self._unwritten else timeout

    def _burst_left(self) -> float | None:
        """With --burst and nothing running here: None when nothing is left for this worker, else
        how long it may wait before looking again."""
        # What is left for this worker: its queues' running jobs, their unpaused queues'
        # pending/failed jobs that wait on nothing, and running jobs anywhere that a job of its
        # unpaused queues waits on. A paused queue's waiting jobs never hold it.
        left = self._storage_call(lambda: self.storage.burst_remaining(self.queues), default=None)
        if left is not None and left[0] == 0:
            return None
        if left is not None and left[1] == 0:
            # What is left may be only jobs that need more than this worker can ever be given.
            never = self._storage_call(lambda: self.storage.never_servable(self.id, self.queues), default=None)
            if never is not None and never == left[0]:
                jobs = "1 job left that needs" if never == 1 else f"{never} jobs left that need"
                self._stop_message = f"burst; {jobs} what this worker lacks"
                return None
        # Nothing wakes us when another worker's job ends, so a burst worker waiting only on those
        # rechecks often: it should exit (or take the retry) as soon as they finish.
        return BURST_RECHECK_SECONDS if left is None or left[1] > 0 else HOUSEKEEPING_SECONDS

    def _wait_for_a_slot(self, timeout: float) -> None:
        """Until an attempt ends, a signal, or ``timeout``."""
        if self._attempts is not None and self._attempts.done:
            return
        try:
            select.select([self._sig_r], [], [], timeout)
        except (OSError, ValueError):
            time.sleep(min(timeout, 0.05))

    def _idle(self, timeout: float) -> None:
        """A slot is free: wait for a wake-up (enqueue), a finished attempt or a signal (the pipe),
        the next run_at or schedule tick, or ``timeout``."""
        # Never sleep past housekeeping: with a long poll_interval_ms an idle worker would otherwise
        # drop out of the live list and notice `worker stop` (or a wake-up for it) only a poll later.
        timeout = min(self.poll, HOUSEKEEPING_SECONDS, timeout)
        next_at = self._storage_call(lambda: self.storage.next_run_at(queues=self.queues), default=None)
        if next_at is not None:
            due_in = (next_at - self.storage.now()).total_seconds()
            # -- needs: a job due a while ago that the claim just left is one whose needs this
            # worker cannot meet now: it is no reason to look again at once (that would spin).
            if due_in > -OVERDUE_SECONDS:
                timeout = min(timeout, max(0.0, due_in))
        if self._next_schedule_at is not None:
            timeout = min(timeout, max(0.0, (self._next_schedule_at - self.storage.now()).total_seconds()))
        self.storage.wait_for_work(timeout, self._sig_r)

    # -- claims and results ----------------------------------------------------------------
    def _record_and_claim(self, free: int) -> int:
        """Record the finished attempts and claim up to ``free`` jobs, in one transaction when both
        are to be done. Returns how many jobs were started."""
        pending = self._unwritten
        changes = [(slot.job.id, slot.token, change) for slot, change in pending]
        # After a lost reply only the same call takes up what it claimed; a worker with no slot to
        # fill (full or stopping) then hands those jobs back.
        limit = max(free, 1) if self._retry_combined and changes else free
        stored: list[Job | None] = []
        # An attempt's last output is stored with its outcome, in the same transaction; passed
        # only when there is some, so a storage that keeps no output never sees the argument.
        taken = self._output.take(slot.output for slot, _ in pending)
        output = {"output": [w for _, w in taken]} if taken else {}
        try:
            if not changes:
                jobs = self.storage.claim_many(self.id, self.lease, limit, queues=self.queues)
            elif limit:
                stored, jobs = self.storage.apply_and_claim(changes, self.id, self.lease, limit,
                                                            queues=self.queues, **output)
            else:
                stored, jobs = self.storage.apply_batch(changes, **output), []
        except StorageError as exc:
            self._output.give_back(taken)
            self._retry_combined = bool(changes and limit)
            self._storage_failed(exc)
            if self.signals > 0:
                # A stop signal ends the retrying: the jobs are left to their leases, which expire.
                for slot, _ in pending:
                    print(f"[{self.id}] could not record the result of {slot.job.id}: stopping; its lease"
                          " will expire and the job will be retried", file=sys.stderr, flush=True)
                self._unwritten = []
            return 0
        self._storage_reachable()
        self._retry_combined = False
        self._unwritten = []
        for (slot, change), job in zip(pending, stored):
            self._announce_outcome(slot, change, job)
        if not free or self.stopping:
            # A stop came meanwhile: a stopping worker finishes what runs and starts nothing more.
            for job in jobs:
                self._release_unstarted(job)
            return 0
        self._start(jobs)
        return len(jobs)

    def _start(self, jobs: Sequence[Job]) -> None:
        assert self._attempts is not None
        if not jobs:
            return
        now = time.monotonic()
        if not self._running:  # a job just claimed needs no heartbeat nor cancel check yet
            self._next_beat = now + self.lease / 3
            self._next_cancel_check = now + CANCEL_CHECK_SECONDS
        if not self._unannounced:
            self._announce_by = now + SPAWN_WAIT_SECONDS
        self._attempts.spawned.clear()
        for job in jobs:
            ready = self.resources.assign(job)  # -- needs: its instances, in its env
            if ready is None:
                self._release_unstarted(job, "its resources are still held here by a job this worker lost")
                continue
            ready = self._limits.apply(ready)  # the limits in force: its own, its queue's or the config's
            slot = Slot(ready)
            slot.output = self._output.open(ready)
            self._running[job.id] = slot
            self._attempts.start(slot)
            self._unannounced.append(slot)

    def _announce_started(self) -> None:
        """`claimed` for the jobs started since the last call. It goes out once the job has started
        (the executor reports its spawn), so no event plugin holds up a job's start (~0.1 ms of W4's
        pickup with the stdout plugin alone); from an executor that does not report it,
        SPAWN_WAIT_SECONDS after the claim or when the attempt ends. No thread wakes the loop for
        it: the loop looks when it wakes anyway, at the latest SPAWN_WAIT_SECONDS after a claim."""
        if not self._unannounced:
            return
        late = time.monotonic() >= self._announce_by
        waiting = []
        for slot in self._unannounced:
            if slot.spawned or late:
                self._announce(slot)
            else:
                waiting.append(slot)
        self._unannounced = waiting

    def _announce(self, slot: Slot) -> None:
        if not slot.announced:
            slot.announced = True
            self._emit(EventKind.CLAIMED, job=slot.job)

    def _finish(self) -> None:
        """Decide the outcome of every finished attempt; they are recorded together, with the
        claims of their successors when slots are to be filled (:meth:`_record_and_claim`)."""
        assert self._attempts is not None
        done = self._attempts.done
        if not done:
            return
        # `worker stop` is checked before the next claim unless it was checked this recently.
        self._next_housekeeping = min(self._next_housekeeping, self._last_housekeeping + STOP_CHECK_SECONDS)
        while done:
            slot = done.popleft()
            self._running.pop(slot.job.id, None)
            self.resources.release(slot.job.id)
            job, result = slot.job, slot.result
            assert result is not None
            self._announce(slot)  # `claimed` always comes before the outcome
            change = lifecycle.outcome(job, result, cancel_requested=slot.cancel, lease_lost=slot.lease_lost,
                                       delay=partial(self._delay, job))
            if change is None:
                self._storage_call(lambda: self._output.flush([slot.output]), default=None)
                self._announce_outcome(slot, None, None)
            else:
                self._unwritten.append((slot, change))

    def _announce_outcome(self, slot: Slot, change: lifecycle.Change | None, stored: Job | None) -> None:
        kind = lifecycle.announcement(change, stored)
        if kind is not None:
            # The result as decided (a limit's reason in words), when the outcome reworded it.
            result = change.result if change is not None and change.result is not None else slot.result
            self._emit(kind, job=stored or slot.job, result=result)

    def _delay(self, job: Job) -> float | None:
        """The backoff policy's delay before the next retry. A policy that fails is reported in one
        line naming it, and ``backoff_base ** k`` is used: the job is retried as the user
        configured rather than stranded or buried for a plugin's bug."""
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

    def _release_unstarted(self, job: Job, why: str = "the worker is stopping") -> None:
        """Hand back a job claimed that the worker will not start after all (it is stopping, or
        its instances are still held here by a job whose lease this worker lost): pending again,
        its attempt not counted. Through a storage outage this is retried until a second stop
        signal; then the job's lease expires."""
        change = lifecycle.release(job)
        released = self._storage_call(lambda: self.storage.apply(job.id, job.lease_token, change),
                                      until=lambda: self.signals > 1)
        self._emit(EventKind.RELEASED, job=released or job, message=f"not started: {why}")

    # -- running jobs -----------------------------------------------------------------------
    def _watch_running(self, now: float) -> None:
        """Heartbeats and cancel checks for the running jobs, when due."""
        if not self._running:
            return
        if now >= self._next_beat:
            self._next_beat = now + self.lease / 3
            self._heartbeat()
        if now >= self._next_cancel_check:
            self._next_cancel_check = now + CANCEL_CHECK_SECONDS
            self._check_cancels()
        if self._output.due(now):  # what the running jobs printed since, for `logs` on any host
            self._storage_call(lambda: self._output.flush(s.output for s in self._running.values()), default=None)

    def _heartbeat(self) -> None:
        """Renew every running job's lease in one batch; a job fenced out has lost its lease."""
        slots = [s for s in self._running.values() if s.result is None]
        if not slots:
            return
        # The output so far is stored when it changed since the last heartbeat; the rest renew
        # their leases alone.
        changes = [lifecycle.heartbeat(self.lease, s.progress if s.progress != s.sent else None) for s in slots]
        held = self._storage_call(lambda: self.storage.apply_batch(
            [(s.job.id, s.token, c) for s, c in zip(slots, changes)]), default=None)
        if held is None:
            return  # unreachable: keep running; results are recorded once storage is back
        for slot, change, job in zip(slots, changes, held):
            if job is None:
                slot.lease_lost = True
                slot.halt()
                continue
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
        found: list[tuple[str, str | None]] = self._storage_call(lambda: self.storage.cancel_requests(ids),
                                                                 default=[])
        for job_id, token in found:
            slot = self._running.get(job_id)
            if slot is not None and slot.token == token and not slot.cancel:
                slot.cancel = True
                slot.halt()

    # -- housekeeping -----------------------------------------------------------------------
    def _housekeeping(self) -> None:
        current_job = next(iter(self._running), None)
        stop = self._storage_call(lambda: self.storage.worker_seen(self.id, current_job), default=0)
        if stop == 2 and self.signals < 2:
            # `worker stop --now`: as a second Ctrl+C, the running jobs are stopped and released.
            self.stop_requested = True
            self.signals = 2
            self._halt_all()
            self._emit(EventKind.WORKER_STOPPING, message="asked by `queuectl worker stop --now`; releasing the current job")
        elif stop and not self.stop_requested:
            self.stop_requested = True
            self._emit(EventKind.WORKER_STOPPING, message="asked by `queuectl worker stop`; finishing the current job")
        self._recover_expired(busy=current_job is not None)
        self._run_schedules()
        if current_job is None:
            self._apply_retention()

    def _schedule_due(self) -> bool:
        return self._next_schedule_at is not None and self.storage.now() >= self._next_schedule_at

    def _run_schedules(self) -> None:
        """Every worker takes part in schedules; the storage makes each tick exactly once."""
        from queuectl_core.control.scheduling import run_due

        try:
            enqueued, self._next_schedule_at = run_due(self.storage, self.app.config["max_retries"])
        except StorageError:
            return
        for job in enqueued:
            self._emit(EventKind.ENQUEUED, job=job, message="schedule")

    def _apply_retention(self) -> None:
        """retention.completed / retention.dead, at most once a minute, by an idle worker. Every
        worker may do it: a purge deletes each row once, whoever gets there first."""
        now = time.monotonic()
        if now < self._next_retention:
            return
        self._next_retention = now + RETENTION_SECONDS
        from queuectl_core.control import actions
        from queuectl_core.jobs.models import JobState

        config = self.app.config
        for state, key in ((JobState.COMPLETED, "retention.completed"), (JobState.DEAD, "retention.dead")):
            age = config[key]
            if age > 0:
                # A bounded batch: a backlog is worked off minute by minute, never in one long lock.
                self._storage_call(lambda: actions.purge(self.storage, age, [state], executor=self.executor,
                                                                 limit=10_000),
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
                self._emit(change.event, job=updated)

    # -- storage outages --------------------------------------------------------------------
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
                self._storage_failed(exc)
                if until is None or until():
                    return default  # type: ignore[return-value]
                self.storage.wait_for_work(delay, self._sig_r)
                self._drain_signal_pipe()
                # Never longer than a third of a lease: after an outage a held result must be recorded
                # before another worker may recover the job (see _recover_expired).
                delay = min(delay * 2, 5.0, self.lease / 3)
            else:
                self._storage_reachable()
                return result

    def _storage_failed(self, exc: StorageError) -> None:
        self._reachable_since = float("inf")
        now = time.monotonic()
        if now - self._last_storage_error > 10:
            print(f"[{self.id}] storage unavailable, will retry: {exc}", file=sys.stderr, flush=True)
        self._last_storage_error = now

    def _storage_reachable(self) -> None:
        if self._reachable_since == float("inf"):
            self._reachable_since = time.monotonic()
