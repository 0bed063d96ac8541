"""Everything the dashboard reads from or asks of the queue, in one place.

Only the public plugin API is used, and the same core functions the CLI calls: pausing a queue
here is ``queue pause`` (``scheduling.set_paused``), a schedule's next run is the one ``schedule
list`` shows (``scheduling.schedule_rows``), a job action is ``cancel``/``restart``/``dlq retry``
(``actions``). Nothing about a job's lifecycle is decided in the dashboard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from queuectl_core.api import (
    App,
    Job,
    JobNotFoundError,
    JobState,
    QueuectlError,
    Storage,
    ValidationError,
    actions,
    scheduling,
)

# Not yet re-exported by queuectl_core.api (its page, docs/plugins/api.md, is to document it first).
from queuectl_core.control.joblogs import attempt_logs
from queuectl_core.jobs.output import joined
from queuectl_core.storage.capabilities import attempt_output

PAGE_MAX = 200
LOG_TAIL_BYTES = 64 * 1024
STATES = [str(s) for s in JobState]


def iso(dt: datetime | None) -> str | None:
    """The one time format of queuectl: ``2026-01-10T10:35:00.123Z``."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class QueueRow:
    name: str
    counts: dict[str, int]
    paused: bool = False
    concurrency: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "counts": self.counts, "paused": self.paused, "concurrency": self.concurrency}


