"""The worker: :class:`Worker` is the loop (claims, results, heartbeats, housekeeping, signals),
:mod:`queuectl_core.worker.attempts` the threads that run its slots' attempts."""

from queuectl_core.worker.loop import Worker

__all__ = ["Worker"]
