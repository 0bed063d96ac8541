"""One SQL layer for every SQL storage backend: the statements, written once, over a small dialect.

A backend (SQLite, PostgreSQL, or a third party's) supplies a :class:`Dialect` (placeholders, the
clock expression, ``SKIP LOCKED``, time conversion) and a transaction runner; :class:`SQLStore` does
the rest of the Storage protocol. What a change *means* is decided in :mod:`queuectl_core.lifecycle`;
this layer only persists it, fenced in the statement's WHERE clause.
"""

from __future__ import annotations

import os
import re
from datetime import datetime

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see queuectl_core/__init__.py)

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

    from queuectl_core.interfaces import Tx
    from queuectl_core.lifecycle import Change
    from queuectl_core.models import Job, JobState, NewJob, QueueInfo, Schedule, WorkerInfo

    T = TypeVar("T")

# Start-up: every storage plugin module imports this one to subclass SQLStore, and `queuectl --help`
# imports every plugin module. So the models and the lifecycle are imported on first use, not here.


# A worker that has not been seen for this long is not listed as live.
WORKER_LIVE_SECONDS = 15.0

JOB_COLUMNS: tuple[str, ...] = ("id", "command", "state", "attempts", "max_retries", "priority", "created_at", "updated_at",
               "run_at", "timeout", "last_exit_code", "last_error", "log_path", "output_tail", "worker_id",
               "lease_token", "lease_expires_at", "cancel_requested",
               # -- scheduling (spec §11) --
               "queue", "waiting", "unique_key", "retry_on", "no_retry_on")
# -- §10 (control and visibility): where a job runs, its tags, how long its last attempt took ------
CONTROL_COLUMNS = ("cwd", "env", "tags", "last_duration")
JOB_COLUMNS += CONTROL_COLUMNS
_CONTROL_AT = JOB_COLUMNS.index(CONTROL_COLUMNS[0])
# -- end §10
_COLS = ", ".join(JOB_COLUMNS)
_QUEUE_COL = JOB_COLUMNS.index("queue")
_HELD = "'pending', 'failed', 'processing'"  # a unique_key is held in these states
_CHUNK = 500  # ids per IN list (SQLite's bound-variable limit, and sane statement sizes)
_RUNNABLE = "'pending', 'failed'"  # lifecycle.RUNNABLE_STATES (a test keeps them equal)


class _QueueFull(Exception):
    """A limited queue filled up under a racing claim: roll back, try the other queues."""

    def __init__(self, queue: str) -> None:
        self.queue = queue


class Dialect:
    """What differs between SQL databases, and nothing else.

    Statements are written with ``:name`` parameters; ``paramstyle`` "named" keeps them (sqlite3),
    "pyformat" rewrites them to ``%(name)s`` (psycopg). ``now`` is the SQL expression for the
    storage clock in stored time units (it may use the ``:now`` parameter, which every statement
    receives from ``clock_param()``), and ``after(p)`` is that clock plus ``:p`` seconds.
    ``to_db``/``from_db`` convert an aware datetime to and from the stored form.
    """

    # A plain class, not a dataclass: every storage plugin module imports this one at start-up,
    # and generating a 12-field dataclass costs `queuectl --help` about 2 ms.
    __slots__ = ("paramstyle", "now", "after", "to_db", "from_db", "clock_param", "skip_locked", "materialized",
                 "ready_index", "due_index", "true", "for_update", "for_share", "lateral", "writable_cte")

    def __init__(self, *, paramstyle: str, now: str, after: Callable[[str], str], to_db: Callable[[datetime], Any],
                 from_db: Callable[[Any], datetime], clock_param: Callable[[], Any], skip_locked: str = "",
                 materialized: str = "", ready_index: str = "", due_index: str = "", true: str = "TRUE",
                 for_update: str = "", for_share: str = "", lateral: bool = False, writable_cte: bool = False) -> None:
        self.paramstyle = paramstyle
        self.now = now
        self.after = after
        self.to_db = to_db
        self.from_db = from_db
        self.clock_param = clock_param
        self.skip_locked = skip_locked  # " FOR UPDATE SKIP LOCKED" where the database has it
        self.materialized = materialized  # "MATERIALIZED" where a CTE could otherwise be inlined
        self.ready_index = ready_index  # an index hint for the claim (SQLite's INDEXED BY)
        self.due_index = due_index
        self.true = true
        # Row locks where transactions run concurrently (PostgreSQL); empty where every write
        # transaction is serialised already (SQLite's BEGIN IMMEDIATE).
        self.for_update = for_update
        self.for_share = for_share
        self.lateral = lateral  # CROSS JOIN LATERAL for the per-queue claim walk
        # UPDATE ... RETURNING inside WITH (PostgreSQL): where each statement is a network round
        # trip, a claim reads its queue's limit, and a completion releases the jobs waiting on it,
        # in the same statement.
        self.writable_cte = writable_cte

    def sql(self, text: str) -> str:
        if self.paramstyle != "pyformat":
            return text
        return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", r"%(\1)s", text)


def __getattr__(name: str) -> Any:
    # ``Tx`` is a typing.Protocol, defined in queuectl_core.interfaces and still importable from
    # here: typing costs ~1.5 ms of every `queuectl enqueue` (bench/enqueue_floor.py), and this
    # module is on its path while Tx is only ever an annotation.
    if name == "Tx":
        from queuectl_core.interfaces import Tx

        return Tx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "Tx"])


