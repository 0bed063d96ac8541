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
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeVar

if TYPE_CHECKING:
    from queuectl_core.lifecycle import Change
    from queuectl_core.models import Job, JobState, NewJob, WorkerInfo

# Start-up: every storage plugin module imports this one to subclass SQLStore, and `queuectl --help`
# imports every plugin module. So the models and the lifecycle are imported on first use, not here.

T = TypeVar("T")

# A worker that has not been seen for this long is not listed as live.
WORKER_LIVE_SECONDS = 15.0

JOB_COLUMNS = ("id", "command", "state", "attempts", "max_retries", "priority", "created_at", "updated_at",
               "run_at", "timeout", "last_exit_code", "last_error", "log_path", "output_tail", "worker_id",
               "lease_token", "lease_expires_at", "cancel_requested")
_COLS = ", ".join(JOB_COLUMNS)
_RUNNABLE = "'pending', 'failed'"  # lifecycle.RUNNABLE_STATES (a test keeps them equal)


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
                 "ready_index", "due_index", "true")

    def __init__(self, *, paramstyle: str, now: str, after: Callable[[str], str], to_db: Callable[[datetime], Any],
                 from_db: Callable[[Any], datetime], clock_param: Callable[[], Any], skip_locked: str = "",
                 materialized: str = "", ready_index: str = "", due_index: str = "", true: str = "TRUE") -> None:
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

    def sql(self, text: str) -> str:
        if self.paramstyle != "pyformat":
            return text
        return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", r"%(\1)s", text)


class Tx(Protocol):
    """One open transaction, as a backend hands it to the SQL layer."""

    def rows(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]: ...

    def wake(self) -> None:
        """Wake idle workers once this transaction commits."""


