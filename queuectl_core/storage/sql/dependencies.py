"""Dependencies (``after``): recording them at enqueue, and executing what the lifecycle decides
for the jobs waiting on one that changed, in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase
from queuectl_core.storage.sql.dialect import CHUNK
from queuectl_core.storage.sql.dialect import in_list as _in
from queuectl_core.storage.sql.dialect import named as _names
from queuectl_core.storage.sql.rows import COLS

if TYPE_CHECKING:
    from typing import Any, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.lifecycle import Change
    from queuectl_core.jobs.models import NewJob


class DependenciesMixin(SQLBase):
    def _after_insert(self, tx: Tx, jobs: Sequence[NewJob]) -> dict[str, Sequence[Any]]:
        """Record ``after``: refuse unknown parents (rolling the batch back), count each child's
        unfinished parents, and apply to them what the lifecycle makes of a parent that already
        ended (dead or cancelled: they are cancelled).
        Returns the re-read rows of the children."""
        children = [j for j in jobs if j.after]
        if not children:
            return {}
        from queuectl_core.jobs import lifecycle  # here: most enqueues have no `after` (lifecycle ~3 ms to import)

        batch = {j.id for j in jobs}
        outside = sorted({p for j in children for p in j.after if p not in batch})
        states: dict[str, str] = {}
        for start in range(0, len(outside), CHUNK):
            chunk = outside[start:start + CHUNK]
            names = _names("p", chunk)
            # FOR SHARE: a parent cannot finish between this read and our commit, so its
            # completion (which releases the children it sees) never misses these edges.
            rows = self._q(tx, "SELECT id, state FROM {j} WHERE id IN (" + _in(names) + ")"
                           + self.dialect.for_share, **names)
            states.update({r[0]: r[1] for r in rows})
        for job in children:
            for parent in job.after:
                if parent not in batch and parent not in states:
                    raise lifecycle.unknown_parent(job.id, parent, len(batch))
        met = {p for p, state in states.items() if lifecycle.dependency_met(state)}
        edges = [{"child": j.id, "parent": p, "done": p in met} for j in children for p in j.after]
        tx.many(self._sql("INSERT INTO {dp} (child, parent, done) VALUES (:child, :parent, :done)"), edges)
        child_ids = [j.id for j in children]
        for start in range(0, len(child_ids), CHUNK):
            chunk = child_ids[start:start + CHUNK]
            names = _names("c", chunk)
            self._q(tx, "UPDATE {j} SET waiting = (SELECT count(*) FROM {dp} d WHERE d.child = {j}.id AND NOT d.done)"
                    " WHERE id IN (" + _in(names) + ") RETURNING id", **names)
        for parent, state in states.items():
            if parent not in met:  # an ended parent's dependants: what the lifecycle makes of them
                self._dependants(tx, parent, lifecycle.dependants(parent, state))
        out: dict[str, Sequence[Any]] = {}
        for start in range(0, len(child_ids), CHUNK):
            chunk = child_ids[start:start + CHUNK]
            names = _names("c", chunk)
            for r in self._q(tx, "SELECT " + COLS + " FROM {j} WHERE id IN (" + _in(names) + ")", **names):
                out[r[0]] = r
        return out

    def _dependants(self, tx: Tx, parent: str, change: Change | None) -> int:
        """Apply ``change`` (the lifecycle's :func:`~queuectl_core.jobs.lifecycle.dependants` of
        ``parent``) to every job still waiting on ``parent``, then each changed job's own
        dependants in turn, down the chain (breadth first, one indexed statement a job), all in
        ``tx``: atomic with the parent's own change. Returns how many jobs it changed."""
        from queuectl_core.jobs import lifecycle

        changed = 0
        frontier = [(parent, change)]
        while frontier:
            after: list[tuple[str, Change | None]] = []
            for p, c in frontier:
                if c is None:
                    continue
                if c.parent_met:
                    # Once per edge, so a parent restarted and completed again never releases a
                    # child twice.
                    rows = self._q(tx, "UPDATE {dp} SET done = " + self.dialect.true + " WHERE parent = :parent"
                                   " AND NOT done RETURNING child", parent=p)
                    for (child,) in rows:
                        changed += len(self._q(tx, "UPDATE {j} SET waiting = waiting - 1 WHERE id = :id"
                                                   " AND waiting > 0 RETURNING id", id=child))
                    continue
                sql, params = self._change_sql(c, "id IN (SELECT child FROM {dp} WHERE parent = :parent AND NOT done)"
                                                  " AND waiting > 0")
                rows = self._q(tx, sql, parent=p, **params)
                changed += len(rows)
                after += [(r[0], lifecycle.dependants_of(r[0], c)) for r in rows]
            frontier = after
        return changed

    # -- reads ------------------------------------------------------------------------------
    def burst_remaining(self, queues: Sequence[str] | None = None) -> tuple[int, int]:
        """(jobs a ``--burst`` worker of ``queues`` still waits for, how many of them run now).

        It waits for: its queues' running jobs (even in a paused queue: they finish); their
        pending and failed jobs with nothing left to wait for, unless the queue is paused; and
        running jobs anywhere that a job of its unpaused queues waits on. A job waiting on a
        parent it does not wait for (one in a paused or unserved queue) does not hold it."""
        served, params = "", {}
        if queues is not None:
            names = _names("qn", list(queues))
            params.update(names)
            served = " AND {alias}.queue IN (" + (_in(names) or "NULL") + ")"
        sql = (
            "SELECT (SELECT count(*) FROM {j} r WHERE r.state = 'processing'" + served.format(alias="r") + "),"
            " (SELECT count(*) FROM {j} j JOIN {qt} q ON q.name = j.queue WHERE NOT q.paused"
            " AND j.state IN ({runnable}) AND j.waiting = 0" + served.format(alias="j") + "),"
            " (SELECT count(*) FROM {j} p WHERE p.state = 'processing' AND EXISTS (SELECT 1 FROM {dp} d"
            " JOIN {j} c ON c.id = d.child JOIN {qt} q ON q.name = c.queue WHERE d.parent = p.id AND NOT d.done"
            " AND NOT q.paused AND c.state = 'pending'" + served.format(alias="c") + "))"
        )
        running, ready, parents = self._read(sql, **params)[0]
        return running + ready + parents, running + parents

    def waits_on(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        """For each of ``job_ids`` that waits on others, the ids it still waits for."""
        out: dict[str, list[str]] = {}
        ids = list(job_ids)
        for start in range(0, len(ids), CHUNK):
            names = _names("c", ids[start:start + CHUNK])
            for child, parent in self._read("SELECT child, parent FROM {dp} WHERE NOT done AND child IN ("
                                            + _in(names) + ") ORDER BY child, parent", **names):
                out.setdefault(child, []).append(parent)
        return out
