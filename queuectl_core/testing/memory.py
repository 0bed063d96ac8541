"""An in-memory storage: the smallest complete one, to read and to copy.

This module is the required :class:`~queuectl_core.interfaces.Storage` protocol, the part every backend
writes; :mod:`~queuectl_core.testing.memory_capabilities` adds the optional capabilities no fallback can
give as a database does, and core's fallbacks give it every other. It passes
:class:`~queuectl_core.testing.StorageConformance`. A backend for a real database keeps the same shape:
persist what :mod:`queuectl_core.jobs.lifecycle` decides, fenced and atomic, and never decide anything.
Jobs live in one :class:`MemoryQueue`, seen by every :class:`MemoryStorage` opened on it (one per worker
thread, as a database has one connection each). One lock makes every method a transaction. Nothing
survives the process: for tests and examples, not for work.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Sequence

from queuectl_core.errors import DuplicateJobError, UniqueKeyError, ValidationError
from queuectl_core.jobs import lifecycle
from queuectl_core.jobs.limits import Limits
from queuectl_core.jobs.models import Job, JobState, NewJob
from queuectl_core.jobs.records import Attempt, QueueInfo, Schedule, WorkerInfo
from queuectl_core.storage.capabilities import MemoryOutbox
from queuectl_core.testing.memory_capabilities import MemoryCapabilities

WORKER_LIVE_SECONDS = 15.0  # a worker not seen for this long is not listed as live


class MemoryQueue:
    """What a database would hold, shared by every MemoryStorage opened on it. Values are replaced,
    never changed in place, so a shallow copy of a dict is a snapshot (apply_many's rollback)."""

    def __init__(self) -> None:
        self.lock = threading.Condition(threading.RLock())
        self.jobs: dict[str, Job] = {}
        self.parents: dict[str, set[str]] = {}  # job id -> the jobs it waits on (`after`) not completed yet
        self.queues: dict[str, QueueInfo] = {}  # name -> its concurrency and pause (counts filled when read)
        self.schedules: dict[str, Schedule] = {}
        self.workers: dict[str, WorkerInfo] = {}  # id -> as registered, with last_seen and current_job kept
        self.stops: dict[str, int] = {}  # worker id -> 1: stop after the current job, 2: stop now
        self.history: dict[str, list[Attempt]] = {}  # job id -> its finished attempts, oldest first (_apply)
        self.output: dict[tuple[str, int], dict[int, bytes]] = {}  # (job id, attempt) -> {seq: chunk}
        self.wakes = 0  # moves on every write that may make work available
        self.limits: dict[str, Limits] = {}  # queue name -> its default limits (QueueLimits)
        self.outbox = MemoryOutbox()  # notifications until delivered, and the count of every try
        self.pools: dict[str, int] = {}  # -- needs: pool name -> capacity
        self.resources: dict[str, dict[str, str]] = {}  # worker id -> its declared {name: spec}


class MemoryStorage(MemoryCapabilities):
    """The Storage protocol on a :class:`MemoryQueue` (a new one when none is given): its methods in the
    order of the protocol's parts (Jobs, Claims, Queues, Schedules, Workers); the optional
    capabilities come from :class:`~queuectl_core.testing.memory_capabilities.MemoryCapabilities`."""

    def __init__(self, queue: MemoryQueue | None = None) -> None:
        self.q = queue if queue is not None else MemoryQueue()
        self._seen_wakes = self.q.wakes

    def _wake(self) -> None:
        """Idle workers waiting in wait_for_work return (called with the lock held)."""
        self.q.wakes += 1
        self.q.lock.notify_all()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Check everything first, then change anything: all or nothing."""
        q, ids = self.q, [j.id for j in jobs]
        with q.lock:
            keys: dict[str, str] = {}  # unique key -> the job of this batch taking it
            for n, new in enumerate(jobs):
                if new.id in q.jobs or new.id in ids[:n]:
                    raise DuplicateJobError(new.id)
                for parent in new.after:
                    if parent not in q.jobs and parent not in ids:
                        raise lifecycle.unknown_parent(new.id, parent, len(jobs))
                if new.unique_key is not None:
                    holder = keys.get(new.unique_key) or self._holder(new.unique_key)
                    if holder is not None:
                        raise UniqueKeyError(new.unique_key, holder)
                    keys[new.unique_key] = new.id
            now = self.now()
            for new in jobs:
                q.parents[new.id] = set(new.after)
                q.queues.setdefault(new.queue, QueueInfo(new.queue))
                run_at = new.run_at if new.run_at is not None else now + timedelta(seconds=new.delay or 0)
                q.jobs[new.id] = Job(
                    id=new.id, command=new.command, state=JobState.PENDING, attempts=0, max_retries=new.max_retries,
                    priority=new.priority, created_at=now, updated_at=now, run_at=run_at, timeout=new.timeout,
                    queue=new.queue, waiting=len(q.parents[new.id]), unique_key=new.unique_key,
                    retry_on=new.retry_on, no_retry_on=new.no_retry_on, cwd=new.cwd, env=dict(new.env), tags=new.tags,
                    memory=new.memory, cpu_time=new.cpu_time, needs=dict(new.needs))
            # Parents stored before this batch: the lifecycle says whether their state releases or cancels the new jobs.
            for parent in {p for new in jobs for p in new.after if p not in ids}:
                self._dependants(parent, lifecycle.dependants(parent, q.jobs[parent].state))
            if ids:
                self._wake()
            return [q.jobs[i] for i in ids]

    def get(self, job_id: str) -> Job | None:
        with self.q.lock:
            return self.q.jobs.get(job_id)

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  states: Sequence[JobState] | None = None, tag: str | None = None,
                  queue: str | None = None, before: str | None = None) -> list[Job]:
        wanted = set(states or ()) | ({state} if state is not None else set())
        with self.q.lock:
            last = self.q.jobs.get(before) if before is not None else None
            if before is not None and last is None:
                return []
            jobs = [j for j in self.q.jobs.values() if (not wanted or j.state in wanted)
                    and (tag is None or tag in j.tags) and (queue is None or j.queue == queue)
                    and (last is None or (j.created_at, j.id) < (last.created_at, last.id))]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return jobs[:limit]

    def counts(self) -> dict[JobState, int]:
        with self.q.lock:
            found = Counter(j.state for j in self.q.jobs.values())
        return {s: found[s] for s in JobState}

    def delete(self, job_ids: Sequence[str], states: Sequence[JobState]) -> list[Job] | None:
        with self.q.lock:
            ids = list(dict.fromkeys(job_ids))
            if any(i not in self.q.jobs or self.q.jobs[i].state not in states for i in ids):
                return None
            for i in ids:
                self.q.history.pop(i, None)
                self.q.parents.pop(i, None)
            for key in [k for k in self.q.output if k[0] in ids]:
                del self.q.output[key]
            return [self.q.jobs.pop(i) for i in ids]

    def _open(self, queues: Sequence[str] | None, limits: bool = True) -> set[str]:
        """The queues a worker of ``queues`` (None: all) takes from: unpaused, (``limits``) not full."""
        running = Counter(j.queue for j in self.q.jobs.values() if j.state == JobState.PROCESSING)
        return {name for name, info in self.q.queues.items()
                if not info.paused and (queues is None or name in queues)
                and not (limits and info.concurrency and running[name] >= info.concurrency)}

    def _ready(self, open_queues: set[str]) -> list[Job]:
        """Jobs a claim could take from ``open_queues`` once due: runnable and waiting on nothing."""
        return [j for j in self.q.jobs.values()
                if j.state in lifecycle.RUNNABLE_STATES and not j.waiting and j.queue in open_queues]

    def claim(self, worker_id: str, lease_seconds: float, queues: Sequence[str] | None = None) -> Job | None:
        with self.q.lock:
            now = self.now()
            # _fits: the ResourceNeeds capability's check; a storage without it is given no job with needs.
            due = [j for j in self._ready(self._open(queues)) if j.run_at <= now and self._fits(j, worker_id)]
            if not due:
                return None
            job = min(due, key=lambda j: (-j.priority, j.run_at, j.id))
            worker = self.q.workers.get(worker_id)
            job = self.q.jobs[job.id] = replace(
                job, state=JobState.PROCESSING, attempts=job.attempts + 1, worker_id=worker_id,
                lease_token=os.urandom(8).hex(), lease_expires_at=now + timedelta(seconds=lease_seconds),
                cancel_requested=False, updated_at=now, last_attempt=job.last_attempt + 1,
                host=worker.hostname if worker else None, log_path=None, output_tail=None)
            return job

    def apply(self, job_id: str, token: str | None, change: lifecycle.Change) -> Job | None:
        done = self.apply_many([(job_id, token, change)])
        return done[0] if done else None

    def apply_many(self, changes: Sequence[tuple[str, str | None, lifecycle.Change]]) -> list[Job] | None:
        """One transaction: an exception (a held unique key) or one change fenced out puts all back."""
        with self.q.lock:
            saved = dict(self.q.jobs), dict(self.q.parents), dict(self.q.history)
            try:
                done = [self._apply(job_id, token, change) for job_id, token, change in changes]
            except BaseException:
                self.q.jobs, self.q.parents, self.q.history = saved
                raise
            if any(job is None for job in done):
                self.q.jobs, self.q.parents, self.q.history = saved
                return None
            self._wake()
            return [job for job in done if job is not None]

    def _apply(self, job_id: str, token: str | None, change: lifecycle.Change) -> Job | None:
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
        if change.ends_attempt:  # its history, in this transaction
            self.q.history[job_id] = [*self.q.history.get(job_id, []), Attempt(
                job_id, new.last_attempt, job.updated_at, now, new.last_duration, new.last_exit_code, new.last_error,
                job.worker_id, job.host, new.log_path, new.last_cpu_seconds, new.last_max_rss_bytes)]
        self._dependants(job_id, lifecycle.dependants_of(job_id, change))
        return new

    def _changed(self, job: Job, change: lifecycle.Change, now: datetime) -> Job:
        """``job`` with ``change`` written on it; fields the change leaves None stay as they are."""
        if change.state in lifecycle.HOLDING_STATES and job.state not in lifecycle.HOLDING_STATES:
            holder = self._holder(job.unique_key)
            if holder is not None:  # a restart or replay would hold the key twice
                raise UniqueKeyError(job.unique_key, holder)
        new: dict[str, Any] = {name: getattr(change, name) for name in ("attempts", "cancel_requested", "command")
                               if getattr(change, name) is not None}  # the same field on the job
        if change.state is not None:
            new.update(state=change.state, updated_at=now)
        if change.run_in is not None:
            new["run_at"] = now + timedelta(seconds=change.run_in)
        if change.lease_seconds is not None:
            new["lease_expires_at"] = now + timedelta(seconds=change.lease_seconds)
        elif change.clear_lease:
            new["lease_expires_at"] = None
        if change.clear_token:
            new.update(lease_token=None, worker_id=None)
        if change.clear_result:
            new.update(last_exit_code=None, last_error=None, last_duration=None, log_path=None, output_tail=None,
                       last_cpu_seconds=None, last_max_rss_bytes=None)
        if (r := change.result) is not None:
            new.update(last_exit_code=r.exit_code, last_error=change.reason if change.reason is not None else r.error,
                       log_path=r.log_path, output_tail=r.output_tail, last_duration=r.duration,
                       last_cpu_seconds=r.cpu_seconds, last_max_rss_bytes=r.max_rss_bytes)
        elif change.reason is not None:
            new.update(last_exit_code=None, last_error=change.reason, last_duration=None, last_cpu_seconds=None,
                       last_max_rss_bytes=None)
        if change.progress is not None and change.result is None:
            new.update(log_path=change.progress[0], output_tail=change.progress[1])
        return replace(job, **new)

    def _holder(self, key: str | None) -> str | None:
        """The job holding unique key ``key`` (one in lifecycle.HOLDING_STATES), if any."""
        return next((j.id for j in self.q.jobs.values() if key is not None and j.unique_key == key
                     and j.state in lifecycle.HOLDING_STATES), None)

    def _dependants(self, parent: str, change: lifecycle.Change | None) -> None:
        """Apply the lifecycle's ``change`` to every job still waiting on ``parent``, then to
        their own dependants in turn, down the chain (lock held: one transaction with the parent)."""
        now, frontier = self.now(), [(parent, change)]
        while frontier:
            p, c = frontier.pop(0)
            if c is None:
                continue
            for child in [child for child, parents in self.q.parents.items() if p in parents]:
                job = self.q.jobs[child]
                if c.parent_met:  # the edge goes: a second completion of the parent releases nothing
                    self.q.parents[child] = self.q.parents[child] - {p}
                    self.q.jobs[child] = replace(job, waiting=len(self.q.parents[child]))
                elif job.state in c.from_states:
                    self.q.jobs[child] = self._changed(job, c, now)
                    frontier.append((child, lifecycle.dependants_of(child, c)))

    def expired(self, limit: int = 100) -> list[Job]:
        with self.q.lock:
            now = self.now()
            jobs = [j for j in self.q.jobs.values() if j.state == JobState.PROCESSING
                    and j.lease_expires_at is not None and j.lease_expires_at < now]
        return sorted(jobs, key=lambda j: (j.lease_expires_at or now, j.id))[:limit]

    def next_run_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        with self.q.lock:
            return min((j.run_at for j in self._ready(self._open(queues))), default=None)

    def burst_remaining(self, queues: Sequence[str] | None = None) -> tuple[int, int]:
        with self.q.lock:
            jobs, wanted = self.q.jobs, self._open(queues, limits=False)
            running = sum(1 for j in jobs.values()
                          if j.state == JobState.PROCESSING and (queues is None or j.queue in queues))
            ready = len(self._ready(wanted))
            # A running parent in any queue counts when a pending job this worker would run waits on it.
            held = {p for child, parents in self.q.parents.items() for p in parents
                    if jobs[child].state == JobState.PENDING and jobs[child].queue in wanted}
            parents = sum(1 for p in held if p in jobs and jobs[p].state == JobState.PROCESSING)
        return running + ready + parents, running + parents

    def waits_on(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        with self.q.lock:
            return {i: sorted(self.q.parents[i]) for i in job_ids if self.q.parents.get(i)}

    def queues(self) -> list[QueueInfo]:
        with self.q.lock:
            found = Counter((j.queue, j.state) for j in self.q.jobs.values())
            infos = [replace(info, counts={str(s): found[name, s] for s in JobState})
                     for name, info in sorted(self.q.queues.items())]
            return [i for i in infos if any(i.counts.values()) or i.concurrency or i.paused]  # jobs or settings

    def set_queue(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None:
        with self.q.lock:
            old = self.q.queues.get(name, QueueInfo(name))
            self.q.queues[name] = replace(old, concurrency=old.concurrency if concurrency is None else concurrency,
                                          paused=old.paused if paused is None else paused)
            self._wake()

    def set_all_paused(self, paused: bool) -> list[str]:
        with self.q.lock:
            changed = sorted(name for name, info in self.q.queues.items() if info.paused != paused)
            for name in changed:
                self.set_queue(name, paused=paused)
            return changed

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
            s, now = self.q.schedules.get(name), self.now()
            if s is None:
                return False
            last = s.last_tick if paused else max(s.last_tick or now, now)  # resuming skips the missed ticks
            self.q.schedules[name] = replace(s, paused=paused, last_tick=last)
            return True

    def enqueue_tick(self, name: str, tick: datetime, job: NewJob) -> Job | None:
        with self.q.lock:
            s = self.q.schedules.get(name)
            if s is None or s.paused or (s.last_tick is not None and s.last_tick >= tick):
                return None
            try:
                [new] = self.enqueue([job])
            except (DuplicateJobError, UniqueKeyError):
                return None  # the tick is not recorded either: one transaction
            self.q.schedules[name] = replace(s, last_tick=tick)
            return new

    def register_worker(self, info: WorkerInfo) -> None:
        with self.q.lock:
            self.q.workers[info.id] = replace(info, last_seen=self.now(), current_job=None)
            self.q.stops.pop(info.id, None)

    def worker_seen(self, worker_id: str, current_job: str | None) -> int:
        with self.q.lock:
            worker = self.q.workers.get(worker_id)
            if worker is None:
                return 0
            self.q.workers[worker_id] = replace(worker, last_seen=self.now(), current_job=current_job)
            return self.q.stops.get(worker_id, 0)

    def unregister_worker(self, worker_id: str) -> None:
        with self.q.lock:
            self.q.workers.pop(worker_id, None)
            self.q.stops.pop(worker_id, None)

    def _live(self) -> list[WorkerInfo]:
        """Workers seen in the last WORKER_LIVE_SECONDS, by id (lock held)."""
        since = self.now() - timedelta(seconds=WORKER_LIVE_SECONDS)
        return [w for _, w in sorted(self.q.workers.items()) if w.last_seen >= since]

    def live_workers(self) -> list[WorkerInfo]:
        with self.q.lock:
            # The jobs each holds, newest claim first: from the claims, so shown from the moment of claiming.
            held = sorted((j for j in self.q.jobs.values() if j.state == JobState.PROCESSING),
                          key=lambda j: (-j.updated_at.timestamp(), j.id))
            out = []
            for w in self._live():
                jobs = tuple((j.id, j.updated_at) for j in held if j.worker_id == w.id)
                current, since = jobs[0] if jobs else (w.current_job, None)
                out.append(replace(w, current_job=current, current_job_since=since, jobs=jobs))
            return out

    def request_stop(self, now: bool = False) -> int:
        with self.q.lock:
            live = self._live()
            for w in live:
                self.q.stops[w.id] = 2 if now else max(self.q.stops.get(w.id, 0), 1)
            self._wake()
            return len(live)

    def wait_for_work(self, timeout: float, wakeup_fd: int | None = None) -> None:
        deadline = time.monotonic() + max(timeout, 0)
        with self.q.lock:
            while self.q.wakes == self._seen_wakes:  # no wake-up since this connection last waited
                left = deadline - time.monotonic()
                try:
                    if left <= 0 or (wakeup_fd is not None and select.select([wakeup_fd], [], [], 0)[0]):
                        break
                except (OSError, ValueError):  # a closed wakeup_fd: nothing left to wait for
                    break
                # A pipe cannot notify the condition: with a wakeup_fd, it is checked every 50 ms.
                self.q.lock.wait(left if wakeup_fd is None else min(left, 0.05))
            self._seen_wakes = self.q.wakes

    def close(self) -> None:
        pass



__all__ = ["MemoryQueue", "MemoryStorage"]