class SQLStore:
    """The Storage protocol on any SQL database, given a dialect and three backend methods:
    :meth:`_tx` (run a function in one transaction, mapping driver errors to StorageError),
    :meth:`_insert` (the batch insert) and the worker-directory specifics."""

    dialect: Dialect
    jobs = "jobs"  # table names, qualified by a backend that keeps them in a schema
    workers = "workers"
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
        )

    def _q(self, tx: Tx, sql: str, **params: Any) -> list[Sequence[Any]]:
        """Run one statement: ``{j}``, ``{w}``, ``{now}`` filled in and parameters in the dialect's
        style (cached per statement text: a worker's hot path repeats a handful of them)."""
        cache: dict[str, str] = self.__dict__.setdefault("_sql_cache", {})
        final = cache.get(sql)
        if final is None:
            final = cache[sql] = self.dialect.sql(sql.format(j=self.jobs, w=self.workers, now=self.dialect.now))
        params["now"] = self.dialect.clock_param()
        return tx.rows(final, params)

    def _read(self, sql: str, **params: Any) -> list[Sequence[Any]]:
        return self._tx(lambda tx: self._q(tx, sql, **params), write=False)

    # -- jobs -----------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        from queuectl_core.errors import DuplicateJobError

        if not jobs:
            return []
        ids = [j.id for j in jobs]
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise DuplicateJobError(job_id)
            seen.add(job_id)

        def insert(tx: Tx) -> list[Job]:
            rows = self._insert(tx, jobs)
            if len(rows) != len(jobs):
                inserted = {r[0] for r in rows}
                raise DuplicateJobError(next(i for i in ids if i not in inserted))  # rolls the batch back
            tx.wake()
            by_id = {r[0]: r for r in rows}
            return [self._job(by_id[i]) for i in ids]

        return self._tx(insert)

    def _insert(self, tx: Tx, jobs: Sequence[NewJob]) -> list[Sequence[Any]]:
        """Insert the batch, skipping ids that exist; the rows inserted (every column). A backend
        may override this with a one-round-trip form."""
        out: list[Sequence[Any]] = []
        for j in jobs:
            out += self._q(
                tx, "INSERT INTO {j} (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                " run_at, timeout, cancel_requested) VALUES (:id, :command, 'pending', 0, :max_retries, :priority,"
                " {now}, {now}, COALESCE(:run_at, " + self.dialect.after("delay") + "), :timeout, FALSE)"
                " ON CONFLICT (id) DO NOTHING RETURNING " + _COLS,
                id=j.id, command=j.command, max_retries=j.max_retries, priority=j.priority,
                run_at=self.dialect.to_db(j.run_at) if j.run_at is not None else None,
                delay=float(j.delay or 0), timeout=float(j.timeout) if j.timeout is not None else None)
        return out

    def get(self, job_id: str) -> Job | None:
        rows = self._read("SELECT " + _COLS + " FROM {j} WHERE id = :id", id=job_id)
        return self._job(rows[0]) if rows else None

    def list_jobs(self, state: JobState | None = None, limit: int | None = None,
                  before: str | None = None) -> list[Job]:
        """Newest first (created_at, then id, both descending), as `list` shows them; ``before``
        (a job id) starts after that job: keyset paging that walks the index, however deep."""
        where = ["state = :state"] if state is not None else []
        if before is not None:
            where.append("(created_at, id) < (SELECT created_at, id FROM {j} WHERE id = :before)")
        sql = "SELECT " + _COLS + " FROM {j}" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id DESC" + (" LIMIT :limit" if limit is not None else "")
        return [self._job(r) for r in self._read(sql, state=str(state) if state else None, limit=limit,
                                                 before=before)]

    def attempts_by_state(self) -> dict[JobState, int]:
        """The attempts recorded on the jobs of each state (every state present): what a metrics
        exporter derives attempt outcomes from without reading every job."""
        from queuectl_core.models import JobState

        totals = {s: 0 for s in JobState}
        for state, n in self._read("SELECT state, COALESCE(sum(attempts), 0) FROM {j} GROUP BY state"):
            totals[JobState(state)] = int(n)
        return totals

    def counts(self) -> dict[JobState, int]:
        from queuectl_core.models import JobState

        counts = {s: 0 for s in JobState}
        for state, n in self._read("SELECT state, count(*) FROM {j} GROUP BY state"):
            counts[JobState(state)] = n
        return counts

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        """The next runnable job (highest priority, earliest run_at, then id), taken in one
        statement: processing, attempts + 1, a fresh token, lease = clock + lease_seconds."""
        return self._claim(worker_id, os.urandom(8).hex(), lease_seconds)

    def _claim(self, worker_id: str, token: str, lease_seconds: float) -> Job | None:
        d = self.dialect
        # The CTE picks one row (LIMIT 1, MATERIALIZED where supported) and the UPDATE touches only
        # it: the planner cannot re-run the subquery per row. SKIP LOCKED lets concurrent claimers
        # take different rows without waiting.
        sql = (
            "WITH next AS " + d.materialized + " (SELECT id FROM {j} " + d.ready_index +
            " WHERE state IN (" + _RUNNABLE + ") AND run_at <= {now}"
            " ORDER BY priority DESC, run_at, id LIMIT 1" + d.skip_locked + ")"
            " UPDATE {j} SET state = 'processing', attempts = attempts + 1, worker_id = :worker,"
            " lease_token = :token, lease_expires_at = " + d.after("lease") + ", updated_at = {now},"
            " cancel_requested = FALSE WHERE id = (SELECT id FROM next) RETURNING " + _COLS
        )
        rows = self._tx(lambda tx: self._q(tx, sql, worker=worker_id, token=token, lease=float(lease_seconds)))
        return self._job(rows[0]) if rows else None

    def apply(self, job_id: str, token: str | None, change: Change) -> Job | None:
        """Persist a decided change, atomically and fenced: only while the job is in one of
        ``change.from_states``, holds ``token`` (when given) and, for ``expired_only``, its lease
        has expired. Returns the updated job, or None when fenced out (nothing changed)."""
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
                     "output_tail = :output_tail"]
            p.update(exit_code=r.exit_code, error=change.reason if change.reason is not None else r.error,
                     log_path=r.log_path, output_tail=r.output_tail)
        elif change.reason is not None:
            sets += ["last_exit_code = NULL", "last_error = :error"]
            p["error"] = change.reason
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

        runnable = change.state is not None and f"'{change.state}'" in _RUNNABLE

        def run(tx: Tx) -> list[Sequence[Any]]:
            rows = self._q(tx, sql, **p)
            if rows:
                if runnable:
                    tx.wake()
            elif token is not None and change.idempotent:
                # The same write repeated after its reply was lost: the row already says so.
                rows = self._q(tx, "SELECT " + _COLS + " FROM {j} WHERE id = :id AND lease_token = :token"
                               " AND state = :state AND lease_expires_at IS NULL", **p)
            return rows

        rows = self._tx(run)
        return self._job(rows[0]) if rows else None

    def expired(self, limit: int = 100) -> list[Job]:
        """Processing jobs whose lease has expired by the storage clock, oldest expiry first."""
        rows = self._read("SELECT " + _COLS + " FROM {j} WHERE state = 'processing' AND lease_expires_at < {now}"
                          " ORDER BY lease_expires_at LIMIT :limit", limit=limit)
        return [self._job(r) for r in rows]

    def next_run_at(self) -> datetime | None:
        rows = self._read("SELECT min(run_at) FROM {j} " + self.dialect.due_index +
                          " WHERE state IN (" + _RUNNABLE + ")")
        return self.dialect.from_db(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- the worker directory ---------------------------------------------------------------
    def worker_seen(self, worker_id: str, current_job: str | None) -> bool:
        rows = self._tx(lambda tx: self._q(
            tx, "UPDATE {w} SET last_seen = {now}, current_job = :job WHERE hostname = :host AND id = :id"
            " RETURNING stop_requested", job=current_job, host=self.hostname, id=worker_id))
        return bool(rows and rows[0][0])

    def unregister_worker(self, worker_id: str) -> None:
        self._tx(lambda tx: self._q(tx, "DELETE FROM {w} WHERE hostname = :host AND id = :id RETURNING id",
                                    host=self.hostname, id=worker_id))

    def live_workers(self) -> list[WorkerInfo]:
        from queuectl_core.models import WorkerInfo

        t = self.dialect.from_db
        rows = self._read("SELECT id, hostname, pid, started_at, last_seen, current_job FROM {w}"
                          " WHERE last_seen >= " + self.dialect.after("window") + " ORDER BY id",
                          window=-WORKER_LIVE_SECONDS)
        return [WorkerInfo(r[0], r[1], r[2], t(r[3]), t(r[4]), r[5]) for r in rows]

    def request_stop(self) -> int:
        def stop(tx: Tx) -> int:
            rows = self._q(tx, "UPDATE {w} SET stop_requested = " + self.dialect.true +
                           " WHERE last_seen >= " + self.dialect.after("window") + " RETURNING id",
                           window=-WORKER_LIVE_SECONDS)
            tx.wake()
            return len(rows)

        return self._tx(stop)


__all__ = ["JOB_COLUMNS", "WORKER_LIVE_SECONDS", "Dialect", "SQLStore", "Tx"]
