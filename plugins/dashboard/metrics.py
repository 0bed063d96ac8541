"""``/metrics``: the queue in the Prometheus text format, written by prometheus-client.

Every value is read from storage at scrape time, so every worker on every host is counted and
nothing is lost when a process exits. ``queuectl_job_attempts_total`` is derived from the attempt
counts stored on jobs; removing, purging, restarting or replaying jobs lowers that sum, so this
process adds back any drop it sees: the counter only grows while the dashboard runs (and starts
over, like any exporter's counter, when it restarts). docs/dashboard.md says so too.

``queuectl_notifications_total`` is read from the storage's ``notification_counts`` table, which
the workers' notification threads update with every delivery try: deliveries happen in workers,
on any host, and this process only reads what they counted.

The histograms (how long attempts ran, their peak memory) count the attempts that finished since
this dashboard started, read from the storage's history at each scrape: the attempts finished since
the previous read, so a scrape costs what finished in between, and a purge never lowers them.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from queuectl_core.api import Attempt

    from .data import Data

# Shell jobs run from milliseconds to hours: upper bounds in seconds, +Inf added.
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 43200.0)
# Peak resident memory, 1 MiB to 16 GiB in steps of 4.
RSS_BUCKETS = tuple(float(1024 ** 2 * 4 ** k) for k in range(8))
# Each read starts this far before the last one's clock: an attempt whose transaction took its
# finished_at before a read but committed after it is read the next time (and counted once).
OVERLAP = timedelta(seconds=60)


class _Monotonic:
    """Keeps a derived total from going down when stored rows are deleted or reset."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.offset: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, raw: dict[str, int]) -> dict[str, int]:
        with self.lock:
            for key, value in raw.items():
                before = self.last.get(key)
                if before is not None and value < before:
                    self.offset[key] = self.offset.get(key, 0) + before - value
                self.last[key] = value
            return {k: v + self.offset.get(k, 0) for k, v in raw.items()}


class _Finished:
    """The attempts finished since ``since``, as histograms per label, fed a read at a time.

    Each read asks the storage for the attempts finished at or after its clock minus OVERLAP and
    counts those not counted already, by (job, attempt, finished_at): a job removed and enqueued
    again under its id numbers its attempts from 1 again, at another time."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.seen: dict[tuple[str, int, datetime | None], datetime] = {}
        # prometheus_client's own histograms, in no registry: QueueCollector yields them.
        self.duration = Histogram("queuectl_job_duration_seconds",
                                  "How long job attempts ran (wall time), per queue and outcome (completed, or "
                                  "failed: failed, killed, timed out, stopped or cancelled), since the dashboard "
                                  "started.", ["queue", "outcome"], registry=None, buckets=DURATION_BUCKETS)
        self.rss = Histogram("queuectl_job_max_rss_bytes",
                             "Peak resident memory of job attempts, per queue, since the dashboard started.",
                             ["queue"], registry=None, buckets=RSS_BUCKETS)
        self.lock = threading.Lock()

    def add(self, found: list[tuple[str, Attempt]], now: datetime) -> None:
        """Count ``found`` (read at ``now`` on the storage's clock, or just before)."""
        with self.lock:
            for queue, a in found:
                key = (a.job_id, a.attempt, a.finished_at)
                if key in self.seen:
                    continue
                self.seen[key] = a.finished_at or now
                outcome = "completed" if a.exit_code == 0 and a.error is None else "failed"
                if a.duration is not None:
                    self.duration.labels(queue, outcome).observe(a.duration)
                if a.max_rss_bytes is not None:
                    self.rss.labels(queue).observe(float(a.max_rss_bytes))
            self.since = max(self.since, now - OVERLAP)
            self.seen = {k: at for k, at in self.seen.items() if at >= self.since}


class QueueCollector:
    def __init__(self, data: Data) -> None:
        self.data = data
        self.attempts = _Monotonic()
        self.finished = _Finished(data.now())

    def collect(self) -> Iterator[Metric]:
        data = self.data
        now = data.now()
        queues = data.queues()
        jobs = GaugeMetricFamily("queuectl_jobs", "Jobs in each state, per queue.", labels=["state", "queue"])
        for q in queues:
            for state, n in q.counts.items():
                jobs.add_metric([state, q.name], n)
        yield jobs
        yield GaugeMetricFamily("queuectl_workers", "Live workers, on every host.",
                                value=len(data.storage.live_workers()))
        attempts = CounterMetricFamily("queuectl_job_attempts", "Finished job attempts, by outcome "
                                       "(completed, or failed: retried, dead or cancelled).", labels=["outcome"])
        for outcome, n in self.attempts(data.attempt_totals()).items():
            attempts.add_metric([outcome], n)
        yield attempts
        age = GaugeMetricFamily("queuectl_oldest_ready_job_age_seconds",
                                "How long the oldest job ready to run has waited, per queue (0: none).",
                                labels=["queue"])
        for name, seconds in data.oldest_ready_age(now, queues).items():
            age.add_metric([name], seconds)
        yield age
        paused = GaugeMetricFamily("queuectl_queue_paused", "1 while a queue is paused.", labels=["queue"])
        for q in queues:
            paused.add_metric([q.name], 1 if q.paused else 0)
        yield paused
        yield self.notifications()
        yield from self.histograms(now)

    def notifications(self) -> Metric:
        """Every notification delivery try, per notifier and outcome, counted by the workers that
        made them in the storage (notification_counts): a counter whichever process scrapes it."""
        from queuectl_core.storage.capabilities import with_fallbacks

        sent = CounterMetricFamily("queuectl_notifications", "Notification delivery tries by every worker, per "
                                   "notifier and outcome (delivered; failed: retried unless the notifier tries once; "
                                   "expired: dropped, older than its max_age).", labels=["notifier", "outcome"])
        for (notifier, outcome), n in sorted(with_fallbacks(self.data.storage).notification_counts().items()):
            sent.add_metric([notifier, outcome], n)
        return sent

    def histograms(self, now: datetime) -> Iterator[Metric]:
        """How long attempts ran and their peak memory, for the attempts finished since the
        dashboard started; an attempt its executor did not measure is left out of that one."""
        finished = self.finished
        finished.add(self.data.finished_attempts(finished.since), now)
        yield from finished.duration.collect()
        yield from finished.rss.collect()


class Exporter:
    """One registry per dashboard, holding the collector (and its counter offsets)."""

    def __init__(self, data: Data) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(QueueCollector(data))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