class Data:
    """The dashboard's view of one queue (one App: its storage and config)."""

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def storage(self) -> Storage:
        return self.app.storage

    # -- reading ---------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.storage.now()

    def counts(self) -> dict[str, int]:
        return {str(s): n for s, n in self.storage.counts().items()}

    def queues(self) -> list[QueueRow]:
        return [QueueRow(q.name, {s: int(q.counts.get(s, 0)) for s in STATES}, q.paused, q.concurrency)
                for q in scheduling.list_queues(self.storage)]

    def workers(self, now: datetime) -> list[dict[str, Any]]:
        out = []
        # Grouped by the host each reports (config worker.host), as `status` lists them.
        for w in sorted(self.storage.live_workers(), key=lambda w: (w.hostname, w.id)):
            row: dict[str, Any] = {**w.to_dict(), "job": None}
            if w.current_job:
                job = self.storage.get(w.current_job)
                if job is not None:
                    # A claim stamps updated_at and heartbeats do not: it is when the job started.
                    row["job"] = {"id": job.id, "command": job.command, "state": str(job.state),
                                  "started_at": iso(job.updated_at),
                                  "running_seconds": max(0.0, (now - job.updated_at).total_seconds())}
            out.append(row)
        return out

    def schedules(self) -> list[dict[str, Any]]:
        """As ``schedule list --json`` prints them, with ``next_tick`` (null while paused)."""
        return scheduling.schedule_rows(self.storage)

    def overview(self) -> dict[str, Any]:
        now = self.now()
        return {"now": iso(now), "counts": self.counts(), "queues": [q.to_dict() for q in self.queues()],
                "workers": self.workers(now), "schedules": self.schedules(),
                "resources": self.resources()}  # -- needs

    def resources(self) -> dict[str, Any]:
        """Pools and live workers' resources, with units in use, as ``resource list --json``."""
        from queuectl_core.storage.capabilities import with_fallbacks

        return with_fallbacks(self.storage).resource_usage().to_dict()

    def jobs(self, state: str | None = None, queue: str | None = None, tag: str | None = None,
             before: str | None = None, limit: int = 50) -> dict[str, Any]:
        """One page, newest first; ``next`` is the cursor of the page after it (keyset paging:
        a page deep in 100,000 jobs costs what the first does)."""
        limit = max(1, min(int(limit), PAGE_MAX))
        if state is not None and state not in STATES:
            raise ValidationError(f"unknown state {state!r}")
        rows = self.storage.list_jobs(JobState(state) if state else None, limit + 1, queue=queue or None,
                                      tag=tag or None, before=before or None)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"jobs": [job_dict(j) for j in rows], "next": rows[-1].id if more else None}

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as ``show`` tells it (the same reads, ``history.details``, and the same words
        for its state and retry rules), with its log files on this host."""
        from queuectl_core.cli.inspect import job_object, retry_rules, why
        from queuectl_core.jobs import history

        job = self.storage.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        d = history.details(self.storage, job, self.app.config["worker.host"])
        now = d.now
        out = job_object(job, d.after, d.orphaned)
        out.pop("log_path", None)  # a path on the worker's host: the log endpoint serves it
        out["why"] = why(job, d.after, d.orphaned, d.workers_live, now)
        out["retry_rules"] = retry_rules(job)
        out["history"] = [{k: v for k, v in a.to_dict().items() if k != "log_path"} for a in d.attempts]
        out["output_tail"] = job.output_tail
        out["cancel_requested"] = job.cancel_requested
        store = attempt_output(self.storage)
        sizes = store.output_sizes(job.id) if store is not None else {}
        if sizes:  # kept by the storage: every attempt's, whichever host ran it
            numbers = sorted({*sizes, *(a.attempt for a in d.attempts)})
            out["attempt_logs"] = [{"attempt": n, "bytes": sizes.get(n, 0)} for n in numbers]
        else:
            out["attempt_logs"] = [{"attempt": n, "bytes": p.stat().st_size if p.exists() else None}
                                   for n, p in self._attempt_logs(job)]
        out["running_seconds"] = ((now - job.updated_at).total_seconds()
                                  if job.state == JobState.PROCESSING else None)
        return out

    def _attempt_logs(self, job: Job) -> list[tuple[int, Path]]:
        """Each attempt's log file on this host, as the configured executor names them (none if
        it keeps no files: the stored tail is all there is)."""
        try:
            logs = attempt_logs(self.app.executor)
        except QueuectlError:
            logs = None
        if logs is None:
            return []
        paths = [(n, logs.attempt_log(job, n)) for n in range(1, job.attempts + 1)]
        return [(n, Path(p)) for n, p in paths if p is not None]

    def log(self, job_id: str, attempt: int | None = None) -> dict[str, Any]:
        """The tail of one attempt's log (default: the current or last one). On another host than
        the worker's, the file is absent: the tail stored with the job is shown instead."""
        job = self.storage.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        logs = dict(self._attempt_logs(job))
        attempt = attempt or job.attempt_number  # numbered for good: restart and replay never reuse one
        running = job.state == JobState.PROCESSING and attempt == job.attempt_number
        text, truncated, source = None, False, "none"
        store = attempt_output(self.storage)
        chunks = store.read_output(job.id, attempt) if store is not None else []
        if store is not None and (chunks or running):  # kept by the storage, whichever host ran it
            data = joined(chunks)
            text, truncated, source = data[-LOG_TAIL_BYTES:].decode("utf-8", "replace"), len(data) > LOG_TAIL_BYTES, "storage"
        path = logs.get(attempt) if text is None else None
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    fh.seek(max(0, size - LOG_TAIL_BYTES))
                    text, truncated, source = fh.read().decode("utf-8", "replace"), size > LOG_TAIL_BYTES, "file"
            except OSError:
                pass
        if text is None and attempt == job.attempts and job.output_tail and not running:
            text, source = job.output_tail, "stored tail"
        return {"id": job.id, "attempt": attempt, "attempts": job.attempts, "running": running,
                "state": str(job.state), "text": text or "", "truncated": truncated, "source": source}

    # -- acting ------------------------------------------------------------------------------
    def act(self, job_id: str, action: str) -> dict[str, Any]:
        do = {"retry": actions.replay, "cancel": actions.cancel, "restart": actions.restart}.get(action)
        if do is None:
            raise ValidationError(f"unknown action {action!r}")
        return job_dict(do(self.storage, job_id))

    def set_paused(self, queue: str, paused: bool) -> None:
        scheduling.set_paused(self.storage, [queue], paused)

    # -- metrics -------------------------------------------------------------------------------
    def attempt_totals(self) -> dict[str, int]:
        """Finished attempts by outcome, derived from what storage keeps: every attempt a job
        records (``attempts``) ended completed (one per completed job) or not (the rest), except
        the one a processing job is running now."""
        from queuectl_core.storage.capabilities import with_fallbacks

        by_state = {str(s): n for s, n in with_fallbacks(self.storage).attempts_by_state().items()}
        counts = self.counts()
        completed = counts[JobState.COMPLETED]
        failed = sum(by_state.values()) - completed - counts[JobState.PROCESSING]
        return {"completed": completed, "failed": max(0, failed)}

    def throughput(self, minutes: int = 60) -> dict[str, Any]:
        """Attempts finished in each of the last ``minutes`` minutes (the current one last), from
        what the storage keeps (``attempts_per_minute``): right after a restart of the dashboard."""
        from datetime import timedelta

        from queuectl_core.storage.capabilities import minute_of, with_fallbacks

        now = self.now()
        first = minute_of(now) - timedelta(minutes=minutes - 1)
        counts = with_fallbacks(self.storage).attempts_per_minute(first)
        buckets = []
        for n in range(minutes):
            at = first + timedelta(minutes=n)
            ok, bad = counts.get(at, (0, 0))
            buckets.append({"at": iso(at), "completed": ok, "failed": bad})
        return {"now": iso(now), "minutes": buckets,
                "completed": sum(b["completed"] for b in buckets), "failed": sum(b["failed"] for b in buckets)}

    def finished_attempts(self, since: datetime) -> list[tuple[str, Any]]:
        """(queue, attempt) of every attempt finished at or after ``since`` (``/metrics``' histograms)."""
        from queuectl_core.storage.capabilities import with_fallbacks

        return with_fallbacks(self.storage).finished_attempts(since)

    def oldest_ready_age(self, now: datetime, queues: list[QueueRow]) -> dict[str, float]:
        """Per queue, how long its oldest runnable job has waited (0 when none is waiting)."""
        out: dict[str, float] = {}
        for q in queues:
            first = self.storage.next_run_at(queues=[q.name])
            out[q.name] = max(0.0, (now - first).total_seconds()) if first is not None else 0.0
        return out


def job_dict(job: Job) -> dict[str, Any]:
    out = job.to_dict()
    out.pop("log_path", None)  # a path on the worker's host: the log endpoint serves it
    return out
