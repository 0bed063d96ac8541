"""What every part of the SQL store shares: the transaction a backend runs, statements, rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl_core.storage.sql import rows as _rows  # -- limits --
from queuectl_core.storage.sql.dialect import Dialect, quoted
from queuectl_core.storage.sql.rows import CONTROL_AT, NEEDS_AT, codes_in, columns, control_fields, json_loads, tags_in

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Sequence, TypeVar

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.lifecycle import Change
    from queuectl_core.jobs.models import Job, NewJob

    T = TypeVar("T")


def _count(v: Any) -> int:
    return v or 0


def _needs_in(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    from queuectl_core.jobs.needs import needs_from_text

    return needs_from_text(text)


class Fenced(Exception):
    """Rolls back a many-job change when one job is not where the decision assumed."""


class _Names(dict[str, str]):
    """A statement's names; the lifecycle's state groups are looked up on first use only (most
    enqueues name none, and the lifecycle is ~3 ms of a `queuectl enqueue` to import)."""

    def __missing__(self, key: str) -> str:
        from queuectl_core.jobs import lifecycle

        groups = {"runnable": lifecycle.RUNNABLE_STATES, "holding": lifecycle.HOLDING_STATES,
                  "finished": lifecycle.FINISHED_STATES}
        return quoted(groups[key])


class SQLBase:
    """The table names, the rows, and what one part of the store calls in another (each part,
    a mixin of :class:`~queuectl_core.storage.sql.SQLStore`, overrides its own)."""

    dialect: Dialect
    jobs = "jobs"  # table names, qualified by a backend that keeps them in a schema
    workers = "workers"
    queues_table = "queues"
    deps_table = "job_deps"
    schedules_table = "schedules"
    counts_table = "job_counts"  # per (queue, state, held) tallies the backend keeps exact
    attempts_table = "attempts"  # every finished attempt, recorded by the backend's trigger
    # -- needs: pools, the units of each need class, what each worker declared --
    pools_table, need_units_table, worker_resources_table = "resource_pools", "need_units", "worker_resources"
    hostname = ""

    # -- what a backend provides ----------------------------------------------------------
    def _tx(self, fn: Callable[[Tx], T], write: bool = True, pipelined: bool = False) -> T:
        """Run ``fn`` in one transaction (a read-only one unless ``write``). ``pipelined``: the
        backend may send statements issued with ``Tx.later`` together (``Tx.pipelined`` says so)."""
        raise NotImplementedError

    # -- rows -----------------------------------------------------------------------------
    def _job(self, row: Sequence[Any]) -> Job:
        from queuectl_core.jobs.models import Job, JobState

        t = self.dialect.from_db
        return Job(
            id=row[0], command=row[1], state=JobState(row[2]), attempts=row[3], max_retries=row[4],
            priority=row[5], created_at=t(row[6]), updated_at=t(row[7]), run_at=t(row[8]), timeout=row[9],
            last_exit_code=row[10], last_error=row[11], log_path=row[12], output_tail=row[13],
            worker_id=row[14], lease_token=row[15],
            lease_expires_at=t(row[16]) if row[16] is not None else None, cancel_requested=bool(row[17]),
            queue=row[18], waiting=row[19], unique_key=row[20], retry_on=codes_in(row[21]),
            no_retry_on=codes_in(row[22]),
            **control_fields(row, CONTROL_AT),
            **_rows.limit_fields(row),
            needs=_needs_in(row[NEEDS_AT]),
        )

    def _q(self, tx: Tx, sql: str, **params: Any) -> list[Sequence[Any]]:
        """Run one statement: ``{j}``, ``{w}``, ``{now}`` filled in and parameters in the dialect's
        style (cached per statement text: a worker's hot path repeats a handful of them)."""
        params["now"] = self.dialect.clock_param()
        return tx.rows(self._sql(sql), params)

    def _q_later(self, tx: Tx, sql: str, **params: Any) -> Callable[[], list[Sequence[Any]]]:
        """:meth:`_q`, its rows read later (``Tx.later``)."""
        params["now"] = self.dialect.clock_param()
        return tx.later(self._sql(sql), params)

    def _read(self, sql: str, **params: Any) -> list[Sequence[Any]]:
        return self._tx(lambda tx: self._q(tx, sql, **params), write=False)

    def _new_jobs(self, rows: Sequence[Sequence[Any]]) -> list[Job]:
        """:meth:`_job` for a batch just inserted: the same Jobs, built a column at a time."""
        return self._jobs_from_columns(columns(rows))

    def _jobs_from_columns(self, columns: tuple[int, list[tuple[bool, Any]]]) -> list[Job]:
        """Jobs from rows.columns' form of a batch's rows (what the enqueue spool holds): a
        column the batch shares (times, state, queue, cwd...) is converted once, not once a row,
        and the objects are built through fastinit (100,000 jobs: ~0.26 s -> ~0.07 s)."""
        from itertools import repeat

        from queuectl_core.jobs.fastinit import positional_factory
        from queuectl_core.jobs.models import Job, JobState

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

        env_same, env = cols[CONTROL_AT + 1]
        if env_same:  # every Job its own dict, as _job gives
            envs: Iterable[Any] = ([json_loads(env) for _ in range(n)] if env else [{} for _ in range(n)])
        else:
            envs = [json_loads(e) if e else {} for e in env]
        columns_in_order = [column(0), column(1), column(2, JobState), column(3), column(4), column(5),
                            column(6, time), column(7, time), column(8, time), column(9), column(10), column(11),
                            column(12), column(13), column(14), column(15), column(16, time), column(17, bool),
                            column(18), column(19), column(20), column(21, codes_in), column(22, codes_in),
                            column(CONTROL_AT), envs, column(CONTROL_AT + 2, tags_in), column(CONTROL_AT + 3),
                            column(CONTROL_AT + 4, _count), column(CONTROL_AT + 5), column(CONTROL_AT + 6),
                            column(CONTROL_AT + 7)]
        # -- limits: absent from rows a backend's insert built for jobs given none --
        if len(cols) > _rows.LIMITS_AT + 1:
            columns_in_order += [column(_rows.LIMITS_AT), column(_rows.LIMITS_AT + 1, _rows.seconds_in)]
        else:
            columns_in_order += [repeat(None, n), repeat(None, n)]
        columns_in_order.append(column(NEEDS_AT, _needs_in))  # -- needs
        return list(map(positional_factory(Job), *columns_in_order))

    def _sql(self, sql: str) -> str:
        """A statement's final text: table names, the clock, the lifecycle's state groups
        (``{runnable}``, ``{holding}``, ``{finished}``) filled in, in the dialect's parameter style."""
        cache: dict[str, str] = self.__dict__.setdefault("_sql_cache", {})
        final = cache.get(sql)
        if final is None:
            final = cache[sql] = self.dialect.sql(sql.format_map(_Names(
                j=self.jobs, w=self.workers, now=self.dialect.now, qt=self.queues_table, dp=self.deps_table,
                sc=self.schedules_table, jc=self.counts_table, at=self.attempts_table,
                rp=self.pools_table, nu=self.need_units_table, wr=self.worker_resources_table)))
        return final

    # -- one part's methods another part calls (defined in jobs.py, dependencies.py, claims.py) -----------
    def _insert(self, tx: Tx, jobs: Sequence[NewJob]) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _before_insert(self, tx: Tx, jobs: Sequence[NewJob], queues: set[str] | None = None) -> None:
        raise NotImplementedError

    def _after_insert(self, tx: Tx, jobs: Sequence[NewJob]) -> dict[str, Sequence[Any]]:
        raise NotImplementedError

    def _dependants(self, tx: Tx, parent: str, change: Change | None) -> int:
        raise NotImplementedError

    def _change_sql(self, change: Change, where: str, token: str | None = None) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _tallies(self) -> list[tuple[str, str, bool, int, int]]:
        raise NotImplementedError

    def _holders(self, tx: Tx | None, keys: Sequence[str]) -> dict[str, str]:
        raise NotImplementedError

    def _insert_needs(self, tx: Tx, jobs: Sequence[NewJob]) -> None:
        raise NotImplementedError

    def _check_pools(self, tx: Tx, row: Sequence[Any]) -> None:
        raise NotImplementedError
