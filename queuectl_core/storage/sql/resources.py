"""What jobs need, what workers have, and pools (the optional ``ResourceNeeds`` capability).

A job's needs are stored on its row (``needs``, ``"gpu=1"``: one text per *need class*) and, once
per class, unit by unit in the need-units table, which the claim joins. A worker's declared
resources are rows of the worker-resources table (keyed like the worker); pools are rows of the
pools table. What is in use is never stored: it is the sum over the ``processing`` jobs, so a
job taken back from a dead worker gives its units back in the same write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import SQLBase
from queuectl_core.storage.sql.dialect import in_list as _in
from queuectl_core.storage.sql.dialect import named as _names
from queuectl_core.storage.sql.rows import NEEDS_AT

if TYPE_CHECKING:
    from typing import Any, Mapping, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.models import NewJob
    from queuectl_core.jobs.needs import ResourceUsage

# Units of ``name`` (the SQL expression) held by processing jobs: every worker's (a pool), or the
# claiming worker's (its own resources). Driven from the processing jobs with needs (the small
# jobs_running_needs index), each looking up its class's units by primary key.
_UNITS = "(SELECT ru.units FROM {nu} ru WHERE ru.needs = r.needs AND ru.name = NAME)"
_USED = ("(SELECT COALESCE(sum(" + _UNITS + "), 0) FROM {j} r WHERE r.state = 'processing'"
         " AND r.needs IS NOT NULL)")
_USED_HERE = ("(SELECT COALESCE(sum(" + _UNITS + "), 0) FROM {j} r WHERE r.state = 'processing'"
              " AND r.needs IS NOT NULL AND r.worker_id = :worker AND COALESCE(r.host, '') = :whost)")
# A need class (``nc.needs``) fits when none of its units asks for more than is free: of the pool
# of that name when there is one, else of the claiming worker's declared resources.
FITS = ("NOT EXISTS (SELECT 1 FROM {nu} u WHERE u.needs = nc.needs AND u.units > CASE"
        " WHEN EXISTS (SELECT 1 FROM {rp} p WHERE p.name = u.name)"
        " THEN (SELECT p.capacity FROM {rp} p WHERE p.name = u.name) - " + _USED.replace("NAME", "u.name") +
        " ELSE COALESCE((SELECT wr.units FROM {wr} wr WHERE wr.hostname = :whost AND wr.worker_id = :worker"
        " AND wr.name = u.name), 0) - " + _USED_HERE.replace("NAME", "u.name") + " END)")


def claim_pick(d: Any, ready: str, cond: str) -> str:
    """The claim's choice of one job id, needs and all: each open queue's best job needing
    nothing (``jobs_ready``, ``needs IS NULL``), and its best job of each need class that fits
    now (``jobs_ready_needs (queue, needs, ...)``), the best of those. A class that does not fit
    costs one row of the need-units table, never a walk over its waiting jobs."""
    order = " ORDER BY priority DESC, run_at, id LIMIT 1"
    classes = "(SELECT DISTINCT nc.needs FROM {nu} nc WHERE " + FITS + ")"
    if d.lateral:
        plain = ("SELECT c.id, c.priority, c.run_at FROM {qt} q CROSS JOIN LATERAL (SELECT id, priority, run_at"
                 " FROM {j} WHERE queue = q.name AND needs IS NULL AND " + ready + order + d.skip_locked +
                 ") c WHERE " + cond)
        needy = ("SELECT c.id, c.priority, c.run_at FROM {qt} q CROSS JOIN " + classes + " n CROSS JOIN LATERAL"
                 " (SELECT id, priority, run_at FROM {j} WHERE queue = q.name AND needs IS NOT NULL"
                 " AND needs = n.needs AND " + ready + order + d.skip_locked + ") c WHERE " + cond)
    else:
        hint = d.ready_index.replace("jobs_ready", "jobs_ready_needs")
        plain = ("SELECT c.id, c.priority, c.run_at FROM {qt} q JOIN {j} c ON c.id = (SELECT id FROM {j} " +
                 d.ready_index + " WHERE queue = q.name AND needs IS NULL AND " + ready + order + ") WHERE " + cond)
        needy = ("SELECT c.id, c.priority, c.run_at FROM {qt} q CROSS JOIN " + classes + " n JOIN {j} c ON c.id ="
                 " (SELECT id FROM {j} " + hint + " WHERE queue = q.name AND needs IS NOT NULL AND needs = n.needs"
                 " AND " + ready + order + ") WHERE " + cond)
    return "SELECT id FROM (" + plain + " UNION ALL " + needy + ") u ORDER BY priority DESC, run_at, id LIMIT 1"


class PoolFull(Exception):
    """A pool filled up under a racing claim (PostgreSQL): the claim rolls back and tries again."""


class ResourcesMixin(SQLBase):
    # -- at enqueue -----------------------------------------------------------------------------
    def _insert_needs(self, tx: Tx, jobs: Sequence[NewJob]) -> None:
        """After a batch's insert (which writes each job's ``needs`` column): record the units of
        its jobs' need classes. A batch needing nothing costs one pass over it."""
        if not any(j.needs for j in jobs):
            return
        from queuectl_core.jobs.needs import needs_text

        classes = {needs_text(j.needs): j.needs for j in jobs if j.needs}
        tx.many(self._sql("INSERT INTO {nu} (needs, name, units) VALUES (:needs, :name, :units)"
                          " ON CONFLICT (needs, name) DO NOTHING"),
                [{"needs": t, "name": k, "units": v} for t, needs in classes.items() for k, v in needs.items()])

    # -- at claim (PostgreSQL): a pool's row lock, as a limited queue's ---------------------------
    def _check_pools(self, tx: Tx, row: Sequence[Any]) -> None:
        """Under the row lock of every pool the claimed job needs (held to commit, taken in name
        order), count again: racing claimers of one pool are serialised there, never over it."""
        text = row[NEEDS_AT]
        if not text:
            return
        from queuectl_core.jobs.needs import needs_from_text

        for name in sorted(needs_from_text(text)):
            found = self._q(tx, "SELECT capacity FROM {rp} WHERE name = :name" + self.dialect.for_update, name=name)
            if found and self._q(tx, "SELECT " + _USED.replace("NAME", ":name"), name=name)[0][0] > found[0][0]:
                raise PoolFull(name)

    # -- workers --------------------------------------------------------------------------------
    def declare_resources(self, worker_id: str, resources: Mapping[str, str]) -> None:
        """Record what a worker of this host has (``{name: spec}``), replacing what a worker of
        that id declared before; declarations of workers no longer registered are dropped."""
        from queuectl_core.jobs.needs import units_of

        def run(tx: Tx) -> None:
            self._q(tx, "DELETE FROM {wr} WHERE (hostname = :host AND worker_id = :id) OR NOT EXISTS"
                    " (SELECT 1 FROM {w} w WHERE w.hostname = {wr}.hostname AND w.id = {wr}.worker_id)"
                    " RETURNING name", host=self.hostname, id=worker_id)
            if resources:
                tx.many(self._sql("INSERT INTO {wr} (hostname, worker_id, name, units, spec)"
                                  " VALUES (:host, :id, :name, :units, :spec)"),
                        [{"host": self.hostname, "id": worker_id, "name": k, "units": units_of(k, v), "spec": v}
                         for k, v in resources.items()])
            tx.wake()

        self._tx(run)

    def never_servable(self, worker_id: str, queues: Sequence[str] | None = None) -> int:
        """Of the jobs ``burst_remaining`` counts as runnable (pending or failed, waiting on
        nothing, in an unpaused queue of ``queues``), how many need more of something than this
        worker could ever be given: more than its pool's capacity, or (no pool of that name) more
        than the worker declared."""
        served, params = "", {}
        if queues is not None:
            names = _names("qn", list(queues))
            params.update(names)
            served = " AND j.queue IN (" + (_in(names) or "NULL") + ")"
        sql = ("SELECT count(*) FROM {j} j JOIN {qt} q ON q.name = j.queue WHERE NOT q.paused"
               " AND j.state IN ({runnable}) AND j.waiting = 0 AND j.needs IS NOT NULL" + served +
               " AND EXISTS (SELECT 1 FROM {nu} u WHERE u.needs = j.needs AND u.units > CASE"
               " WHEN EXISTS (SELECT 1 FROM {rp} p WHERE p.name = u.name)"
               " THEN (SELECT p.capacity FROM {rp} p WHERE p.name = u.name)"
               " ELSE COALESCE((SELECT wr.units FROM {wr} wr WHERE wr.hostname = :whost AND wr.worker_id = :worker"
               " AND wr.name = u.name), 0) END)")
        return int(self._read(sql, whost=self.hostname, worker=worker_id, **params)[0][0])

    # -- pools ----------------------------------------------------------------------------------
    def set_pool(self, name: str, capacity: int) -> None:
        def run(tx: Tx) -> None:
            self._q(tx, "INSERT INTO {rp} (name, capacity) VALUES (:name, :capacity)"
                    " ON CONFLICT (name) DO UPDATE SET capacity = :capacity RETURNING name", name=name, capacity=capacity)
            tx.wake()

        self._tx(run)

    def remove_pool(self, name: str) -> bool:
        def run(tx: Tx) -> bool:
            tx.wake()
            return bool(self._q(tx, "DELETE FROM {rp} WHERE name = :name RETURNING name", name=name))

        return self._tx(run)

    def resource_usage(self) -> ResourceUsage:
        from queuectl_core.jobs.needs import PoolUsage, ResourceUsage, WorkerUsage
        from queuectl_core.storage.sql.workers import WORKER_LIVE_SECONDS

        def run(tx: Tx) -> ResourceUsage:
            pools = [PoolUsage(r[0], r[1], r[2]) for r in self._q(
                tx, "SELECT p.name, p.capacity, " + _USED.replace("NAME", "p.name") + " FROM {rp} p ORDER BY p.name")]
            declared = self._q(tx, "SELECT wr.hostname, wr.worker_id, wr.name, wr.spec FROM {wr} wr JOIN {w} w"
                               " ON w.hostname = wr.hostname AND w.id = wr.worker_id WHERE w.last_seen >= " +
                               self.dialect.after("window") + " ORDER BY wr.hostname, wr.worker_id, wr.name",
                               window=-WORKER_LIVE_SECONDS)
            held = self._q(tx, "SELECT COALESCE(r.host, ''), r.worker_id, ru.name, sum(ru.units) FROM {j} r"
                           " JOIN {nu} ru ON ru.needs = r.needs WHERE r.state = 'processing' AND NOT EXISTS"
                           " (SELECT 1 FROM {rp} p WHERE p.name = ru.name) GROUP BY COALESCE(r.host, ''), r.worker_id, ru.name")
            return _usage(pools, declared, held, PoolUsage, WorkerUsage, ResourceUsage)

        return self._tx(run, write=False)


def _usage(pools: list[Any], declared: list[Sequence[Any]], held: list[Sequence[Any]], _p: Any, worker: Any,
           usage: Any) -> ResourceUsage:
    used = {(r[0], r[1], r[2]): int(r[3]) for r in held}
    workers: dict[tuple[str, str], dict[str, str]] = {}
    for host, wid, name, spec in declared:
        workers.setdefault((host, wid), {})[name] = spec
    out = [worker(wid, host, decl, {k: used[host, wid, k] for k in decl if (host, wid, k) in used})
           for (host, wid), decl in workers.items()]
    return usage(tuple(pools), tuple(out))
