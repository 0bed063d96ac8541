"""``/metrics``: the queue in the Prometheus text format, written by prometheus-client.

Every value is read from storage at scrape time, so every worker on every host is counted and
nothing is lost when a process exits. ``queuectl_job_attempts_total`` is derived from the attempt
counts stored on jobs; removing, purging, restarting or replaying jobs lowers that sum, so this
process adds back any drop it sees: the counter only grows while the dashboard runs (and starts
over, like any exporter's counter, when it restarts). docs/dashboard.md says so too.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from .data import Data


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


class QueueCollector:
    def __init__(self, data: Data) -> None:
        self.data = data
        self.attempts = _Monotonic()

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


class Exporter:
    """One registry per dashboard, holding the collector (and its counter offsets)."""

    def __init__(self, data: Data) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(QueueCollector(data))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
