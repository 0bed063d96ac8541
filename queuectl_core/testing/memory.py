"""An in-memory storage: the smallest complete one, to read and to copy.

It implements the required :class:`~queuectl_core.interfaces.Storage` protocol and one optional
capability, ``AttemptHistory`` (every attempt of a job, which no fallback can know); every other
capability comes from core's fallbacks (:func:`~queuectl_core.storage.capabilities.with_fallbacks`),
and it passes :class:`~queuectl_core.testing.StorageConformance`. A backend for a real database
keeps the same shape: persist what :mod:`queuectl_core.jobs.lifecycle` decides, fenced and atomic, and
never decide anything itself.

Jobs live in one :class:`MemoryQueue`; every :class:`MemoryStorage` opened on it (one per worker
thread, as a database has one connection each) sees the same jobs. One lock makes every method a
transaction. Nothing survives the process: for tests and examples, not for work.
"""

from __future__ import annotations

import copy
import os
import select
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Sequence

from queuectl_core.errors import DuplicateJobError, UniqueKeyError, ValidationError
from queuectl_core.jobs import lifecycle
from queuectl_core.jobs.lifecycle import Change
from queuectl_core.jobs.models import Attempt, Job, JobState, NewJob, QueueInfo, Schedule, WorkerInfo
from queuectl_core.jobs.timeutil import UTC

WORKER_LIVE_SECONDS = 15.0  # a worker not seen for this long is not listed as live


@dataclass
class _Worker:
    info: WorkerInfo
    last_seen: datetime
    current_job: str | None = None  # what it last told worker_seen()
    stop: int = 0  # 1: stop after the current job, 2: stop now


class MemoryQueue:
    """What a database would hold, shared by every MemoryStorage opened on it."""

    def __init__(self) -> None:
        self.lock = threading.Condition(threading.RLock())
        self.jobs: dict[str, Job] = {}
        self.parents: dict[str, dict[str, bool]] = {}  # child -> {parent: completed yet}
        self.queues: dict[str, tuple[int, bool]] = {}  # name -> (concurrency, paused)
        self.schedules: dict[str, Schedule] = {}
        self.workers: dict[str, _Worker] = {}
        self.history: dict[str, list[Attempt]] = {}  # job id -> its finished attempts, oldest first
        self.wakes = 0  # moves on every write that may make work available