class SQLStore:
    """The Storage protocol on any SQL database, given a dialect and three backend methods:
    :meth:`_tx` (run a function in one transaction, mapping driver errors to StorageError),
    :meth:`_insert` (the batch insert) and the worker-directory specifics."""

    dialect: Dialect
    jobs = "jobs"  # table names, qualified by a backend that keeps them in a schema
    workers = "workers"
    queues_table = "queues"  # -- scheduling (spec §11) --
    deps_table = "job_deps"
    schedules_table = "schedules"
    counts_table = "job_counts"  # -- scale (issue 10): per (queue, state, held) tallies the backend keeps exact
    hostname = ""

    # -- what a backend provides ----------------------------------------------------------
    def _tx(self, fn: Callable[[Tx], T], write: bool = True) -> T:
        raise NotImplementedError

    # -- rows -----------------------------------------------------------------------------
    def _job(self, row: Sequence[Any]) -> Job:
        from queuectl_core.models import Job, JobState

        t = self.dialect.from_db
        return Job(
            id=row[0], command=row[1], state=JobState(row[2]), attempts=row[3], max_retries=row[4],
            priority=row[5], created_at=t(row[6]), updated_at=t(row[7]), run_at=t(row[8]), timeout=row[9],
            last_exit_code=row[10], last_error=row[11], log_path=row[12], output_tail=row[13],
            worker_id=row[14], lease_token=row[15],
            lease_expires_at=t(row[16]) if row[16] is not None else None, cancel_requested=bool(row[17]),
            queue=row[18], waiting=row[19], unique_key=row[20], retry_on=_codes_in(row[21]),
            no_retry_on=_codes_in(row[22]),
            **_control_fields(row, _CONTROL_AT),
        )

    def _q(self, tx: Tx, sql: str, **params: Any) -> list[Sequence[Any]]:
        """Run one statement: ``{j}``, ``{w}``, ``{now}`` filled in and parameters in the dialect's
        style (cached per statement text: a worker's hot path repeats a handful of them)."""
        params["now"] = self.dialect.clock_param()
        return tx.rows(self._sql(sql), params)

    def _read(self, sql: str, **params: Any) -> list[Sequence[Any]]:
        return self._tx(lambda tx: self._q(tx, sql, **params), write=False)

    # -- jobs -----------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        from queuectl_core.errors import DuplicateJobError, UniqueKeyError

        if not jobs:
            return []
        ids = [j.id for j in jobs]
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise DuplicateJobError(job_id)
            seen.add(job_id)

        def insert(tx: Tx) -> dict[str, Sequence[Any]]:
            self._before_insert(tx, jobs)
            rows = self._insert(tx, jobs)
            if len(rows) != len(jobs):
                inserted = {r[0] for r in rows}
                raise DuplicateJobError(next(i for i in ids if i not in inserted))  # rolls the batch back
            by_id = {r[0]: r for r in rows}
            by_id.update(self._after_insert(tx, jobs))
            tx.wake()
            return by_id

        try:
            # The rows become Jobs after the commit and its wake-up: an idle worker's pick-up of
            # the job does not wait for them (W4).
            by_id = self._tx(insert)
        except UniqueKeyError as exc:
            if exc.holder is not None:
                raise
            # Lost a race to a concurrent enqueue: the constraint refused it; name the winner.
            keys = [j.unique_key for j in jobs if j.unique_key is not None]
            holders = self._holders(None, keys)
            key, holder = next(iter(holders.items()), (exc.key, None))
            raise UniqueKeyError(key, holder) from None
        return [self._job(by_id[i]) for i in ids]

    def enqueue_stream(self, batches: Iterable[Sequence[NewJob]]) -> Iterator[list[Job]]:
        """Insert every job of every batch in one transaction, all or none: an exception from
        ``batches`` (a bad line of a file) or from a batch (a duplicate id, a held unique key)
        rolls everything back. Ids must be unique across the batches (the caller checks; the
        primary key refuses it anyway). After the commit, the stored jobs come back batch by batch
        from a temporary spool file, so a million jobs never sit in memory at once."""
        import pickle
        import tempfile

        from queuectl_core.errors import DuplicateJobError, UniqueKeyError

        spool = tempfile.TemporaryFile(prefix="queuectl-enqueue-")
        last: list[Sequence[NewJob]] = []

        def insert(tx: Tx) -> int:
            total = 0
            queues: set[str] = set()
            for jobs in batches:
                if not jobs:
                    continue
                last[:] = [jobs]
                ids = [j.id for j in jobs]
                if len(set(ids)) != len(ids):
                    seen: set[str] = set()
                    for job_id in ids:
                        if job_id in seen:
                            raise DuplicateJobError(job_id)
                        seen.add(job_id)
                self._before_insert(tx, jobs, queues)
                rows = self._insert(tx, jobs)
                if len(rows) != len(jobs):
                    inserted = {r[0] for r in rows}
                    raise DuplicateJobError(next(i for i in ids if i not in inserted))
                if any(j.after for j in jobs):
                    by_id = {r[0]: r for r in rows}
                    by_id.update(self._after_insert(tx, jobs))
                    rows = [by_id[i] for i in ids]
                pickle.dump(_columns(rows), spool, protocol=pickle.HIGHEST_PROTOCOL)
                total += len(rows)
            if total:
                tx.wake()
            return total

        try:
            try:
                self._tx(insert)
            except UniqueKeyError as exc:
                if exc.holder is not None or not last:
                    raise
                # The last batch's keys (the refused one is among them), and the one the database
                # named, which may be an earlier batch's where storage defers the check (one COPY).
                keys = [j.unique_key for j in last[0] if j.unique_key is not None]
                if exc.key is not None and exc.key not in keys:
                    keys.insert(0, exc.key)
                holders = self._holders(None, keys)
                key, holder = next(iter(holders.items()), (exc.key, None))
                raise UniqueKeyError(key, holder) from None
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return self._unspool(spool)

    def _unspool(self, spool: Any) -> Iterator[list[Job]]:
        import pickle

        with spool:
            while True:
                try:
                    columns = pickle.load(spool)
                except EOFError:
                    return
                yield self._jobs_from_columns(columns)

    def _new_jobs(self, rows: Sequence[Sequence[Any]]) -> list[Job]:
        """:meth:`_job` for a batch just inserted: the same Jobs, built a column at a time."""
        return self._jobs_from_columns(_columns(rows))

    def _jobs_from_columns(self, columns: tuple[int, list[tuple[bool, Any]]]) -> list[Job]:
        """Jobs from :func:`_columns`' form of a batch's rows (what the enqueue spool holds): a
        column the batch shares (times, state, queue, cwd...) is converted once, not once a row,
        and the objects are built through fastinit (100,000 jobs: ~0.26 s -> ~0.07 s)."""
        from itertools import repeat

        from queuectl_core.fastinit import positional_factory
        from queuectl_core.models import Job, JobState

        n, cols = columns
        from_db = self.dialect.from_db

        def column(i: int, convert: Callable[[Any], Any] | None = None) -> Iterable[Any]:
            same, values = cols[i]
            if same:
                return repeat(values if convert is None else convert(values), n)
            if convert is None:
                return values
            done: dict[Any, Any] = {}
            out = []
            for v in values:
                c = done.get(v, done)
                if c is done:
                    c = done[v] = convert(v)
                out.append(c)
            return out

        def time(v: Any) -> Any:
            return from_db(v) if v is not None else None

        env_same, env = cols[_CONTROL_AT + 1]
        if env_same:  # every Job its own dict, as _job gives
            envs: Iterable[Any] = ([_json_loads(env) for _ in range(n)] if env else [{} for _ in range(n)])
        else:
            envs = [_json_loads(e) if e else {} for e in env]
        columns_in_order = [column(0), column(1), column(2, JobState), column(3), column(4), column(5),
                            column(6, time), column(7, time), column(8, time), column(9), column(10), column(11),
                            column(12), column(13), column(14), column(15), column(16, time), column(17, bool),
                            column(18), column(19), column(20), column(21, _codes_in), column(22, _codes_in),
                            column(_CONTROL_AT), envs, column(_CONTROL_AT + 2, _tags_in), column(_CONTROL_AT + 3)]
        return list(map(positional_factory(Job), *columns_in_order))

    # -- scheduling (spec §11): queues, unique keys and dependencies at enqueue ----------------
    def _holders(self, tx: Tx | None, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            names = _names("k", chunk)
            sql = ("SELECT unique_key, id FROM {j} WHERE unique_key IN (" + _in(names) + ")"
                   " AND state IN (" + _HELD + ")")
            rows = self._q(tx, sql, **names) if tx is not None else self._read(sql, **names)
            out.update({r[0]: r[1] for r in rows})
        return out

    def _before_insert(self, tx: Tx, jobs: Sequence[NewJob], queues: set[str] | None = None) -> None:
        """Queues named for the first time get a row; a unique key already held is refused,
        naming its holder (the partial unique index is what guarantees it under races).
        ``queues``: names this transaction has already made sure of (added to), so a stream of
        batches runs no statement here for them (PostgreSQL keeps one COPY open across them)."""
        from queuectl_core.errors import UniqueKeyError

        for name in sorted({j.queue for j in jobs}):
            if queues is not None:
                if name in queues:
                    continue
                queues.add(name)
            self._q(tx, "INSERT INTO {qt} (name, concurrency, paused) VALUES (:name, 0, FALSE)"
                    " ON CONFLICT (name) DO NOTHING RETURNING name", name=name)
        keys = [j.unique_key for j in jobs if j.unique_key is not None]
        if keys:
            holders = self._holders(tx, keys)
            if holders:
                key = next(k for k in keys if k in holders)
                raise UniqueKeyError(key, holders[key])

    def _after_insert(self, tx: Tx, jobs: Sequence[NewJob]) -> dict[str, Sequence[Any]]:
        """Record ``after``: refuse unknown parents (rolling the batch back), count each child's
        unfinished parents, and cancel children of parents that already ended dead or cancelled.
        Returns the re-read rows of the children."""
        children = [j for j in jobs if j.after]
        if not children:
            return {}
        from queuectl_core import lifecycle  # here: most enqueues have no `after` (lifecycle ~3 ms to import)
        from queuectl_core.errors import ValidationError

        batch = {j.id for j in jobs}
        outside = sorted({p for j in children for p in j.after if p not in batch})
        states: dict[str, str] = {}
        for start in range(0, len(outside), _CHUNK):
            chunk = outside[start:start + _CHUNK]
            names = _names("p", chunk)
            # FOR SHARE: a parent cannot finish between this read and our commit, so its
            # completion (which releases the children it sees) never misses these edges.
            rows = self._q(tx, "SELECT id, state FROM {j} WHERE id IN (" + _in(names) + ")"
                           + self.dialect.for_share, **names)
            states.update({r[0]: r[1] for r in rows})
        for job in children:
            for parent in job.after:
                if parent not in batch and parent not in states:
                    raise ValidationError(f"job {job.id!r}: 'after' names {parent!r}, and no such job exists")
        edges = [{"child": j.id, "parent": p, "done": states.get(p) == "completed"} for j in children for p in j.after]
        tx.many(self._sql("INSERT INTO {dp} (child, parent, done) VALUES (:child, :parent, :done)"), edges)
        child_ids = [j.id for j in children]
        for start in range(0, len(child_ids), _CHUNK):
            chunk = child_ids[start:start + _CHUNK]
            names = _names("c", chunk)
            self._q(tx, "UPDATE {j} SET waiting = (SELECT count(*) FROM {dp} d WHERE d.child = {j}.id AND NOT d.done)"
                    " WHERE id IN (" + _in(names) + ") RETURNING id", **names)
        for parent, state in states.items():
            if state in ("dead", "cancelled"):
                self._cascade(tx, parent, state, lifecycle.DEPENDENCY_REASON)
        out: dict[str, Sequence[Any]] = {}
        for start in range(0, len(child_ids), _CHUNK):
            chunk = child_ids[start:start + _CHUNK]
            names = _names("c", chunk)
            for r in self._q(tx, "SELECT " + _COLS + " FROM {j} WHERE id IN (" + _in(names) + ")", **names):
                out[r[0]] = r
        return out

    def _release_children(self, tx: Tx, parent: str) -> int:
        """A parent completed: each waiting child has one parent fewer to wait for (once per edge,
        so a parent restarted and completed again never releases a child twice)."""
        rows = self._q(tx, "UPDATE {dp} SET done = " + self.dialect.true + " WHERE parent = :parent AND NOT done"
                       " RETURNING child", parent=parent)
        if not rows:
            return 0
        released = 0
        for (child,) in rows:
            released += len(self._q(tx, "UPDATE {j} SET waiting = waiting - 1 WHERE id = :id AND waiting > 0"
                                    " RETURNING waiting", id=child))
        return released

    def _cascade(self, tx: Tx, parent: str, state: str, template: str) -> list[str]:
        """A parent ended dead or cancelled: every job still waiting on it is cancelled with the
        reason naming it, and so on down the chain (breadth first, one indexed statement a job)."""
        done: list[str] = []
        frontier = [(parent, state)]
        while frontier:
            nxt: list[tuple[str, str]] = []
            for p, p_state in frontier:
                rows = self._q(
                    tx, "UPDATE {j} SET state = 'cancelled', updated_at = {now}, last_exit_code = NULL,"
                    " last_error = :reason WHERE state = 'pending' AND waiting > 0 AND id IN"
                    " (SELECT child FROM {dp} WHERE parent = :parent AND NOT done) RETURNING id",
                    reason=template.format(parent=p, state=p_state), parent=p)
                nxt += [(r[0], "cancelled") for r in rows]
            done += [c for c, _ in nxt]
            frontier = nxt
        return done

    def _sql(self, sql: str) -> str:
        cache: dict[str, str] = self.__dict__.setdefault("_sql_cache", {})
        final = cache.get(sql)
        if final is None:
            final = cache[sql] = self.dialect.sql(sql.format(
                j=self.jobs, w=self.workers, now=self.dialect.now, qt=self.queues_table, dp=self.deps_table,
                sc=self.schedules_table, jc=self.counts_table))
        return final

    def _insert(self, tx: Tx, jobs: Sequence[NewJob]) -> list[Sequence[Any]]:
        """Insert the batch, skipping ids that exist; the rows inserted (every column). A backend
        may override this with a one-round-trip form."""
        out: list[Sequence[Any]] = []
        for j in jobs:
            out += self._q(
                tx, "INSERT INTO {j} (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                " run_at, timeout, cancel_requested, queue, unique_key, retry_on, no_retry_on, cwd, env, tags)"
                " VALUES (:id, :command, 'pending', 0, :max_retries, :priority,"
                " {now}, {now}, COALESCE(:run_at, " + self.dialect.after("delay") + "), :timeout, FALSE,"
                " :queue, :unique_key, :retry_on, :no_retry_on, :cwd, :env, :tags)"
                " ON CONFLICT (id) DO NOTHING RETURNING " + _COLS,
                id=j.id, command=j.command, max_retries=j.max_retries, priority=j.priority,
                run_at=self.dialect.to_db(j.run_at) if j.run_at is not None else None,
                delay=float(j.delay or 0), timeout=float(j.timeout) if j.timeout is not None else None,
                queue=j.queue, unique_key=j.unique_key, retry_on=codes_out(j.retry_on),
                no_retry_on=codes_out(j.no_retry_on), **control_values(j))
        return out

    def get(self, job_id: str) -> Job | None:
        rows = self._read("SELECT " + _COLS + " FROM {j} WHERE id = :id", id=job_id)
        return self._job(rows[0]) if rows else None

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  states: Sequence[JobState] | None = None, tag: str | None = None,
                  queue: str | None = None, before: str | None = None) -> list[Job]:
        """Newest first (created_at, then id, both descending), as `list` shows them; optionally only
        some states, one tag, one queue. ``before`` (a job id) starts after that job: keyset paging
        that walks the index, however deep."""
        where, params = self._filter(state, states, tag, queue)
        if before is not None:
            where += (" AND " if where else " WHERE ") + \
                "(created_at, id) < (SELECT created_at, id FROM {j} WHERE id = :before)"
            params["before"] = before
        sql = "SELECT " + _COLS + " FROM {j}" + where
        sql += " ORDER BY created_at DESC, id DESC" + (" LIMIT :limit" if limit is not None else "")
        return [self._job(r) for r in self._read(sql, limit=limit, **params)]

    def count_jobs(self, state: JobState | None = None, *, states: Sequence[JobState] | None = None,
                   tag: str | None = None, queue: str | None = None) -> int:
        """How many jobs :meth:`list_jobs` would list without a limit: from the tallies (constant
        time) unless a tag is asked for, which only the jobs themselves can answer."""
        if tag is None:
            wanted = {str(s) for s in ([state] if state is not None else []) + list(states or ())}
            return sum(n for q, s, _, n, _ in self._tallies()
                       if (not wanted or s in wanted) and (queue is None or q == queue))
        where, params = self._filter(state, states, tag, queue)
        return int(self._read("SELECT count(*) FROM {j}" + where, **params)[0][0])

    def _tallies(self) -> list[tuple[str, str, bool, int, int]]:
        """(queue, state, held by --after, jobs, their attempts), from the table the backend keeps
        exact on every write to the jobs (triggers; SQLite tallies its inserts in ``_insert``). A
        backend may keep several rows per key
        (PostgreSQL appends deltas, so concurrent workers never wait on one counter row): they are
        summed here."""
        rows = self._read("SELECT queue, state, held, sum(jobs), sum(attempts) FROM {jc} GROUP BY queue, state, held")
        return [(r[0], r[1], bool(r[2]), int(r[3]), int(r[4])) for r in rows if r[3] or r[4]]

    @staticmethod
    def _filter(state: JobState | None, states: Sequence[JobState] | None, tag: str | None,
                queue: str | None = None) -> tuple[str, dict[str, Any]]:
        wanted = [str(s) for s in ([state] if state is not None else []) + list(states or ())]
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if wanted:
            clauses.append("state IN (" + ", ".join(f":s{i}" for i in range(len(wanted))) + ")")
            params.update({f"s{i}": s for i, s in enumerate(wanted)})
        if tag is not None:
            # Tags are stored ",a,b," (tag names exclude commas); LIKE's wildcards are escaped.
            clauses.append("tags LIKE :tag ESCAPE '!'")
            params["tag"] = "%," + re.sub(r"([!%_])", r"!\1", tag) + ",%"
        if queue is not None:
            # Queues are §11's: with a `queue` column, filter on it; without, every job is in "default".
            if "queue" in JOB_COLUMNS:
                clauses.append("queue = :queue")
                params["queue"] = queue
            elif queue != "default":
                clauses.append("1 = 0")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def pending_summary(self) -> tuple[int, int, datetime | None]:
        """Pending jobs split into (ready now, scheduled later), and the earliest run_at among
        runnable jobs that are due (pending or failed): how long the oldest ready job has waited.

        Ready is the tallied pending jobs (not held by --after) less the scheduled ones, which are
        counted off the due index per queue: the cost grows with the jobs scheduled for later,
        never with the ready or finished ones. The oldest is each queue's first due-index entry."""
        due = self.dialect.due_index
        per_queue = ("SELECT (SELECT count(*) FROM {j} " + due + " WHERE queue = q.name AND state IN (" + _RUNNABLE
                     + ") AND waiting = 0 AND run_at > {now} AND state = 'pending') AS later,"
                     " (SELECT min(run_at) FROM {j} " + due + " WHERE queue = q.name AND state IN (" + _RUNNABLE
                     + ") AND waiting = 0) AS first FROM {qt} q")
        # One statement, one snapshot: the tally and the scheduled count agree.
        rows = self._read("SELECT (SELECT sum(jobs) FROM {jc} WHERE state = 'pending' AND NOT held), sum(later),"
                          " min(CASE WHEN first <= {now} THEN first END) FROM (" + per_queue + ") x")
        free, scheduled, oldest = (int(rows[0][0] or 0), int(rows[0][1] or 0), rows[0][2]) if rows else (0, 0, None)
        return max(0, free - scheduled), scheduled, self.dialect.from_db(oldest) if oldest is not None else None

    def delete(self, job_ids: Sequence[str], states: Sequence[JobState]) -> list[Job] | None:
        """Delete every listed job, only if each exists and is in one of ``states``; otherwise
        delete nothing and return None. The deleted jobs (for their logs) on success."""
        if not job_ids:
            return []
        ids = list(dict.fromkeys(job_ids))
        sql = ("DELETE FROM {j} WHERE id IN (" + ", ".join(f":i{n}" for n in range(len(ids))) + ") AND state IN ("
               + ", ".join(f"'{s}'" for s in states) + ") RETURNING " + _COLS)

        def run(tx: Tx) -> list[Sequence[Any]]:
            rows = self._q(tx, sql, **{f"i{n}": i for n, i in enumerate(ids)})
            if len(rows) != len(ids):
                raise _Fenced
            return rows

        try:
            rows = self._tx(run)
        except _Fenced:
            return None
        return [self._job(r) for r in rows]

    def purge(self, states: Sequence[JobState], older_than: float,
              limit: int | None = None) -> list[tuple[str, str | None]]:
        """Delete jobs in ``states`` last changed more than ``older_than`` seconds ago (storage
        clock), at most ``limit`` of them (oldest first) when given; (id, log_path) of each, for
        their log files (not whole rows: a purge may delete thousands, each with its output)."""
        if not states:
            return []
        sql = ("DELETE FROM {j} WHERE id IN (SELECT id FROM {j} WHERE state IN ("
               + ", ".join(f"'{s}'" for s in states) + ") AND updated_at < " + self.dialect.after("age")
               + " ORDER BY updated_at" + (" LIMIT :limit" if limit is not None else "") + ") RETURNING id, log_path")
        rows = self._tx(lambda tx: self._q(tx, sql, age=-float(older_than), limit=limit))
        return [(r[0], r[1]) for r in rows]

    def attempts_by_state(self) -> dict[JobState, int]:
        """The attempts recorded on the jobs of each state (every state present): what a metrics
        exporter derives attempt outcomes from without reading every job."""
        from queuectl_core.models import JobState

        totals = {s: 0 for s in JobState}
        for _, state, _, _, attempts in self._tallies():
            totals[JobState(state)] += attempts
        return totals

    def counts(self) -> dict[JobState, int]:
        from queuectl_core.models import JobState

        counts = {s: 0 for s in JobState}
        for _, state, _, n, _ in self._tallies():
            counts[JobState(state)] += n
        return counts

    def claim(self, worker_id: str, lease_seconds: float, queues: Sequence[str] | None = None) -> Job | None:
        """The next runnable job (highest priority, earliest run_at, then id) of an unpaused queue
        below its concurrency limit (of ``queues`` only, when given), taken in one statement:
        processing, attempts + 1, a fresh token, lease = clock + lease_seconds."""
        return self._claim(worker_id, os.urandom(8).hex(), lease_seconds, queues)

    def _open_queues(self, queues: Sequence[str] | None, skip: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
        """The condition on queue row ``q`` of a queue a worker may claim from now: served, not
        paused, and (when limited) fewer of its jobs processing than its concurrency."""
        params: dict[str, Any] = {}
        cond = ("NOT q.paused AND (q.concurrency = 0 OR q.concurrency >"
                " (SELECT count(*) FROM {j} r WHERE r.queue = q.name AND r.state = 'processing'))")
        if queues is not None:
            names = _names("qn", list(queues))
            params.update(names)
            cond += " AND q.name IN (" + (_in(names) or "NULL") + ")"
        if skip:
            names = _names("qs", list(skip))
            params.update(names)
            cond += " AND q.name NOT IN (" + _in(names) + ")"
        return cond, params

    def claim_statement(self, queues: Sequence[str] | None = None, skip: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
        """The claim's one statement and its queue parameters (besides :worker, :token, :lease and
        :now): what :meth:`claim` runs, and what docs/architecture.md shows the plans of."""
        d = self.dialect
        ready = ("state IN (" + _RUNNABLE + ") AND waiting = 0 AND run_at <= {now}")
        cond, params = self._open_queues(queues, skip)
        # The walk is per queue: each queue's best job comes off the ready index (queue,
        # priority DESC, run_at, id; runnable rows with nothing to wait for only), so paused
        # queues, other workers' queues and waiting children cost nothing.
        if d.lateral:
            pick = ("SELECT c.id FROM {qt} q CROSS JOIN LATERAL (SELECT id, priority, run_at FROM {j}"
                    " WHERE queue = q.name AND " + ready + " ORDER BY priority DESC, run_at, id LIMIT 1"
                    + d.skip_locked + ") c WHERE " + cond + " ORDER BY c.priority DESC, c.run_at, c.id LIMIT 1")
        else:
            pick = ("SELECT c.id FROM {qt} q JOIN {j} c ON c.id = (SELECT id FROM {j} " + d.ready_index +
                    " WHERE queue = q.name AND " + ready + " ORDER BY priority DESC, run_at, id LIMIT 1)"
                    " WHERE " + cond + " ORDER BY c.priority DESC, c.run_at, c.id LIMIT 1")
        # The CTE picks one row (LIMIT 1, MATERIALIZED where supported) and the UPDATE touches
        # only it. SKIP LOCKED lets concurrent claimers take different rows without waiting.
        sql = ("WITH next AS " + d.materialized + " (" + pick + ")"
               " UPDATE {j} SET state = 'processing', attempts = attempts + 1, worker_id = :worker,"
               " lease_token = :token, lease_expires_at = " + d.after("lease") + ", updated_at = {now},"
               " cancel_requested = FALSE WHERE id = (SELECT id FROM next) RETURNING " + _COLS)
        return sql, params

    def claim_many(self, worker_id: str, lease_seconds: float, limit: int,
                   queues: Sequence[str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs, each as :meth:`claim` takes one (its own token and lease), in one
        transaction: a worker with ``limit`` free slots fills them in one round trip of locking."""
        if limit <= 1:
            job = self.claim(worker_id, lease_seconds, queues)
            return [job] if job is not None else []
        return self._claim_many(worker_id, [os.urandom(8).hex() for _ in range(limit)], lease_seconds, queues)

    def _claim(self, worker_id: str, token: str, lease_seconds: float,
               queues: Sequence[str] | None = None) -> Job | None:
        jobs = self._claim_many(worker_id, [token], lease_seconds, queues)
        return jobs[0] if jobs else None

    def _claim_many(self, worker_id: str, tokens: Sequence[str], lease_seconds: float,
                    queues: Sequence[str] | None = None) -> list[Job]:
        """The claim statement once per token, in one transaction, until one finds nothing. Each
        run sees the rows the earlier ones took (its own transaction's writes), so priorities and
        queue limits hold exactly as for as many separate claims."""
        skip: list[str] = []
        # A limited queue that races to full is skipped and the claim tried again: at most once
        # per queue, so this ends.
        while True:
            run = self._claim_runner(worker_id, tokens, lease_seconds, queues, skip)
            try:
                rows = self._tx(run)
            except _QueueFull as full:
                skip.append(full.queue)
                continue
            return [self._job(r) for r in rows]

    def _claim_runner(self, worker_id: str, tokens: Sequence[str], lease_seconds: float,
                      queues: Sequence[str] | None, skip: Sequence[str]) -> Callable[[Tx], list[Sequence[Any]]]:
        """The claims of :meth:`_claim_many` within a transaction; raises _QueueFull to retry."""
        d = self.dialect
        sql, params = self.claim_statement(queues, skip)
        # Concurrent transactions (PostgreSQL): the count in the claim statement saw a snapshot.
        # Under the claimed job's queue row lock, held to commit, the count is exact: racing
        # claimers of one limited queue are serialised there, never over it. The lock (and the
        # limit) comes with the claim itself where the database allows it, one round trip less.
        limit_sql = "SELECT concurrency FROM {qt} WHERE name = :name AND concurrency > 0" + d.for_update
        if d.for_update and d.writable_cte:
            sql = "WITH c AS (" + sql + ") SELECT c.*, (" + limit_sql.replace(":name", "c.queue") + ") FROM c"

        def run(tx: Tx) -> list[Sequence[Any]]:
            out: list[Sequence[Any]] = []
            for token in tokens:
                rows = self._q(tx, sql, worker=worker_id, token=token, lease=float(lease_seconds), **params)
                if not rows:
                    break
                row = rows[0]
                if d.for_update:
                    queue = row[_QUEUE_COL]
                    if d.writable_cte:
                        limit, row = row[-1], row[:-1]
                    else:
                        found = self._q(tx, limit_sql, name=queue)
                        limit = found[0][0] if found else None
                    if limit:
                        running = self._q(tx, "SELECT count(*) FROM {j} WHERE queue = :name AND state = 'processing'",
                                          name=queue)[0][0]
                        if running > limit:
                            raise _QueueFull(queue)
                out.append(row)
            return out

        return run

    def apply(self, job_id: str, token: str | None, change: Change) -> Job | None:
        """Persist a decided change, atomically and fenced: only while the job is in one of
        ``change.from_states``, holds ``token`` (when given) and, for ``expired_only``, its lease
        has expired. Returns the updated job, or None when fenced out (nothing changed)."""
        run = self._applier(job_id, token, change)
        rows = self._tx(run)
        return self._job(rows[0]) if rows else None

    def apply_many(self, changes: Sequence[tuple[str, str | None, Change]]) -> list[Job] | None:
        """Apply several (job id, token, change) in one transaction: all of them, or (when any
        one is fenced out) none, returning None. For commands acting on many jobs at once."""
        runs = [self._applier(job_id, token, change) for job_id, token, change in changes]

        def run_all(tx: Tx) -> list[Sequence[Any]]:
            out: list[Sequence[Any]] = []
            for run in runs:
                rows = run(tx)
                if not rows:
                    raise _Fenced
                out.append(rows[0])
            return out

        try:
            rows = self._tx(run_all)
        except _Fenced:
            return None
        return [self._job(r) for r in rows]

    def apply_batch(self, changes: Sequence[tuple[str, str | None, Change]]) -> list[Job | None]:
        """Apply several ``(job id, token, change)`` in one transaction, each fenced on its own as
        :meth:`apply` is: the updated job, or None for one fenced out (the others still apply). A
        worker's finished attempts and heartbeats go this way. Heartbeats without output to store
        are one statement for all of them."""
        if not changes:
            return []
        return [self._job(r) if r is not None else None for r in self._tx(self._batch_runner(changes))]

    def _batch_runner(self, changes: Sequence[tuple[str, str | None, Change]]
                      ) -> Callable[[Tx], list[Sequence[Any] | None]]:
        """What :meth:`apply_batch` runs in its transaction (and :meth:`apply_and_claim` in its own)."""
        from queuectl_core.lifecycle import Transition

        plain: dict[float, list[int]] = {}  # lease -> indexes of heartbeats with nothing but the lease
        runs: list[tuple[int, Callable[[Tx], list[Sequence[Any]]]]] = []
        for n, (job_id, token, change) in enumerate(changes):
            if (change.transition == Transition.HEARTBEAT and change.progress is None and token is not None
                    and change.lease_seconds is not None and change == _heartbeat_only(change)):
                plain.setdefault(change.lease_seconds, []).append(n)
            else:
                runs.append((n, self._applier(job_id, token, change)))

        def run_all(tx: Tx) -> list[Sequence[Any] | None]:
            out: list[Sequence[Any] | None] = [None] * len(changes)
            for lease, indexes in plain.items():
                for start in range(0, len(indexes), _CHUNK // 2):
                    chunk = indexes[start:start + _CHUNK // 2]
                    params: dict[str, Any] = {"lease": float(lease)}
                    pairs = []
                    for k, n in enumerate(chunk):
                        params[f"i{k}"], params[f"t{k}"] = changes[n][0], changes[n][1]
                        pairs.append(f"(id = :i{k} AND lease_token = :t{k})")
                    rows = self._q(tx, "UPDATE {j} SET lease_expires_at = " + self.dialect.after("lease") +
                                   " WHERE state = 'processing' AND (" + " OR ".join(pairs) + ") RETURNING " + _COLS,
                                   **params)
                    by_id = {r[0]: r for r in rows}
                    for n in chunk:
                        out[n] = by_id.get(changes[n][0])
            for n, run in runs:
                rows = run(tx)
                out[n] = rows[0] if rows else None
            return out

        return run_all

    def apply_and_claim(self, changes: Sequence[tuple[str, str | None, Change]], worker_id: str,
                        lease_seconds: float, limit: int,
                        queues: Sequence[str] | None = None) -> tuple[list[Job | None], list[Job]]:
        """:meth:`apply_batch` of ``changes`` then :meth:`claim_many` of ``limit``, in one
        transaction: a worker records the jobs that just finished and takes their successors at
        one lock (one commit) rather than two."""
        return self._apply_and_claim(changes, worker_id, [os.urandom(8).hex() for _ in range(limit)],
                                     lease_seconds, queues)

    def _apply_and_claim(self, changes: Sequence[tuple[str, str | None, Change]], worker_id: str,
                         tokens: Sequence[str], lease_seconds: float,
                         queues: Sequence[str] | None) -> tuple[list[Job | None], list[Job]]:
        apply = self._batch_runner(changes)
        skip: list[str] = []
        while True:
            claim = self._claim_runner(worker_id, tokens, lease_seconds, queues, skip)

            def run(tx: Tx) -> tuple[list[Sequence[Any] | None], list[Sequence[Any]]]:
                return apply(tx), claim(tx)

            try:
                applied, claimed = self._tx(run)
            except _QueueFull as full:
                skip.append(full.queue)
                continue
            return ([self._job(r) if r is not None else None for r in applied], [self._job(r) for r in claimed])

    def cancel_requests(self, job_ids: Sequence[str]) -> list[tuple[str, str | None]]:
        """(id, lease_token) of those of ``job_ids`` that are processing with a cancel requested:
        a worker with many jobs running checks them all in one read."""
        out: list[tuple[str, str | None]] = []
        ids = list(job_ids)
        for start in range(0, len(ids), _CHUNK):
            names = _names("c", ids[start:start + _CHUNK])
            out += [(r[0], r[1]) for r in self._read(
                "SELECT id, lease_token FROM {j} WHERE id IN (" + _in(names) + ") AND state = 'processing'"
                " AND cancel_requested", **names)]
        return out

    def _applier(self, job_id: str, token: str | None, change: Change) -> Callable[[Tx], list[Sequence[Any]]]:
        d = self.dialect
        sets: list[str] = []
        p: dict[str, Any] = {"id": job_id, "token": token}
        if change.state is not None:
            sets += ["state = :state", "updated_at = {now}"]
            p["state"] = str(change.state)
        if change.attempts is not None:
            sets.append("attempts = :attempts")
            p["attempts"] = change.attempts
        if change.run_in is not None:
            sets.append("run_at = " + d.after("run_in"))
            p["run_in"] = float(change.run_in)
        if change.lease_seconds is not None:
            sets.append("lease_expires_at = " + d.after("lease"))
            p["lease"] = float(change.lease_seconds)
        elif change.clear_lease:
            sets.append("lease_expires_at = NULL")
        if change.clear_token:
            sets += ["lease_token = NULL", "worker_id = NULL"]
        if change.result is not None:
            r = change.result
            sets += ["last_exit_code = :exit_code", "last_error = :error", "log_path = :log_path",
                     "output_tail = :output_tail", "last_duration = :duration"]
            p.update(exit_code=r.exit_code, error=change.reason if change.reason is not None else r.error,
                     log_path=r.log_path, output_tail=r.output_tail, duration=float(r.duration))
        elif change.reason is not None:
            sets += ["last_exit_code = NULL", "last_error = :error"]
            p["error"] = change.reason
        if change.progress is not None and change.result is None:
            sets += ["log_path = :log_path", "output_tail = :output_tail"]
            p.update(log_path=change.progress[0], output_tail=change.progress[1])
        if change.cancel_requested is not None:
            sets.append("cancel_requested = " + (d.true if change.cancel_requested else "FALSE"))
        if change.command is not None:
            sets.append("command = :command")
            p["command"] = change.command
        states = ", ".join(f"'{s}'" for s in change.from_states)
        where = "id = :id AND state IN (" + states + ")"
        if token is not None:
            where += " AND lease_token = :token"
        if change.expired_only:
            where += " AND lease_expires_at < {now}"
        sql = "UPDATE {j} SET " + ", ".join(sets) + " WHERE " + where + " RETURNING " + _COLS
        # -- scheduling (spec §11): a completed job releases the jobs waiting on it. Where the
        # database allows it, in the same statement: one round trip a completion, not two.
        released_in_sql = change.release_children and d.writable_cte
        if released_in_sql:
            sql = ("WITH upd AS (" + sql + "), rel AS (UPDATE {dp} SET done = TRUE WHERE parent IN"
                   " (SELECT id FROM upd) AND NOT done RETURNING child), kids AS (UPDATE {j} SET waiting ="
                   " waiting - 1 WHERE id IN (SELECT child FROM rel) AND waiting > 0 RETURNING id)"
                   " SELECT upd.*, (SELECT count(*) FROM kids) FROM upd")

        runnable = change.state is not None and f"'{change.state}'" in _RUNNABLE

        def run(tx: Tx) -> list[Sequence[Any]]:
            rows = self._q(tx, sql, **p)
            if rows:
                if runnable:
                    tx.wake()
                if released_in_sql:
                    released, rows = rows[0][-1], [rows[0][:-1]]
                    if released:
                        tx.wake()
                # -- scheduling (spec §11): the jobs waiting on this one --
                elif change.release_children and self._release_children(tx, job_id):
                    tx.wake()
                elif change.cascade_reason is not None and change.state is not None:
                    self._cascade(tx, job_id, str(change.state), change.cascade_reason)
            elif token is not None and change.idempotent:
                # The same write repeated after its reply was lost: the row already says so.
                rows = self._q(tx, "SELECT " + _COLS + " FROM {j} WHERE id = :id AND lease_token = :token"
                               " AND state = :state AND lease_expires_at IS NULL", **p)
            return rows

        return run

    def expired(self, limit: int = 100) -> list[Job]:
        """Processing jobs whose lease has expired by the storage clock, oldest expiry first."""
        rows = self._read("SELECT " + _COLS + " FROM {j} WHERE state = 'processing' AND lease_expires_at < {now}"
                          " ORDER BY lease_expires_at LIMIT :limit", limit=limit)
        return [self._job(r) for r in rows]

    def next_run_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        """The earliest run_at of a job a worker of ``queues`` could claim (paused and full
        queues, and jobs still waiting on others, have none): an idle worker's timer."""
        cond, params = self._open_queues(queues)
        rows = self._read("SELECT min(m) FROM (SELECT (SELECT min(run_at) FROM {j} " + self.dialect.due_index +
                          " WHERE queue = q.name AND state IN (" + _RUNNABLE + ") AND waiting = 0) AS m"
                          " FROM {qt} q WHERE " + cond + ") x", **params)
        return self.dialect.from_db(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- scheduling (spec §11): burst, queues, dependencies, schedules --------------------------
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
            " AND j.state IN (" + _RUNNABLE + ") AND j.waiting = 0" + served.format(alias="j") + "),"
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
        for start in range(0, len(ids), _CHUNK):
            names = _names("c", ids[start:start + _CHUNK])
            for child, parent in self._read("SELECT child, parent FROM {dp} WHERE NOT done AND child IN ("
                                            + _in(names) + ") ORDER BY child, parent", **names):
                out.setdefault(child, []).append(parent)
        return out

    def queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or settings (a concurrency limit, or paused), by name."""
        from queuectl_core.models import JobState, QueueInfo

        settings = {r[0]: (r[1], bool(r[2])) for r in self._read("SELECT name, concurrency, paused FROM {qt}")}
        counts: dict[str, dict[str, int]] = {}
        for queue, state, _, n, _ in self._tallies():
            if n:
                counts.setdefault(queue, {str(s): 0 for s in JobState})[state] += n
        out = []
        for name in sorted(set(settings) | set(counts)):
            concurrency, paused = settings.get(name, (0, False))
            if name not in counts and not concurrency and not paused:
                continue
            out.append(QueueInfo(name, concurrency, paused, counts.get(name, {str(s): 0 for s in JobState})))
        return out

    def set_queue(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None:
        """Change a queue's settings (creating its row); wakes idle workers."""
        sets, p = [], {"name": name, "concurrency": concurrency or 0, "paused": bool(paused)}
        if concurrency is not None:
            sets.append("concurrency = :concurrency")
        if paused is not None:
            sets.append("paused = :paused")

        def run(tx: Tx) -> None:
            self._q(tx, "INSERT INTO {qt} (name, concurrency, paused) VALUES (:name, :concurrency, :paused)"
                    " ON CONFLICT (name) DO UPDATE SET " + ", ".join(sets) + " RETURNING name", **p)
            tx.wake()

        self._tx(run)

    def set_all_paused(self, paused: bool) -> list[str]:
        """Pause or resume every queue that exists now; the names changed."""
        def run(tx: Tx) -> list[str]:
            rows = self._q(tx, "UPDATE {qt} SET paused = :paused WHERE paused <> :paused RETURNING name",
                           paused=paused)
            tx.wake()
            return sorted(r[0] for r in rows)

        return self._tx(run)

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

        from queuectl_core.models import Schedule

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

    # -- the worker directory ---------------------------------------------------------------
    def worker_seen(self, worker_id: str, current_job: str | None) -> int:
        """Record that a worker is alive. 0: carry on; 1 (true): stop after the current job;
        2: stop now (``worker stop --now``)."""
        rows = self._tx(lambda tx: self._q(
            tx, "UPDATE {w} SET last_seen = {now}, current_job = :job WHERE hostname = :host AND id = :id"
            " RETURNING stop_requested, stop_now", job=current_job, host=self.hostname, id=worker_id))
        if not rows or not rows[0][0]:
            return 0
        return 2 if rows[0][1] else 1

    def unregister_worker(self, worker_id: str) -> None:
        self._tx(lambda tx: self._q(tx, "DELETE FROM {w} WHERE hostname = :host AND id = :id RETURNING id",
                                    host=self.hostname, id=worker_id))

    def live_workers(self) -> list[WorkerInfo]:
        from queuectl_core.models import WorkerInfo

        t = self.dialect.from_db
        # The jobs a worker runs are read from the jobs table, where the claim itself records them,
        # so a job shows as running from the moment it is claimed (the worker's own report lags).
        # One row per (worker, job it holds), or one row with no job for an idle worker.
        rows = self._read("SELECT w.id, w.hostname, w.pid, w.started_at, w.last_seen, w.current_job, j.id, j.updated_at"
                          " FROM {w} w LEFT JOIN {j} j ON j.worker_id = w.id AND j.state = 'processing'"
                          " WHERE w.last_seen >= " + self.dialect.after("window") +
                          " ORDER BY w.id, j.updated_at DESC, j.id", window=-WORKER_LIVE_SECONDS)
        grouped: dict[str, tuple[Sequence[Any], list[tuple[str, datetime]]]] = {}
        for r in rows:
            _, jobs = grouped.setdefault(r[0], (r, []))
            if r[6] is not None:
                jobs.append((r[6], t(r[7])))
        out = []
        for r, jobs in grouped.values():
            current, since = jobs[0] if jobs else (r[5], None)
            out.append(WorkerInfo(r[0], r[1], r[2], t(r[3]), t(r[4]), current, since, tuple(jobs)))
        return out

    def request_stop(self, now: bool = False) -> int:
        """Ask every live worker to stop: after its current job, or (``now``) at once, releasing it."""
        def stop(tx: Tx) -> int:
            rows = self._q(tx, "UPDATE {w} SET stop_requested = " + self.dialect.true +
                           (", stop_now = " + self.dialect.true if now else "") +
                           " WHERE last_seen >= " + self.dialect.after("window") + " RETURNING id",
                           window=-WORKER_LIVE_SECONDS)
            tx.wake()
            return len(rows)

        return self._tx(stop)


def _in(names: dict[str, Any]) -> str:
    return ", ".join(":" + n for n in names)


def _names(prefix: str, values: Sequence[Any]) -> dict[str, Any]:
    """Named parameters for an IN list: {":k0": v0, ...} keyed without the colon."""
    return {f"{prefix}{i}": v for i, v in enumerate(values)}


def codes_out(codes: Sequence[int] | None) -> str | None:
    """Exit codes as stored: ``"1,75"``."""
    return ",".join(str(c) for c in codes) if codes is not None else None


def _columns(rows: Sequence[Sequence[Any]]) -> tuple[int, list[tuple[bool, Any]]]:
    """A batch of rows by column, each either (True, the value every row has) or (False, the
    values): what the enqueue spool pickles (a batch of one shape is its ids and commands)."""
    n = len(rows)
    if not n:
        return 0, [(True, None)] * len(JOB_COLUMNS)
    return n, [(True, c[0]) if c.count(c[0]) == n else (False, c) for c in zip(*rows)]


def _tags_in(text: str | None) -> tuple[str, ...]:
    return tuple(t for t in text.split(",") if t) if text else ()


def _codes_in(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(c) for c in text.split(",")) if text else None


def _heartbeat_only(change: Change) -> Change:
    """The lease renewal alone, nothing else set: what the grouped heartbeat statement writes."""
    from queuectl_core.lifecycle import heartbeat

    return heartbeat(change.lease_seconds or 0.0)


class _Fenced(Exception):
    """Rolls back a many-job change when one job is not where the decision assumed."""


# -- §10: cwd, env and tags between NewJob/Job and their stored form ------------------------------
def control_values(job: NewJob) -> dict[str, Any]:
    """A NewJob's §10 fields as stored: env as JSON text, tags as ",a,b," (so one LIKE finds a tag)."""
    import json

    return {"cwd": job.cwd, "env": json.dumps(job.env, sort_keys=True) if job.env else None,
            "tags": "," + ",".join(job.tags) + "," if job.tags else None}


def _json_loads(text: str) -> Any:
    import json

    return json.loads(text)


def _control_fields(row: Sequence[Any], at: int) -> dict[str, Any]:
    import json

    cwd, env, tags, duration = row[at:at + 4]
    return {"cwd": cwd, "env": json.loads(env) if env else {}, "tags": tuple(t for t in (tags or "").split(",") if t),
            "last_duration": duration}


__all__ = ["CONTROL_COLUMNS", "JOB_COLUMNS", "WORKER_LIVE_SECONDS", "Dialect", "SQLStore", "Tx"]
