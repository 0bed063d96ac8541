"""A worker's notifications: job events written to the storage's outbox, delivered at least once.

The worker's loop hands every event it announces to :meth:`Notifications.offer` (a put on an
in-memory queue: no I/O, so a notifier never delays a job nor the next claim). Background threads
of the worker, each with a storage connection of its own, do the rest:

- the *recorder* turns each event into one outbox row per notifier that wants it, right after the
  transaction that recorded the job's outcome, the events of 50 ms at once (not inside it: the outcome is written by the loop's
  batched record-and-claim, and what the event is — completed, failed, dead — is known only from
  the job that transaction returns). For a job that finished it also looks whether its queue has
  no unfinished job left (``queue_empty``). Each row's id is derived from the job's change
  (job id, event, updated_at) or, for ``queue_empty``, from the queue's newest job, so two workers
  writing one notification keep one row.
- a *deliverer* per notifier (so a slow receiver holds up no other notifier) claims that notifier's
  due rows under a lease (as jobs are claimed: a worker that dies mid-delivery leaves the row to
  another once the lease ends; the lease is at least twice the notifier's ``timeout``, and rows of
  a batch not tried within half of it are left for the next claim), hands each to the notifier,
  one at a time, and records the outcome: delivered; or failed, due again after an
  exponential backoff (0.5 s, 1 s, 2 s ... at most a minute) until it is older than the notifier's
  ``max_age``, then dropped and counted ``expired``. A notifier whose ``max_age`` is 0 gets one try.

The window of loss: a worker killed (SIGKILL, power loss) after committing an outcome and before
the recorder wrote its row loses that notification; a graceful stop writes every row first.
"""

from __future__ import annotations

import queue
import random
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Sequence

from queuectl_core.errors import QueuectlError, RegistryError
from queuectl_core.jobs.notifications import NOTIFY_EVENTS, Notification, NotifyEvent, OutboxEntry, Outcome, body

if TYPE_CHECKING:
    from queuectl_core.framework.app import App
    from queuectl_core.framework.settings import Config
    from queuectl_core.jobs.models import Job, JobEvent
    from queuectl_core.jobs.notifications import Notifier, OutboxItem
    from queuectl_core.storage.capabilities import WithFallbacks

LEASE_SECONDS = 120.0  # a claimed row is due again after this, or twice the notifier's timeout
POLL_SECONDS = 1.0  # how often an idle deliverer looks for rows due (retries, other workers' rows)
BATCH = 20  # rows claimed at once
RETRY_FIRST, RETRY_MAX = 0.5, 60.0  # the backoff between tries of one row
KEEP_SETTLED_SECONDS = 86_400.0  # settled rows are kept a day: a repeated write of one is recognised
PRUNE_SECONDS = 3600.0  # how often a deliverer deletes settled rows older than that
RECORD_BATCH_SECONDS = 0.05  # the recorder writes the events of this long at once
CLOSE_SECONDS = 5.0  # at most this long, at a worker's stop, to write the rows and deliver what is due
WARN_SECONDS = 10.0  # at most one line per notifier this often about failed tries
_NAMESPACE = uuid.UUID("8f4a8c1e-3c55-4f7b-9a59-0e7c2a4f9b11")  # notification ids are uuid5 in it
_FINISHED = ("completed", "dead", "cancelled")
_NOTHING = object()


def notifiers(config: Config) -> dict[str, tuple[str, Notifier]]:
    """The configured notifiers, by name: (plugin, notifier). A factory that raises is reported in
    one line naming it, and that notifier is off; the others and the worker carry on."""
    from queuectl_core.framework.plugins import call_each, debug_traceback, warn

    found: dict[str, tuple[str, Any]] = {}

    def register(plugin: str) -> Any:
        def add(name: str, factory: Any) -> None:
            if name in found:
                raise RegistryError(f"two plugins provide the notifier {name!r}: {found[name][0]!r} and {plugin!r};"
                                    " disable one with QUEUECTL_DISABLE_PLUGINS")
            found[name] = (plugin, factory)
        return add

    call_each("queuectl_register_notifiers", register=register)
    built: dict[str, tuple[str, Notifier]] = {}
    for name, (plugin, factory) in sorted(found.items()):
        try:
            notifier = factory(config)
        except QueuectlError as exc:
            warn(f"queuectl: notifier {name!r} is off: {exc}")
            continue
        except Exception as exc:
            debug_traceback()
            warn(f"queuectl: notifier {name!r} (plugin {plugin!r}) is off: its factory failed: {exc!r}")
            continue
        if notifier is not None and notifier.events:
            built[name] = (plugin, notifier)
    return built