class MemoryStorage:
    """The Storage protocol on a :class:`MemoryQueue` (a new one when none is given)."""

    def __init__(self, queue: MemoryQueue | None = None) -> None:
        self.q = queue if queue is not None else MemoryQueue()
        self._seen_wakes = self.q.wakes

    def _wake(self) -> None:
        """Idle workers waiting in wait_for_work return (called with the lock held)."""
        self.q.wakes += 1
        self.q.lock.notify_all()

    def now(self) -> datetime:
        return datetime.now(UTC)

    # -- jobs ------------------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        with self.q.lock:
            out = self._insert(jobs)
            if out:
                self._wake()
            return out

    def _insert(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Check everything first, then change anything: all or nothing."""
        q, ids = self.q, [j.id for j in jobs]
        for n, job_id in enumerate(ids):
            if job_id in q.jobs or job_id in ids[:n]:
                raise DuplicateJobError(job_id)
        keys: dict[str, str] = {}  # those of this batch so far
        for new in jobs:
            if new.unique_key is not None:
                holder = keys.get(new.unique_key) or self._holder(new.unique_key)
                if holder is not None:
                    raise UniqueKeyError(new.unique_key, holder)
                keys[new.unique_key] = new.id
        for new in jobs:
            for parent in new.after:
                if parent not in q.jobs and parent not in ids:
                    raise ValidationError(f"job {new.id!r}: 'after' names {parent!r}, and no such job exists")
        now = self.now()
        for new in jobs:
            met = {p: p in q.jobs and lifecycle.dependency_met(q.jobs[p].state) for p in new.after}
            if met:
                q.parents[new.id] = met
            q.queues.setdefault(new.queue, (0, False))
            run_at = new.run_at if new.run_at is not None else now + timedelta(seconds=new.delay or 0)
            q.jobs[new.id] = Job(
                id=new.id, command=new.command, state=JobState.PENDING, attempts=0, max_retries=new.max_retries,
                priority=new.priority, created_at=now, updated_at=now, run_at=run_at, timeout=new.timeout,
                queue=new.queue, waiting=sum(not m for m in met.values()), unique_key=new.unique_key,
                retry_on=new.retry_on, no_retry_on=new.no_retry_on, cwd=new.cwd, env=dict(new.env), tags=new.tags)
        # A parent that already ended: what the lifecycle makes of its new dependants.
        for parent in {p for new in jobs for p in new.after if p not in ids}:
            state = q.jobs[parent].state
            if not lifecycle.dependency_met(state):
                self._dependants(parent, lifecycle.dependants(parent, state))
        return [q.jobs[i] for i in ids]

    def get(self, job_id: str) -> Job | None:
        with self.q.lock:
            return self.q.jobs.get(job_id)

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  states: Sequence[JobState] | None = None, tag: str | None = None,
                  queue: str | None = None, before: str | None = None) -> list[Job]:
        wanted = set(states or ()) | ({state} if state is not None else set())
        with self.q.lock:
            jobs = [j for j in self.q.jobs.values()
                    if (not wanted or j.state in wanted) and (tag is None or tag in j.tags)
                    and (queue is None or j.queue == queue)]
            if before is not None:
                last = self.q.jobs.get(before)
                if last is None:
                    return []
                jobs = [j for j in jobs if (j.created_at, j.id) < (last.created_at, last.id)]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return jobs[:limit] if limit is not None else jobs

    def counts(self) -> dict[JobState, int]:
        counts = {s: 0 for s in JobState}
        with self.q.lock:
            for job in self.q.jobs.values():
                counts[job.state] += 1
        return counts

    def delete(self, job_ids: Sequence[str], states: Sequence[JobState]) -> list[Job] | None:
        with self.q.lock:
            jobs = [self.q.jobs.get(i) for i in dict.fromkeys(job_ids)]
            if any(j is None or j.state not in states for j in jobs):
                return None
            for j in jobs:
                if j is not None:
                    self.q.history.pop(j.id, None)
            return [self.q.jobs.pop(j.id) for j in jobs if j is not None]

    # -- claims and changes --------------------------------------------------------------------
    def _open(self, name: str, queues: Sequence[str] | None) -> bool:
        """Whether a worker of ``queues`` may claim from queue ``name`` now."""
        concurrency, paused = self.q.queues.get(name, (0, False))
        if paused or (queues is not None and name not in queues):
            return False
        running = sum(1 for j in self.q.jobs.values() if j.queue == name and j.state == JobState.PROCESSING)
        return concurrency == 0 or running < concurrency

    def _ready(self, queues: Sequence[str] | None) -> list[Job]:
        """Jobs a claim could take once due: runnable, waiting on nothing, in an open queue."""
        open_queues = {name: self._open(name, queues) for name in self.q.queues}
        return [j for j in self.q.jobs.values()
                if j.state in lifecycle.RUNNABLE_STATES and not j.waiting and open_queues.get(j.queue)]

    def claim(self, worker_id: str, lease_seconds: float, queues: Sequence[str] | None = None) -> Job | None:
        with self.q.lock:
            now = self.now()
            due = [j for j in self._ready(queues) if j.run_at <= now]
            if not due:
                return None
            job = min(due, key=lambda j: (-j.priority, j.run_at, j.id))
            worker = self.q.workers.get(worker_id)
            job = self.q.jobs[job.id] = replace(
                job, state=JobState.PROCESSING, attempts=job.attempts + 1, worker_id=worker_id,
                lease_token=os.urandom(8).hex(), lease_expires_at=now + timedelta(seconds=lease_seconds),
                cancel_requested=False, updated_at=now, last_attempt=job.last_attempt + 1,
                host=worker.info.hostname if worker else None, log_path=None, output_tail=None)
            return job

    def apply(self, job_id: str, token: str | None, change: Change) -> Job | None:
        return self._transaction([(job_id, token, change)], all_or_none=False)[0]

    def apply_many(self, changes: Sequence[tuple[str, str | None, Change]]) -> list[Job] | None:
        done = self._transaction(changes, all_or_none=True)
        return None if any(job is None for job in done) else [job for job in done if job is not None]

    def _transaction(self, changes: Sequence[tuple[str, str | None, Change]], all_or_none: bool) -> list[Job | None]:
        """Apply the changes as one transaction: an exception (a held unique key) or, when
        ``all_or_none``, one change fenced out puts everything back as it was."""
        with self.q.lock:
            saved = dict(self.q.jobs), copy.deepcopy(self.q.parents), copy.copy(self.q.history)
            try:
                done = [self._apply(job_id, token, change) for job_id, token, change in changes]
            except BaseException:
                self.q.jobs, self.q.parents, self.q.history = saved
                raise
            if all_or_none and None in done:
                self.q.jobs, self.q.parents, self.q.history = saved
                return done
            self._wake()
            return done

    def _apply(self, job_id: str, token: str | None, change: Change) -> Job | None:
        """The fenced compare-and-set every transition goes through (lock held)."""
        job, now = self.q.jobs.get(job_id), self.now()
        if job is None:
            return None
        expired = job.lease_expires_at is not None and job.lease_expires_at < now
        if (job.state not in change.from_states or (token is not None and job.lease_token != token)
                or (change.expired_only and not expired)):
            # A worker's final write repeated after a lost reply: the row already says so.
            repeated = (token is not None and change.idempotent and job.lease_token == token
                        and job.state == change.state and job.lease_expires_at is None)
            return job if repeated else None
        new = self.q.jobs[job_id] = self._changed(job, change, now)
        if change.ends_attempt:  # its history, in this transaction (a copy: the saved list stays as it was)
            self.q.history[job_id] = [*self.q.history.get(job_id, []), Attempt(
                job_id, new.last_attempt, job.updated_at, now, new.last_duration, new.last_exit_code, new.last_error,
                job.worker_id, job.host, new.log_path)]
        self._dependants(job_id, lifecycle.dependants_of(job_id, change))
        return new

    def _changed(self, job: Job, change: Change, now: datetime) -> Job:
        """``job`` with ``change`` written on it; fields the change leaves None stay as they are."""
        if change.state in lifecycle.HOLDING_STATES and job.state not in lifecycle.HOLDING_STATES:
            holder = self._holder(job.unique_key)
            if holder is not None:  # a restart or replay would hold the key twice
                raise UniqueKeyError(job.unique_key, holder)
        new: dict[str, Any] = {}
        if change.state is not None:
            new.update(state=change.state, updated_at=now)
        if change.attempts is not None:
            new["attempts"] = change.attempts
        if change.run_in is not None:
            new["run_at"] = now + timedelta(seconds=change.run_in)
        if change.lease_seconds is not None:
            new["lease_expires_at"] = now + timedelta(seconds=change.lease_seconds)
        elif change.clear_lease:
            new["lease_expires_at"] = None
        if change.clear_token:
            new.update(lease_token=None, worker_id=None)
        if change.clear_result:
            new.update(last_exit_code=None, last_error=None, last_duration=None, log_path=None, output_tail=None)
        if (r := change.result) is not None:
            new.update(last_exit_code=r.exit_code, last_error=change.reason if change.reason is not None else r.error,
                       log_path=r.log_path, output_tail=r.output_tail, last_duration=r.duration)
        elif change.reason is not None:
            new.update(last_exit_code=None, last_error=change.reason, last_duration=None)
        if change.progress is not None and change.result is None:
            new.update(log_path=change.progress[0], output_tail=change.progress[1])
        if change.cancel_requested is not None:
            new["cancel_requested"] = change.cancel_requested
        if change.command is not None:
            new["command"] = change.command
        return replace(job, **new)

    def _holder(self, key: str | None) -> str | None:
        """The job holding unique key ``key`` (one in lifecycle.HOLDING_STATES), if any."""
        return next((j.id for j in self.q.jobs.values() if key is not None and j.unique_key == key
                     and j.state in lifecycle.HOLDING_STATES), None)

    def _dependants(self, parent: str, change: Change | None) -> None:
        """Apply the lifecycle's ``change`` to every job still waiting on ``parent``, then to
        their own dependants in turn, down the chain (lock held: one transaction with the parent)."""
        now, frontier = self.now(), [(parent, change)]
        while frontier:
            p, c = frontier.pop(0)
            if c is None:
                continue
            waiting = [child for child, parents in self.q.parents.items() if parents.get(p) is False]
            for child in waiting:
                job = self.q.jobs.get(child)
                if c.parent_met:
                    self.q.parents[child][p] = True  # once per edge: a second completion releases nothing
                    if job is not None and job.waiting > 0:
                        self.q.jobs[child] = replace(job, waiting=job.waiting - 1)
                elif job is not None and job.waiting > 0 and job.state in c.from_states:
                    self.q.jobs[child] = self._changed(job, c, now)
                    frontier.append((child, lifecycle.dependants_of(child, c)))

    def attempts(self, job_id: str) -> list[Attempt]:
        """Every finished attempt of the job, oldest first (the ``AttemptHistory`` capability)."""
        with self.q.lock:
            return list(self.q.history.get(job_id, []))

    def expired(self, limit: int = 100) -> list[Job]:
        with self.q.lock:
            now = self.now()
            jobs = [j for j in self.q.jobs.values() if j.state == JobState.PROCESSING
                    and j.lease_expires_at is not None and j.lease_expires_at < now]
        return sorted(jobs, key=lambda j: (j.lease_expires_at or now, j.id))[:limit]

    def next_run_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        with self.q.lock:
            return min((j.run_at for j in self._ready(queues)), default=None)

    def _wanted(self, job: Job, queues: Sequence[str] | None) -> bool:
        """Whether a --burst worker of ``queues`` would run ``job``: one of its queues, unpaused."""
        return (queues is None or job.queue in queues) and not self.q.queues.get(job.queue, (0, False))[1]

    def burst_remaining(self, queues: Sequence[str] | None = None) -> tuple[int, int]:
        with self.q.lock:
            jobs = self.q.jobs
            running = sum(1 for j in jobs.values()
                          if j.state == JobState.PROCESSING and (queues is None or j.queue in queues))
            ready = sum(1 for j in jobs.values()
                        if j.state in lifecycle.RUNNABLE_STATES and not j.waiting and self._wanted(j, queues))
            # A running parent in any queue counts when a pending job this worker would run waits on it.
            held = {p for child, parents in self.q.parents.items() for p, met in parents.items() if not met
                    and child in jobs and jobs[child].state == JobState.PENDING and self._wanted(jobs[child], queues)}
            parents = sum(1 for p in held if p in jobs and jobs[p].state == JobState.PROCESSING)
        return running + ready + parents, running + parents

    def waits_on(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        with self.q.lock:
            out = {i: sorted(p for p, met in self.q.parents.get(i, {}).items() if not met) for i in job_ids}
        return {i: parents for i, parents in out.items() if parents}

    # -- queues ----------------------------------------------------------------------------------
    def queues(self) -> list[QueueInfo]:
        with self.q.lock:
            counts: dict[str, dict[str, int]] = {}
            for job in self.q.jobs.values():
                counts.setdefault(job.queue, {str(s): 0 for s in JobState})[str(job.state)] += 1
            out = []
            for name in sorted(set(self.q.queues) | set(counts)):
                concurrency, paused = self.q.queues.get(name, (0, False))
                if name in counts or concurrency or paused:
                    out.append(QueueInfo(name, concurrency, paused, counts.get(name, {str(s): 0 for s in JobState})))
            return out

    def set_queue(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None:
        with self.q.lock:
            old_concurrency, old_paused = self.q.queues.get(name, (0, False))
            self.q.queues[name] = (old_concurrency if concurrency is None else concurrency,
                                   old_paused if paused is None else paused)
            self._wake()

    def set_all_paused(self, paused: bool) -> list[str]:
        with self.q.lock:
            changed = sorted(name for name, (_, was) in self.q.queues.items() if was != paused)
            for name in changed:
                self.q.queues[name] = (self.q.queues[name][0], paused)
            self._wake()
            return changed

    # -- schedules -------------------------------------------------------------------------------
    def add_schedule(self, schedule: Schedule) -> None:
        with self.q.lock:
            if schedule.name in self.q.schedules:
                raise ValidationError(f"a schedule named {schedule.name!r} already exists")
            self.q.schedules[schedule.name] = replace(schedule, paused=False, created_at=self.now(), last_tick=None)

    def schedules(self) -> list[Schedule]:
        with self.q.lock:
            return [self.q.schedules[name] for name in sorted(self.q.schedules)]

    def remove_schedule(self, name: str) -> bool:
        with self.q.lock:
            return self.q.schedules.pop(name, None) is not None

    def set_schedule_paused(self, name: str, paused: bool) -> bool:
        with self.q.lock:
            s = self.q.schedules.get(name)
            if s is None:
                return False
            last = s.last_tick
            if not paused:  # resuming skips the ticks missed while paused
                last = max(last, self.now()) if last is not None else self.now()
            self.q.schedules[name] = replace(s, paused=paused, last_tick=last)
            return True

    def enqueue_tick(self, name: str, tick: datetime, job: NewJob) -> Job | None:
        with self.q.lock:
            s = self.q.schedules.get(name)
            if s is None or s.paused or (s.last_tick is not None and s.last_tick >= tick):
                return None
            try:
                [new] = self._insert([job])
            except (DuplicateJobError, UniqueKeyError):
                return None  # the tick is not recorded either: one transaction
            self.q.schedules[name] = replace(s, last_tick=tick)
            self._wake()
            return new

    # -- workers ---------------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        with self.q.lock:
            self.q.workers[info.id] = _Worker(info, self.now())

    def worker_seen(self, worker_id: str, current_job: str | None) -> int:
        with self.q.lock:
            worker = self.q.workers.get(worker_id)
            if worker is None:
                return 0
            worker.last_seen, worker.current_job = self.now(), current_job
            return worker.stop

    def unregister_worker(self, worker_id: str) -> None:
        with self.q.lock:
            self.q.workers.pop(worker_id, None)

    def live_workers(self) -> list[WorkerInfo]:
        with self.q.lock:
            since = self.now() - timedelta(seconds=WORKER_LIVE_SECONDS)
            out = []
            for worker_id in sorted(self.q.workers):
                w = self.q.workers[worker_id]
                if w.last_seen < since:
                    continue
                # The jobs it holds, from the claims themselves: shown from the moment of claiming.
                held = sorted(((j.updated_at, j.id) for j in self.q.jobs.values()
                               if j.worker_id == worker_id and j.state == JobState.PROCESSING),
                              key=lambda t: (-t[0].timestamp(), t[1]))
                jobs = tuple((job_id, at) for at, job_id in held)
                current, current_since = jobs[0] if jobs else (w.current_job, None)
                out.append(replace(w.info, last_seen=w.last_seen, current_job=current,
                                   current_job_since=current_since, jobs=jobs))
            return out

    def request_stop(self, now: bool = False) -> int:
        with self.q.lock:
            since = self.now() - timedelta(seconds=WORKER_LIVE_SECONDS)
            live = [w for w in self.q.workers.values() if w.last_seen >= since]
            for w in live:
                w.stop = 2 if now else max(w.stop, 1)
            self._wake()
            return len(live)

    def wait_for_work(self, timeout: float, wakeup_fd: int | None = None) -> None:
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            with self.q.lock:
                if self.q.wakes != self._seen_wakes:
                    self._seen_wakes = self.q.wakes
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if wakeup_fd is None:
                    self.q.lock.wait(left)
                    continue
            # Both at once: the pipe polled in short slices, the wake-ups checked between them.
            try:
                if select.select([wakeup_fd], [], [], min(left, 0.05))[0]:
                    return
            except (OSError, ValueError):
                return

    def close(self) -> None:
        pass


__all__ = ["MemoryQueue", "MemoryStorage"]
