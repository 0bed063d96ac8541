"""Schedules: stored once for every host, each tick enqueued exactly once."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase

if TYPE_CHECKING:
    from typing import Any, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.models import Job, NewJob
    from queuectl_core.jobs.records import Schedule


class SchedulesMixin(SQLBase):
    def add_schedule(self, schedule: Schedule) -> None:
        """Store a new schedule; ValidationError when the name is taken."""
        import json

        from queuectl_core.errors import ValidationError

        def run(tx: Tx) -> list[Sequence[Any]]:
            return self._q(tx, "INSERT INTO {sc} (name, cron, every, tz, job, paused, created_at, last_tick)"
                           " VALUES (:name, :cron, :every, :tz, :job, FALSE, {now}, NULL)"
                           " ON CONFLICT (name) DO NOTHING RETURNING name",
                           name=schedule.name, cron=schedule.cron, every=schedule.every, tz=schedule.tz,
                           job=json.dumps(schedule.job, sort_keys=True))

        if not self._tx(run):
            raise ValidationError(f"a schedule named {schedule.name!r} already exists")

    def schedules(self) -> list[Schedule]:
        import json

        from queuectl_core.jobs.records import Schedule

        t = self.dialect.from_db
        return [Schedule(name=r[0], cron=r[1], every=r[2], tz=r[3], job=json.loads(r[4]), paused=bool(r[5]),
                         created_at=t(r[6]), last_tick=t(r[7]) if r[7] is not None else None)
                for r in self._read("SELECT name, cron, every, tz, job, paused, created_at, last_tick FROM {sc}"
                                    " ORDER BY name")]

    def remove_schedule(self, name: str) -> bool:
        return bool(self._tx(lambda tx: self._q(tx, "DELETE FROM {sc} WHERE name = :name RETURNING name", name=name)))

    def set_schedule_paused(self, name: str, paused: bool) -> bool:
        # Resuming skips the ticks missed while paused: the last tick becomes now.
        return bool(self._tx(lambda tx: self._q(
            tx, "UPDATE {sc} SET paused = :paused" + ("" if paused else ", last_tick = CASE WHEN last_tick IS NULL OR last_tick < {now}"
                                                      " THEN {now} ELSE last_tick END") +
            " WHERE name = :name RETURNING name", name=name, paused=paused)))

    def enqueue_tick(self, name: str, tick: datetime, job: NewJob) -> Job | None:
        """Enqueue ``job`` for the schedule's tick ``tick`` exactly once across every worker and
        host: only if the schedule's last enqueued tick is earlier (a compare-and-set on its row)
        and the job id (``NAME@tick``) is new (the primary key). None when another won."""
        from queuectl_core.errors import DuplicateJobError, UniqueKeyError

        class _Lost(Exception):
            pass

        def run(tx: Tx) -> Job | None:
            moved = self._q(tx, "UPDATE {sc} SET last_tick = :tick WHERE name = :name AND NOT paused"
                            " AND (last_tick IS NULL OR last_tick < :tick) RETURNING name",
                            name=name, tick=self.dialect.to_db(tick))
            if not moved:
                return None
            self._before_insert(tx, [job])
            rows = self._insert(tx, [job])
            if not rows:
                raise _Lost()  # the id exists: roll the schedule's row back too
            tx.wake()
            return self._job(rows[0])

        try:
            return self._tx(run)
        except (_Lost, DuplicateJobError):
            return None
        except UniqueKeyError:
            return None  # the schedule's unique_key is still held by an earlier tick's job