def notification_id(*parts: object) -> str:
    """A notification's id: the same for the same change, whichever worker writes it."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def entries(event: JobEvent, wanted: dict[str, frozenset[str]]) -> list[OutboxEntry]:
    """The outbox rows of one job event (``queue_empty`` apart), one per notifier that wants it."""
    from queuectl_core.jobs.timeutil import to_ms

    kind, job = str(event.kind), event.job
    if job is None or kind not in NOTIFY_EVENTS:
        return []
    names = [n for n, events in wanted.items() if kind in events]
    if not names:
        return []
    nid = notification_id(job.id, kind, to_ms(job.updated_at))
    doc = body(nid, kind, event.at, job)
    return [OutboxEntry(n, nid, kind, doc) for n in names]


def queue_empty_entries(storage: WithFallbacks, job: Job, at: Any,
                        wanted: dict[str, frozenset[str]]) -> list[OutboxEntry]:
    """``queue_empty`` rows when ``job``'s queue has no unfinished job left. Its id is the queue's
    newest job as it is now: every worker that sees the queue emptied by one finish writes the same
    id (the last of two finishing at once is the one that sees it empty, or both do, alike)."""
    from queuectl_core.jobs import lifecycle
    from queuectl_core.jobs.timeutil import to_ms

    names = [n for n, events in wanted.items() if NotifyEvent.QUEUE_EMPTY in events]
    if not names:
        return []
    if storage.count_jobs(states=list(lifecycle.UNFINISHED_STATES), queue=job.queue):
        return []
    newest = storage.list_jobs(queue=job.queue, limit=1)
    if not newest:
        return []
    nid = notification_id("queue_empty", job.queue, newest[0].id, to_ms(newest[0].updated_at))
    doc = body(nid, NotifyEvent.QUEUE_EMPTY, at, job)
    return [OutboxEntry(n, nid, str(NotifyEvent.QUEUE_EMPTY), doc) for n in names]


def notify_from_command(storage: Any, changed: Sequence[tuple[Job, Any]]) -> None:
    """Outbox rows for what a command did outside any worker (``cancel`` of a job that was not
    running, from the CLI, the dashboard or the Python API): written now, delivered by the workers.
    Never fails the command, which has already happened: a failure is one line on stderr."""
    kinds = [(job, str(kind)) for job, kind in changed if kind is not None and str(kind) in NOTIFY_EVENTS]
    if not kinds:
        return
    from queuectl_core.framework.app import current_app
    from queuectl_core.framework.plugins import debug_traceback, warn
    from queuectl_core.jobs.models import JobEvent
    from queuectl_core.storage.capabilities import with_fallbacks

    try:
        store = with_fallbacks(storage)
        if "Outbox" not in store.native:
            return  # only a worker's own memory would hold them: nobody would deliver them
        found = notifiers(current_app().config)
        wanted = {name: frozenset(n.events) for name, (_, n) in found.items()}
        rows: list[OutboxEntry] = []
        for job, kind in kinds:
            event = JobEvent(kind, job=job)  # type: ignore[arg-type]
            rows += entries(event, wanted)
            if kind in _FINISHED:
                rows += queue_empty_entries(store, job, event.at, wanted)
        if rows:
            store.outbox_add(rows)
    except Exception as exc:
        debug_traceback()
        warn(f"queuectl: could not write notifications: {exc}")


class Notifications:
    """The notification threads of one worker (see the module's docstring)."""

    def __init__(self, app: App, owner: str, found: dict[str, tuple[str, Notifier]]) -> None:
        from queuectl_core.framework.plugins import make_provider
        from queuectl_core.storage.capabilities import with_fallbacks

        self.owner = owner
        self.notifiers = found
        self.wanted = {name: frozenset(n.events) for name, (_, n) in found.items()}
        self.kinds = frozenset().union(*self.wanted.values()) - {str(NotifyEvent.QUEUE_EMPTY)}
        self.wants_queue_empty = any(NotifyEvent.QUEUE_EMPTY in e for e in self.wanted.values())
        if self.wants_queue_empty:
            self.kinds |= frozenset(_FINISHED)
        # A connection per thread: a storage connection is not shared between threads.
        config = app.config

        def connect() -> WithFallbacks:
            return with_fallbacks(make_provider(app.registries.storages, config["storage"], config))

        self.recorder_storage = connect()
        # A deliverer per notifier, so a slow or dead receiver holds up no other notifier.
        self.storages = {name: connect() for name in found}
        for storage in self.storages.values():
            if "Outbox" not in storage.native:
                # Core's fallback outbox lives in memory: every thread must share the one.
                storage.__dict__["_memory_outbox"] = self.recorder_storage._outbox
        self._events: queue.SimpleQueue[JobEvent | None] = queue.SimpleQueue()
        self._wakes = {name: threading.Event() for name in found}
        self._closing = threading.Event()
        self._last_warning: dict[str, float] = {}
        self._recorder = threading.Thread(target=self._record_loop, name="queuectl-notify-record", daemon=True)
        self._deliverers = [threading.Thread(target=self._deliver_loop, args=(name,), daemon=True,
                                             name=f"queuectl-notify-{name}") for name in found]

    @classmethod
    def start(cls, app: App, owner: str) -> Notifications | None:
        """The worker's notification threads, started; None when no notifier is configured (or
        they cannot start: reported in one line, and the worker runs without them)."""
        from queuectl_core.framework.plugins import debug_traceback, warn

        try:
            found = notifiers(app.config)
            if not found:
                return None
            self = cls(app, owner, found)
        except Exception as exc:
            debug_traceback()
            warn(f"[{owner}] notifications are off: {exc}")
            return None
        self._recorder.start()
        for thread in self._deliverers:
            thread.start()
        return self

    def offer(self, event: JobEvent) -> None:
        """Take an event from the worker's loop (no I/O: a put on a queue)."""
        if event.job is not None and event.kind in self.kinds:
            self._events.put(event)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write the rows of every event offered, then deliver what is due, for at most
        ``timeout`` seconds; what is left stays in the outbox for another worker (or this one's next
        start). The threads are daemons: a notifier stuck past that never holds the process."""
        deadline = time.monotonic() + timeout
        self._events.put(None)
        self._recorder.join(timeout)
        self._closing.set()
        for wake in self._wakes.values():
            wake.set()
        for thread in self._deliverers:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._recorder.is_alive() or any(t.is_alive() for t in self._deliverers):
            return  # a thread still uses its connection: the process's exit closes them
        for storage in (self.recorder_storage, *self.storages.values()):
            try:
                storage.close()
            except Exception:
                pass

    # -- the recorder -----------------------------------------------------------------------
    def _record_loop(self) -> None:
        pending: list[OutboxEntry] = []  # rows to write, kept through a storage outage
        # The last finished job of each queue, whose queue may be empty now (a later one of a queue
        # replaces an earlier: the job whose end emptied it is the last to finish).
        checks: dict[str, tuple[Job, Any]] = {}
        stop = False
        while True:
            if not stop:
                first: Any = _NOTHING
                try:  # wait for events; with rows held back by an outage, retry them twice a second
                    first = self._events.get(timeout=0.5 if pending or checks else None)
                except queue.Empty:
                    pass
                if first is not _NOTHING and first is not None:
                    # A busy worker finishes a job every few ms: one write for what comes in this
                    # while, not one each, keeps the storage's lock free for the worker's own writes.
                    time.sleep(RECORD_BATCH_SECONDS)
                for event in self._drain(first):
                    if event is None:
                        stop = True
                        continue
                    pending += entries(event, self.wanted)
                    if str(event.kind) in _FINISHED and event.job is not None and self.wants_queue_empty:
                        checks.pop(event.job.queue, None)
                        checks[event.job.queue] = (event.job, event.at)
            try:
                for name, (job, at) in list(checks.items()):
                    pending += queue_empty_entries(self.recorder_storage, job, at, self.wanted)
                    del checks[name]
                if pending:
                    self.recorder_storage.outbox_add(pending)
                    pending = []
                    for wake in self._wakes.values():
                        wake.set()
            except Exception as exc:
                self._warn("outbox", f"could not write notifications (will retry): {exc}")
                if stop:
                    if self._closing.is_set():
                        return  # the worker has stopped waiting: these are lost
                    time.sleep(0.2)
                continue
            if stop:
                return

    def _drain(self, first: Any) -> list[Any]:
        """``first`` (unless nothing came) and every event queued after it."""
        events = [] if first is _NOTHING else [first]
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    # -- the deliverer ----------------------------------------------------------------------
    def _deliver_loop(self, name: str) -> None:
        storage, wake = self.storages[name], self._wakes[name]
        notifier = self.notifiers[name][1]
        # The lease outlasts any one try: a try still under way is never handed to another worker.
        lease = max(LEASE_SECONDS, 2 * float(getattr(notifier, "timeout", 0) or 0))
        next_prune = time.monotonic()
        while True:
            closing = self._closing.is_set()
            items: list[OutboxItem] = []
            try:
                items = storage.outbox_claim(self.owner, [name], lease, BATCH)
                claimed = time.monotonic()
                for item in items:
                    if time.monotonic() - claimed > lease / 2:
                        break  # slow tries: the rest are due again when their lease ends, for any worker
                    self._try(storage, notifier, item)
                if time.monotonic() >= next_prune and not closing:
                    next_prune = time.monotonic() + PRUNE_SECONDS
                    storage.outbox_prune(KEEP_SETTLED_SECONDS)
            except Exception as exc:
                self._warn("outbox", f"could not use the notification outbox (will retry): {exc}")
            if closing:
                if len(items) < BATCH:
                    return
                continue
            if len(items) < BATCH:
                wake.wait(POLL_SECONDS)
                wake.clear()

    def _try(self, storage: WithFallbacks, notifier: Notifier, item: OutboxItem) -> None:
        """One delivery try of a claimed row, and its outcome recorded."""
        name = item.entry.notifier
        age = (storage.now() - item.created_at).total_seconds()
        if notifier.max_age > 0 and age > notifier.max_age:
            storage.outbox_settle(item, Outcome.EXPIRED, None, "older than max_age")
            self._warn(name, f"notifier {name!r} dropped the {item.entry.event} notification {item.entry.id}: not"
                             f" delivered within max_age ({item.tries - 1} tries)", force=True)
            return
        try:
            notifier.deliver(Notification.from_entry(item.entry, item.tries))
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            if notifier.max_age <= 0:
                storage.outbox_settle(item, Outcome.FAILED, None, error)
                self._warn(name, f"notifier {name!r} failed ({item.entry.event}): {error}")
                return
            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (item.tries - 1)) * random.uniform(0.8, 1.0)
            storage.outbox_settle(item, Outcome.FAILED, delay, error)
            self._warn(name, f"notifier {name!r} failed ({item.entry.event}), retrying in {delay:.0f}s: {error}")
            return
        storage.outbox_settle(item, Outcome.DELIVERED, None)

    def _warn(self, key: str, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_warning.get(key, -WARN_SECONDS) >= WARN_SECONDS:
            self._last_warning[key] = now
            try:
                print(f"[{self.owner}] {message}", file=sys.stderr, flush=True)
            except Exception:
                pass


__all__ = ["Notifications", "entries", "notification_id", "notifiers", "notify_from_command", "queue_empty_entries"]
