"""Notifications: what a notifier is told, and the outbox rows that carry it.

A *notifier* (a plugin's, registered through ``queuectl_register_notifiers``) chooses its events
among :data:`NOTIFY_EVENTS` (defined in :mod:`queuectl_core.jobs.notify_events`). The worker turns
each job event it announces into one :class:`OutboxEntry` per notifier that wants it, kept in the
storage's outbox (the ``Outbox`` capability), and a background thread of the worker claims due rows
under a lease and hands each to its notifier as a :class:`Notification` (see
:mod:`queuectl_core.worker.notify`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from queuectl_core.jobs.notify_events import NOTIFY_EVENTS, NotifyEvent, parse_events  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job


class Outcome(StrEnum):
    """How one delivery try ended, as ``queuectl_notifications_total{outcome}`` counts it."""

    DELIVERED = "delivered"
    FAILED = "failed"  # this try failed; retried later unless the notifier retries nothing
    EXPIRED = "expired"  # given up: older than the notifier's max_age


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One notification for one notifier, as it is written to the outbox. ``(notifier, id)`` is
    unique: writing it again (two workers seeing one queue empty, a retried write) keeps one."""

    notifier: str
    id: str
    event: str
    body: str  # the JSON document: {"id", "event", "at", "job"}


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An outbox row claimed for delivery: its entry, when it was written (storage clock), how many
    tries this claim makes it, and the token fencing what this claimer records about it."""

    entry: OutboxEntry
    created_at: datetime
    tries: int
    token: str


@dataclass(frozen=True, slots=True)
class Notification:
    """What a notifier's ``deliver`` receives: the event, the job as ``show --json`` gives it (for
    ``queue_empty``, the job whose end emptied the queue), and ``body``, the exact JSON text (what a
    webhook signs and sends). ``id`` is the same on every try: a receiver drops repeats by it."""

    id: str
    event: str
    at: str
    job: dict[str, Any]
    body: str
    tries: int = 1

    @classmethod
    def from_entry(cls, entry: OutboxEntry, tries: int = 1) -> Notification:
        doc = json.loads(entry.body)
        return cls(entry.id, entry.event, doc.get("at", ""), doc.get("job") or {}, entry.body, tries)


class Notifier(Protocol):
    """A notifier, as its factory (``queuectl_register_notifiers``) returns it.

    ``events``: the :data:`NOTIFY_EVENTS` it wants. ``max_age``: seconds a notification is retried
    for (with exponential backoff) before it is dropped and counted ``expired``; 0 means one try,
    no retry. ``deliver`` raises on failure (anything: it is caught, counted and reported); it runs
    in a background thread of a worker, never in the worker's loop. A notifier may also have a
    ``timeout`` (seconds one try may take at most): a claimed row's lease is at least twice it.
    """

    events: frozenset[str]
    max_age: float

    def deliver(self, notification: Notification) -> None: ...


def body(notification_id: str, event: str, at: datetime, job: Job) -> str:
    """The JSON document a notification carries: ``{"id", "event", "at", "job"}``, the job as
    ``show --json`` prints it."""
    from queuectl_core.jobs.timeutil import format_time

    job_doc = {**job.to_dict(), "after": [], "orphaned": False}
    return json.dumps({"id": notification_id, "event": event, "at": format_time(at), "job": job_doc},
                      separators=(",", ":"), ensure_ascii=False)


__all__ = ["NOTIFY_EVENTS", "Notification", "Notifier", "NotifyEvent", "Outcome", "OutboxEntry", "OutboxItem",
           "body", "parse_events"]
