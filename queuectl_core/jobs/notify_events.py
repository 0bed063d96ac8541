"""The events a notifier may ask to be told about, and a setting's text read as a set of them.

Kept apart from :mod:`queuectl_core.jobs.notifications`, which re-exports these names: the notifier
plugins' settings hooks need them, and every command runs those hooks, while the outbox's records
(and ``json``) are for workers and notifiers only.
"""

from __future__ import annotations

from enum import StrEnum


class NotifyEvent(StrEnum):
    """What a notifier may ask to be told about."""

    COMPLETED = "completed"
    FAILED = "failed"  # an attempt failed and a retry is scheduled
    DEAD = "dead"
    CANCELLED = "cancelled"
    QUEUE_EMPTY = "queue_empty"  # a queue's last unfinished job finished (once per emptied queue)


NOTIFY_EVENTS = tuple(str(e) for e in NotifyEvent)


def parse_events(value: str) -> frozenset[str]:
    """``"dead,failed"`` (commas or spaces) as a set of events; raises ValueError naming a wrong one."""
    names = frozenset(v.strip().lower() for v in value.replace(",", " ").split() if v.strip())
    unknown = sorted(names - set(NOTIFY_EVENTS))
    if unknown:
        raise ValueError(f"unknown event {unknown[0]!r}; choose among {', '.join(NOTIFY_EVENTS)}")
    return names


__all__ = ["NOTIFY_EVENTS", "NotifyEvent", "parse_events"]
