"""PostgreSQL storage: workers on any number of machines share one queue.

Claims use ``FOR UPDATE SKIP LOCKED``; every time written (created_at, run_at, leases, last_seen)
comes from the database clock, so hosts with skewed clocks agree; idle workers are woken with
LISTEN/NOTIFY, and polling alone stays correct. psycopg is imported lazily so this module loads
(and registers its settings) without the ``postgres`` extra installed.

Where logs live: the executor writes full per-attempt log files on the worker's host; the last few
KiB of each attempt (``output_tail``) are stored in the jobs table, which is what ``queuectl logs``
shows on any other host.
"""

from __future__ import annotations

import os
import re
import select
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from queuectl_core import hookimpl
from queuectl_core.settings import Setting

if TYPE_CHECKING:
    from queuectl_core.models import AttemptResult, Job, JobState, NewJob, WorkerInfo
    from queuectl_core.settings import Config

T = TypeVar("T")

INSTALL_HINT = "the postgres storage needs psycopg: pip install 'queuectl[postgres]'"
# A worker that has not been seen for this long is not listed as live (as in SQLite).
WORKER_LIVE_SECONDS = 15.0
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")

# Versioned migrations, applied in order under an advisory lock; never edit a released one, add
# the next. ``{s}`` is the quoted schema name.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.jobs (
        id text PRIMARY KEY,
        command text NOT NULL,
        state text NOT NULL CHECK (state IN ('pending', 'processing', 'completed', 'failed', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        max_retries integer NOT NULL,
        priority bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        run_at timestamptz NOT NULL DEFAULT now(),
        timeout double precision,
        last_exit_code integer,
        last_error text,
        log_path text,
        output_tail text,
        worker_id text,
        lease_token text,
        lease_expires_at timestamptz
    );
    -- The claim walks this partial index in order and stops at the first unlocked due row, so its
    -- cost does not grow with completed or dead jobs.
    CREATE INDEX jobs_ready ON {s}.jobs (priority DESC, run_at, id) WHERE state IN ('pending', 'failed');
    -- next_run_at (an idle worker's timer) and recover_expired without scanning the table.
    CREATE INDEX jobs_due ON {s}.jobs (run_at) WHERE state IN ('pending', 'failed');
    CREATE INDEX jobs_lease ON {s}.jobs (lease_expires_at) WHERE state = 'processing';
    CREATE INDEX jobs_state ON {s}.jobs (state, id);
    CREATE TABLE {s}.workers (
        id text NOT NULL,
        hostname text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL,
        last_seen timestamptz NOT NULL DEFAULT now(),
        current_job text,
        stop_requested boolean NOT NULL DEFAULT false,
        -- Worker ids are `worker-PID`: unique on one host only (containers often all run as PID 1).
        PRIMARY KEY (hostname, id)
    );
    """,
)

_COLS = ("id, command, state, attempts, max_retries, priority, created_at, updated_at, run_at, timeout, "
         "last_exit_code, last_error, log_path, output_tail, worker_id, lease_token, lease_expires_at")
_JCOLS = ", ".join("j." + c.strip() for c in _COLS.split(","))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a job's output can. Never let that wedge a worker's write."""
    return value.replace("\x00", "\ufffd") if value is not None else None


class PostgresStorage:
    """The Storage protocol on PostgreSQL, one connection per instance (not shared across threads).

    The connection is opened on first use and dropped on any connection error, which surfaces as
    StorageError; the next call reconnects, so a worker's retry loop rides out a restart.
    """

    def __init__(self, dsn: str, schema: str = "queuectl", connect_timeout: int = 5) -> None:
        import socket

        self._hostname = socket.gethostname()  # replaced by the registering worker's own
        self._unconfirmed_claim: str | None = None  # the token of a claim whose reply never came
        if not _IDENT_RE.match(schema):
            from queuectl_core.errors import ConfigError

            raise ConfigError(f"postgres.schema must be a plain identifier, got {schema!r}")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            from queuectl_core.errors import ConfigError

            raise ConfigError(INSTALL_HINT) from None
        from queuectl_core.errors import StorageError
        from queuectl_core.models import JobState

        self._psycopg = psycopg
        self._StorageError = StorageError
        self._JobState = JobState
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.s = _quote_ident(schema)
        # One channel per schema, so two queues in one database never wake each other.
        self.channel = f"queuectl_{schema}"[:63]
        self._conn: Any = None
        self._listening = False
        self._wants_listen = False
        self._woken = False
        self._migrated = False
        # database clock - local clock, measured at each connect; now() uses it without a round trip
        self._offset = timedelta(0)
        # Connect (and migrate) now, as SQLite opens its file: `worker start` fails fast, with one
        # line, on a wrong DSN or a database that is down, before forking workers. Later outages
        # are ridden out call by call.
        self._run(lambda conn: None)

    # -- plumbing -------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._drop()
        psycopg = self._psycopg
        conn = psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=self.connect_timeout, application_name="queuectl",
            # Notice a vanished server or a cut network within a minute, not the kernel's two hours.
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
        )
        try:
            conn.add_notify_handler(self._on_notify)
            t0 = time.time()
            db_now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            t1 = time.time()
            from queuectl_core.timeutil import UTC

            self._offset = db_now - datetime.fromtimestamp((t0 + t1) / 2, tz=UTC)
            if not self._migrated:
                self._migrate(conn)
                self._migrated = True
            if self._wants_listen:
                conn.execute(f"LISTEN {_quote_ident(self.channel)}")
                self._listening = True
        except BaseException:
            # Only a connection that is fully set up (migrated, listening) is kept.
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._listening = False
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _on_notify(self, notify: Any) -> None:
        self._woken = True

    def _run(self, fn: Callable[[Any], T]) -> T:
        """Run fn(connection); any database failure becomes StorageError, and a connection failure
        also drops the connection so the next call starts afresh."""
        psycopg = self._psycopg
        try:
            return fn(self._connect())
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop()
            raise self._StorageError(f"PostgreSQL unavailable: {_one_line(exc)}") from None
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.closed:
                self._drop()
            raise self._StorageError(f"PostgreSQL: {_one_line(exc)}") from None

    def _migrate(self, conn: Any) -> None:
        psycopg = self._psycopg
        try:
            row = conn.execute(f"SELECT max(version) FROM {self.s}.schema_migrations").fetchone()
            if row[0] is not None and row[0] >= len(MIGRATIONS):
                return  # the common case: one cheap read, no lock
        except psycopg.errors.UndefinedTable:
            pass
        except psycopg.errors.InvalidSchemaName:
            pass
        # Several workers may start at once: the advisory lock serialises them, and each re-reads
        # the version under it, so every migration runs exactly once.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"queuectl-migrate:{self.schema}",))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.s}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.s}.schema_migrations ("
                         f"version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            done = conn.execute(f"SELECT coalesce(max(version), 0) FROM {self.s}.schema_migrations").fetchone()[0]
            for version, sql in enumerate(MIGRATIONS, start=1):
                if version > done:
                    conn.execute(sql.format(s=self.s))
                    conn.execute(f"INSERT INTO {self.s}.schema_migrations (version) VALUES (%s)", (version,))

    def _notify(self, conn: Any) -> None:
        # Inside the caller's transaction: delivered at commit, never for a rolled-back change.
        conn.execute("SELECT pg_notify(%s, '')", (self.channel,))

    def _job(self, row: Sequence[Any]) -> Job:
        from queuectl_core.models import Job

        return Job(
            id=row[0], command=row[1], state=self._JobState(row[2]), attempts=row[3], max_retries=row[4],
            priority=row[5], created_at=row[6], updated_at=row[7], run_at=row[8], timeout=row[9],
            last_exit_code=row[10], last_error=row[11], log_path=row[12], output_tail=row[13],
            worker_id=row[14], lease_token=row[15], lease_expires_at=row[16],
        )

    def _one(self, rows: list[Any]) -> Job | None:
        return self._job(rows[0]) if rows else None

    # -- jobs -------------------------------------------------------------------------------
    def now(self) -> datetime:
        """The database clock, estimated locally from the offset measured at connect: callers use
        it to size waits, so it never blocks or raises, even while the database is away."""
        from queuectl_core.timeutil import UTC

        return datetime.now(tz=UTC) + self._offset

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        from queuectl_core.errors import DuplicateJobError

        if not jobs:
            return []
        ids = [j.id for j in jobs]

        def insert(conn: Any) -> list[Job]:
            with conn.transaction():
                # One statement for the whole batch (arrays, not one INSERT per job): --file of tens
                # of thousands of jobs stays one round trip. DO NOTHING + RETURNING tells us which
                # ids already existed without aborting on the first.
                rows = conn.execute(
                    f"INSERT INTO {self.s}.jobs (id, command, state, max_retries, priority, run_at, timeout)"
                    f" SELECT i, c, 'pending', m, p, coalesce(r, now() + make_interval(secs => coalesce(d, 0))), t"
                    f" FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[], %s::timestamptz[],"
                    f" %s::float8[], %s::float8[]) AS u(i, c, m, p, r, d, t)"
                    f" ON CONFLICT (id) DO NOTHING RETURNING {_COLS}",
                    (ids, [j.command for j in jobs], [j.max_retries for j in jobs], [j.priority for j in jobs],
                     [j.run_at for j in jobs], [_float(j.delay) for j in jobs], [_float(j.timeout) for j in jobs]),
                ).fetchall()
                if len(rows) != len(jobs):
                    inserted = {r[0] for r in rows}
                    seen: set[str] = set()
                    for job_id in ids:
                        if job_id not in inserted or job_id in seen:
                            raise DuplicateJobError(job_id)  # rolls the whole batch back
                        seen.add(job_id)
                self._notify(conn)
            by_id = {r[0]: self._job(r) for r in rows}
            return [by_id[i] for i in ids]

        return self._run(insert)

    def get(self, job_id: str) -> Job | None:
        return self._run(lambda conn: self._one(
            conn.execute(f"SELECT {_COLS} FROM {self.s}.jobs WHERE id = %s", (job_id,)).fetchall()))

    def list_jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]:
        sql = f"SELECT {_COLS} FROM {self.s}.jobs"
        params: list[Any] = []
        if state is not None:
            sql += " WHERE state = %s"
            params.append(str(state))
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        return self._run(lambda conn: [self._job(r) for r in conn.execute(sql, params).fetchall()])

    def counts(self) -> dict[JobState, int]:
        counts = {s: 0 for s in self._JobState}
        rows = self._run(lambda conn: conn.execute(
            f"SELECT state, count(*) FROM {self.s}.jobs GROUP BY state").fetchall())
        for state, n in rows:
            counts[self._JobState(state)] = n
        return counts

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        if self._unconfirmed_claim is not None:
            # The last claim's reply was lost: it may have committed. Take that job up again under
            # the same token rather than leave it to sit out its lease and count an attempt unrun.
            token = self._unconfirmed_claim
            job = self._run(lambda conn: self._one(conn.execute(
                f"UPDATE {self.s}.jobs j SET lease_expires_at = now() + make_interval(secs => %s)"
                f" WHERE j.lease_token = %s AND j.state = 'processing' RETURNING {_JCOLS}",
                (lease_seconds, token)).fetchall()))
            self._unconfirmed_claim = None
            if job is not None:
                return job
        token = os.urandom(8).hex()
        # The CTE is MATERIALIZED and LIMIT 1, and the UPDATE joins it on the primary key: the planner
        # cannot re-run the subquery per row or turn it into a semi-join that locks and updates more
        # rows than the limit. SKIP LOCKED lets concurrent claimers take different rows without waiting.
        sql = (
            f"WITH next AS MATERIALIZED ("
            f" SELECT id FROM {self.s}.jobs WHERE state IN ('pending', 'failed') AND run_at <= now()"
            f" ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            f" UPDATE {self.s}.jobs j SET state = 'processing', attempts = j.attempts + 1, worker_id = %s,"
            f" lease_token = %s, lease_expires_at = now() + make_interval(secs => %s), updated_at = now()"
            f" FROM next WHERE j.id = next.id RETURNING {_JCOLS}"
        )
        try:
            return self._run(lambda conn: self._one(conn.execute(sql, (worker_id, token, lease_seconds)).fetchall()))
        except self._StorageError:
            self._unconfirmed_claim = token
            raise

    def heartbeat(self, job_id: str, token: str, lease_seconds: float) -> bool:
        return self._run(lambda conn: conn.execute(
            f"UPDATE {self.s}.jobs SET lease_expires_at = now() + make_interval(secs => %s)"
            f" WHERE id = %s AND lease_token = %s AND state = 'processing'",
            (lease_seconds, job_id, token)).rowcount == 1)

    def _finish(self, job_id: str, token: str, state: str, retry_in: float | None,
                result: AttemptResult) -> Job | None:
        # The lease token stays on the finished row (only the expiry is cleared): if the connection
        # drops after COMMIT but before the reply, the worker's retry of this same write finds its
        # own token on a row already in the target state and gets that row back, instead of a
        # spurious "lease lost". Every other write still requires state = 'processing'.
        def finish(conn: Any) -> Job | None:
            with conn.transaction():
                rows = conn.execute(
                    f"UPDATE {self.s}.jobs SET state = %s,"
                    f" run_at = CASE WHEN %s::float8 IS NULL THEN run_at ELSE now() + make_interval(secs => %s) END,"
                    f" updated_at = now(), last_exit_code = %s, last_error = %s, log_path = %s, output_tail = %s,"
                    f" lease_expires_at = NULL"
                    f" WHERE id = %s AND lease_token = %s AND state = 'processing' RETURNING {_COLS}",
                    (state, retry_in, retry_in, result.exit_code, _text(result.error), _text(result.log_path),
                     _text(result.output_tail), job_id, token),
                ).fetchall()
                if not rows:
                    rows = conn.execute(
                        f"SELECT {_COLS} FROM {self.s}.jobs WHERE id = %s AND lease_token = %s AND state = %s"
                        f" AND lease_expires_at IS NULL", (job_id, token, state)).fetchall()
                elif state == "failed":
                    self._notify(conn)  # idle workers re-arm their timers for the retry
            return self._one(rows)

        return self._run(finish)

    def complete(self, job_id: str, token: str, result: AttemptResult) -> Job | None:
        return self._finish(job_id, token, "completed", None, result)

    def fail(self, job_id: str, token: str, result: AttemptResult, retry_in: float | None) -> Job | None:
        return self._finish(job_id, token, "failed" if retry_in is not None else "dead", retry_in, result)

    def release(self, job_id: str, token: str) -> Job | None:
        def release(conn: Any) -> Job | None:
            with conn.transaction():
                rows = conn.execute(
                    f"UPDATE {self.s}.jobs SET state = 'pending', attempts = greatest(attempts - 1, 0),"
                    f" run_at = now(), updated_at = now(), worker_id = NULL, lease_token = NULL,"
                    f" lease_expires_at = NULL"
                    f" WHERE id = %s AND lease_token = %s AND state = 'processing' RETURNING {_COLS}",
                    (job_id, token)).fetchall()
                if rows:
                    self._notify(conn)
            return self._one(rows)

        return self._run(release)

    def recover_expired(self) -> list[Job]:
        reason = "worker lost: lease expired while the job was running"

        def recover(conn: Any) -> list[Job]:
            with conn.transaction():
                # SKIP LOCKED: every idle worker runs this each second; they split the work rather
                # than queue up behind each other's row locks.
                rows = conn.execute(
                    f"WITH expired AS MATERIALIZED ("
                    f" SELECT id FROM {self.s}.jobs WHERE state = 'processing' AND lease_expires_at < now()"
                    f" FOR UPDATE SKIP LOCKED)"
                    f" UPDATE {self.s}.jobs j SET state = CASE WHEN j.attempts > j.max_retries THEN 'dead'"
                    f" ELSE 'failed' END, run_at = now(), updated_at = now(), last_error = %s,"
                    f" last_exit_code = NULL, lease_token = NULL, lease_expires_at = NULL"
                    f" FROM expired WHERE j.id = expired.id RETURNING {_JCOLS}", (reason,)).fetchall()
                if rows:
                    self._notify(conn)
            return [self._job(r) for r in rows]

        return self._run(recover)

    def retry_dead(self, job_id: str) -> Job:
        from queuectl_core.errors import JobNotFoundError, ValidationError

        def retry(conn: Any) -> Job:
            with conn.transaction():
                rows = conn.execute(
                    f"UPDATE {self.s}.jobs SET state = 'pending', attempts = 0, run_at = now(), updated_at = now(),"
                    f" worker_id = NULL, lease_token = NULL, lease_expires_at = NULL"
                    f" WHERE id = %s AND state = 'dead' RETURNING {_COLS}", (job_id,)).fetchall()
                if not rows:
                    state = conn.execute(f"SELECT state FROM {self.s}.jobs WHERE id = %s", (job_id,)).fetchone()
                    if state is None:
                        raise JobNotFoundError(job_id)
                    raise ValidationError(f"job {job_id!r} is not in the DLQ (its state is {state[0]})")
                self._notify(conn)
            return self._job(rows[0])

        return self._run(retry)

    def next_run_at(self) -> datetime | None:
        return self._run(lambda conn: conn.execute(
            f"SELECT min(run_at) FROM {self.s}.jobs WHERE state IN ('pending', 'failed')").fetchone()[0])

    # -- workers ----------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        # From now on this connection LISTENs (and re-LISTENs after every reconnect), so a job
        # enqueued before the first wait_for_work still wakes it.
        self._wants_listen = True
        self._hostname = info.hostname

        def register(conn: Any) -> None:
            if not self._listening:
                conn.execute(f"LISTEN {_quote_ident(self.channel)}")
                self._listening = True
            with conn.transaction():
                conn.execute(f"DELETE FROM {self.s}.workers WHERE last_seen < now() - interval '1 day'")
                conn.execute(
                    f"INSERT INTO {self.s}.workers (id, hostname, pid, started_at, last_seen) VALUES (%s, %s, %s, %s, now())"
                    f" ON CONFLICT (hostname, id) DO UPDATE SET pid = excluded.pid,"
                    f" started_at = excluded.started_at, last_seen = now(), current_job = NULL, stop_requested = false",
                    (info.id, info.hostname, info.pid, info.started_at))

        self._run(register)

    def worker_seen(self, worker_id: str, current_job: str | None) -> bool:
        row = self._run(lambda conn: conn.execute(
            f"UPDATE {self.s}.workers SET last_seen = now(), current_job = %s WHERE hostname = %s AND id = %s"
            f" RETURNING stop_requested", (current_job, self._hostname, worker_id)).fetchone())
        return bool(row and row[0])

    def unregister_worker(self, worker_id: str) -> None:
        self._wants_listen = False
        self._run(lambda conn: conn.execute(f"DELETE FROM {self.s}.workers WHERE hostname = %s AND id = %s",
                                            (self._hostname, worker_id)))

    def live_workers(self) -> list[WorkerInfo]:
        from queuectl_core.models import WorkerInfo

        rows = self._run(lambda conn: conn.execute(
            f"SELECT id, hostname, pid, started_at, last_seen, current_job FROM {self.s}.workers"
            f" WHERE last_seen >= now() - make_interval(secs => %s) ORDER BY id", (WORKER_LIVE_SECONDS,)).fetchall())
        return [WorkerInfo(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def request_stop(self) -> int:
        def stop(conn: Any) -> int:
            with conn.transaction():
                rows = conn.execute(
                    f"UPDATE {self.s}.workers SET stop_requested = true"
                    f" WHERE last_seen >= now() - make_interval(secs => %s) RETURNING id",
                    (WORKER_LIVE_SECONDS,)).fetchall()
                self._notify(conn)
            return len(rows)

        return self._run(stop)

    def wait_for_work(self, timeout: float, wakeup_fd: int | None = None) -> None:
        """Wait on the connection's socket (NOTIFY) and wakeup_fd. Never raises: the worker calls
        this while riding out an outage, so a broken connection just means sleeping on wakeup_fd."""
        timeout = max(timeout, 0.0)
        if self._woken:  # a notification arrived while another statement was running
            self._woken = False
            return
        conn = self._conn
        if conn is not None and self._wants_listen and not self._listening:
            try:
                conn.execute(f"LISTEN {_quote_ident(self.channel)}")
                self._listening = True
            except self._psycopg.Error:
                self._drop()
                conn = None
        fds: list[int] = []
        conn_fd = -1
        if conn is not None and self._listening and not conn.closed:
            try:
                conn_fd = conn.fileno()
                fds.append(conn_fd)
            except self._psycopg.Error:
                self._drop()
        if wakeup_fd is not None:
            fds.append(wakeup_fd)
        if not fds:
            time.sleep(timeout)
            return
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            return
        if conn_fd in ready:
            self._drain_notifies()

    def _drain_notifies(self) -> None:
        conn = self._conn
        if conn is None:
            return
        pgconn = conn.pgconn
        try:
            pgconn.consume_input()
            while pgconn.notifies() is not None:
                pass
        except self._psycopg.Error:
            # The socket was readable because the server went away: drop it, reconnect next call.
            self._drop()
            return
        if pgconn.status != self._psycopg.pq.ConnStatus.OK:
            self._drop()
        self._woken = False

    def close(self) -> None:
        self._drop()


def _float(value: float | None) -> float | None:
    # psycopg refuses a list mixing int and float; NewJob allows either for seconds.
    return float(value) if value is not None else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _open(config: Config) -> PostgresStorage:
    return PostgresStorage(config["postgres.dsn"], config["postgres.schema"], config["postgres.connect_timeout"])


def _validate_schema(value: str) -> None:
    if not _IDENT_RE.match(value):
        raise ValueError("must be a plain identifier (letters, digits, underscores; not starting with a digit)")


@hookimpl
def queuectl_register_storages(register: Callable[[str, Any], None]) -> None:
    register("postgres", _open)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting("postgres.dsn", str, "",
                     "PostgreSQL connection string (postgresql://user:password@host/db); empty uses libpq's "
                     "PG* environment variables.", secret=True))
    register(Setting("postgres.schema", str, "queuectl",
                     "The schema holding the queue's tables; queues in different schemas are independent.",
                     validate=_validate_schema))
    register(Setting("postgres.connect_timeout", int, 5,
                     "Seconds to wait for a connection before reporting the database unreachable.", minimum=1))


__all__ = ["MIGRATIONS", "PostgresStorage"]
