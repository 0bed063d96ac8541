"""The notification outbox (the optional ``Outbox`` capability), for every SQL backend.

Two tables, created by each backend's migration: ``outbox`` (one row per notification per
notifier, keyed by ``(notifier, id)``, kept for a while after it is settled so that a repeated write
is recognised) and ``notification_counts`` (every try's outcome per notifier, what ``/metrics``
reads). A row is claimed as a job is: one statement moves its ``due_at`` a lease ahead under a new
token, so a claimer that dies leaves it due again when the lease ends, and concurrent claimers skip
each other's rows (``SKIP LOCKED`` on PostgreSQL; SQLite serialises writers).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase
from queuectl_core.storage.sql.dialect import in_list, named

if TYPE_CHECKING:
    from typing import Any, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.notifications import OutboxEntry, OutboxItem


class OutboxMixin(SQLBase):
    outbox_table = "outbox"  # qualified by a backend that keeps its tables in a schema
    notify_counts_table = "notification_counts"

    def _ob(self, tx: Tx, sql: str, **params: Any) -> list[Sequence[Any]]:
        # The two table names are filled in here, so the shared statement machinery needs no new names.
        return self._q(tx, sql.replace("{ob}", self.outbox_table).replace("{nc}", self.notify_counts_table), **params)

    def outbox_add(self, entries: Sequence[OutboxEntry]) -> list[str]:
        def add(tx: Tx) -> list[str]:
            added = []
            for e in entries:
                rows = self._ob(tx, "INSERT INTO {ob} (notifier, id, event, body, created_at, due_at, tries)"
                                    " VALUES (:notifier, :id, :event, :body, {now}, {now}, 0)"
                                    " ON CONFLICT (notifier, id) DO NOTHING RETURNING id",
                                notifier=e.notifier, id=e.id, event=e.event, body=e.body)
                added += [r[0] for r in rows]
            return added

        return self._tx(add) if entries else []

    def outbox_claim(self, owner: str, notifiers: Sequence[str], lease_seconds: float,
                     limit: int) -> list[OutboxItem]:
        from queuectl_core.jobs.notifications import OutboxEntry, OutboxItem

        if not notifiers or limit <= 0:
            return []
        names = named("n", list(notifiers))
        token = os.urandom(8).hex()  # as a job lease's token
        sql = ("UPDATE {ob} SET due_at = " + self.dialect.after("lease") + ", tries = tries + 1, token = :token,"
               " owner = :owner WHERE (notifier, id) IN (SELECT notifier, id FROM {ob} WHERE settled_at IS NULL"
               f" AND due_at <= {{now}} AND notifier IN ({in_list(names)}) ORDER BY created_at, id LIMIT :limit"
               f"{self.dialect.skip_locked}) RETURNING notifier, id, event, body, created_at, tries")
        rows = self._tx(lambda tx: self._ob(tx, sql, lease=float(lease_seconds), token=token, owner=owner,
                                            limit=int(limit), **names))
        t = self.dialect.from_db
        items = [OutboxItem(OutboxEntry(r[0], r[1], r[2], r[3]), t(r[4]), r[5], token) for r in rows]
        return sorted(items, key=lambda i: (i.created_at, i.entry.id))

    def outbox_settle(self, item: OutboxItem, outcome: str, retry_in: float | None,
                      error: str | None = None) -> bool:
        if retry_in is None:
            when = "settled_at = {now}"
        else:
            when = "due_at = " + self.dialect.after("retry")
        sql = ("UPDATE {ob} SET token = NULL, owner = NULL, outcome = :outcome, last_error = :error, " + when +
               " WHERE notifier = :notifier AND id = :id AND token = :token AND settled_at IS NULL RETURNING id")

        def settle(tx: Tx) -> bool:
            params: dict[str, Any] = {"outcome": outcome, "error": error, "notifier": item.entry.notifier,
                                      "id": item.entry.id, "token": item.token}
            if retry_in is not None:
                params["retry"] = float(retry_in)
            if not self._ob(tx, sql, **params):
                return False
            self._ob(tx, "INSERT INTO {nc} (notifier, outcome, n) VALUES (:notifier, :outcome, 1)"
                         " ON CONFLICT (notifier, outcome) DO UPDATE SET n = {nc}.n + 1 RETURNING n",
                     notifier=item.entry.notifier, outcome=outcome)
            return True

        return self._tx(settle)

    def notification_counts(self) -> dict[tuple[str, str], int]:
        rows = self._tx(lambda tx: self._ob(tx, "SELECT notifier, outcome, n FROM {nc}"), write=False)
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def outbox_prune(self, older_than: float) -> int:
        sql = ("DELETE FROM {ob} WHERE settled_at IS NOT NULL AND settled_at < " + self.dialect.after("age") +
               " RETURNING id")
        return len(self._tx(lambda tx: self._ob(tx, sql, age=-float(older_than))))


__all__ = ["OutboxMixin"]
