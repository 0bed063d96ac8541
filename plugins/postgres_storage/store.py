"""The PostgreSQL storage itself (the package's ``__init__`` holds its hooks and settings).

The statements are core's shared SQL layer (``queuectl_core.storage.sql``) in the PostgreSQL dialect:
claims use ``FOR UPDATE SKIP LOCKED`` and every time written comes from the database clock, so hosts
with skewed clocks agree. This module keeps what is PostgreSQL's own: the connection and its
reconnects, migrations under an advisory lock, the one-round-trip batch insert, LISTEN/NOTIFY
wake-ups (polling alone stays correct), and keeping the DSN's password out of every message.
psycopg is imported when a connection is opened, so that the message for a missing ``postgres``
extra is one line.

Each attempt's output is kept in the ``job_output`` table (the ``AttemptOutput`` capability), so
``queuectl logs`` and ``show`` read it from any host.
"""

from __future__ import annotations

import os
import re
import select
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from queuectl_core.storage.sql import JOB_COLUMNS, SQLStore

from . import IDENT_RE

if TYPE_CHECKING:
    from typing import Any, Callable, Sequence, TypeVar

    from queuectl_core.jobs.lifecycle import Change
    from queuectl_core.jobs.models import Job, NewJob
    from queuectl_core.jobs.output import OutputWrite
    from queuectl_core.jobs.records import WorkerInfo

    T = TypeVar("T")

INSTALL_HINT = "the postgres storage needs psycopg: pip install 'queuectl[postgres]'"
_COLS = ", ".join(JOB_COLUMNS)

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
    -- next_run_at (an idle worker's timer) and the expired leases without scanning the table.
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
    """
    ALTER TABLE {s}.jobs DROP CONSTRAINT IF EXISTS jobs_state_check;
    ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_state_check
        CHECK (state IN ('pending', 'processing', 'completed', 'failed', 'dead', 'cancelled'));
    ALTER TABLE {s}.jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
    -- `list` shows newest first.
    CREATE INDEX jobs_created ON {s}.jobs (created_at DESC, id DESC);
    """,
    # -- scheduling: queues, dependencies, unique keys, exit-code rules, schedules --
    """
    ALTER TABLE {s}.jobs ADD COLUMN queue text NOT NULL DEFAULT 'default';
    -- How many of the jobs this one waits on (`after`) have not completed: only 0 is claimable.
    ALTER TABLE {s}.jobs ADD COLUMN waiting integer NOT NULL DEFAULT 0;
    ALTER TABLE {s}.jobs ADD COLUMN unique_key text;
    ALTER TABLE {s}.jobs ADD COLUMN retry_on text;
    ALTER TABLE {s}.jobs ADD COLUMN no_retry_on text;
    -- The claim walks this index once per queue, so paused queues, other workers' queues and
    -- jobs waiting on others cost it nothing.
    DROP INDEX {s}.jobs_ready;
    DROP INDEX {s}.jobs_due;
    CREATE INDEX jobs_ready ON {s}.jobs (queue, priority DESC, run_at, id)
        WHERE state IN ('pending', 'failed') AND waiting = 0;
    CREATE INDEX jobs_due ON {s}.jobs (queue, run_at) WHERE state IN ('pending', 'failed') AND waiting = 0;
    CREATE INDEX jobs_running ON {s}.jobs (queue) WHERE state = 'processing';
    -- Of many concurrent enqueuers of one key, exactly one wins.
    CREATE UNIQUE INDEX jobs_unique_key ON {s}.jobs (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('pending', 'failed', 'processing');
    CREATE TABLE {s}.queues (
        name text PRIMARY KEY,
        concurrency integer NOT NULL DEFAULT 0,
        paused boolean NOT NULL DEFAULT false
    );
    INSERT INTO {s}.queues (name) SELECT 'default' UNION SELECT DISTINCT queue FROM {s}.jobs ON CONFLICT DO NOTHING;
    CREATE TABLE {s}.job_deps (
        child text NOT NULL,
        parent text NOT NULL,
        done boolean NOT NULL DEFAULT false,
        PRIMARY KEY (child, parent)
    );
    CREATE INDEX job_deps_parent ON {s}.job_deps (parent) WHERE NOT done;
    CREATE TABLE {s}.schedules (
        name text PRIMARY KEY,
        cron text,
        every double precision,
        tz text,
        job text NOT NULL,
        paused boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL,
        last_tick timestamptz
    );
    """,
    # control and visibility: where a job runs, its env (JSON text) and tags (",a,b,"), its last
    # attempt's duration, `worker stop --now`, and the finished-jobs index retention purges by.
    """
    ALTER TABLE {s}.jobs ADD COLUMN cwd text, ADD COLUMN env text, ADD COLUMN tags text,
        ADD COLUMN last_duration double precision;
    ALTER TABLE {s}.workers ADD COLUMN stop_now boolean NOT NULL DEFAULT false;
    CREATE INDEX jobs_finished ON {s}.jobs (state, updated_at) WHERE state IN ('completed', 'dead', 'cancelled');
    """,
    # -- scale (issue 10): `status` and `list` in constant time at a million jobs. job_counts tallies
    # jobs and their attempts per (queue, state, held by --after), kept by triggers through every
    # write. Rows are deltas, appended and never updated, so concurrent workers never wait on one
    # counter row (a single row per key, updated in place, is held locked by each claim and
    # completion until its commit); readers sum them, and a fold (about one trigger call in 250,
    # under a try-lock, so folds never queue either) collapses them to one row per key.
    # jobs_state gains created_at: `list --state S` walks it newest first instead of sorting S.
    """
    LOCK TABLE {s}.jobs IN SHARE ROW EXCLUSIVE MODE;
    DROP INDEX {s}.jobs_state;
    CREATE INDEX jobs_state ON {s}.jobs (state, created_at, id);
    CREATE TABLE {s}.job_counts (
        queue text NOT NULL,
        state text NOT NULL,
        held boolean NOT NULL,
        jobs bigint NOT NULL,
        attempts bigint NOT NULL
    );
    INSERT INTO {s}.job_counts (queue, state, held, jobs, attempts)
        SELECT queue, state, waiting > 0, count(*), coalesce(sum(attempts), 0) FROM {s}.jobs GROUP BY 1, 2, 3;
    CREATE FUNCTION {s}.job_counts_fold() RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF pg_try_advisory_xact_lock(hashtextextended('queuectl-fold:' || '{s}', 0)) THEN
            WITH gone AS (DELETE FROM {s}.job_counts RETURNING *)
            INSERT INTO {s}.job_counts (queue, state, held, jobs, attempts)
                SELECT queue, state, held, sum(jobs), sum(attempts) FROM gone GROUP BY 1, 2, 3
                HAVING sum(jobs) <> 0 OR sum(attempts) <> 0;
        END IF;
    END $$;
    CREATE FUNCTION {s}.job_counts_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}.job_counts (queue, state, held, jobs, attempts)
            SELECT queue, state, waiting > 0, count(*), coalesce(sum(attempts), 0) FROM added GROUP BY 1, 2, 3;
        IF random() < 0.004 THEN PERFORM {s}.job_counts_fold(); END IF;
        RETURN NULL;
    END $$;
    CREATE FUNCTION {s}.job_counts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}.job_counts (queue, state, held, jobs, attempts)
            SELECT queue, state, waiting > 0, -count(*), -coalesce(sum(attempts), 0) FROM removed GROUP BY 1, 2, 3;
        IF random() < 0.004 THEN PERFORM {s}.job_counts_fold(); END IF;
        RETURN NULL;
    END $$;
    CREATE FUNCTION {s}.job_counts_moved() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}.job_counts (queue, state, held, jobs, attempts) VALUES
            (OLD.queue, OLD.state, OLD.waiting > 0, -1, -OLD.attempts),
            (NEW.queue, NEW.state, NEW.waiting > 0, 1, NEW.attempts);
        IF random() < 0.004 THEN PERFORM {s}.job_counts_fold(); END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER job_counts_insert AFTER INSERT ON {s}.jobs REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.job_counts_added();
    CREATE TRIGGER job_counts_delete AFTER DELETE ON {s}.jobs REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.job_counts_removed();
    -- Per row, and only when a tallied column changes: heartbeats and output updates skip it.
    CREATE TRIGGER job_counts_update AFTER UPDATE OF state, queue, waiting, attempts ON {s}.jobs FOR EACH ROW
        WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.queue IS DISTINCT FROM NEW.queue
              OR (OLD.waiting > 0) IS DISTINCT FROM (NEW.waiting > 0) OR OLD.attempts IS DISTINCT FROM NEW.attempts)
        EXECUTE FUNCTION {s}.job_counts_moved();
    """,
    # -- history (issue 20): every attempt of a job, kept across restart and dlq retry. last_attempt
    # numbers attempts for good (a claim adds one, nothing takes it back); host is where the
    # claiming worker runs. A row trigger records each attempt as its job leaves processing, in the
    # transaction (and the statement) of that change, so recording costs no round trip. Jobs that
    # ran before keep their last attempt.
    """
    ALTER TABLE {s}.jobs ADD COLUMN last_attempt integer NOT NULL DEFAULT 0, ADD COLUMN host text;
    UPDATE {s}.jobs SET last_attempt = attempts WHERE attempts > 0;
    CREATE TABLE {s}.attempts (
        job_id text NOT NULL,
        attempt integer NOT NULL,
        started_at timestamptz,
        finished_at timestamptz NOT NULL,
        duration double precision,
        exit_code integer,
        error text,
        worker_id text,
        host text,
        log_path text,
        PRIMARY KEY (job_id, attempt)
    );
    INSERT INTO {s}.attempts (job_id, attempt, finished_at, duration, exit_code, error, worker_id, log_path)
        SELECT id, attempts, updated_at, last_duration, last_exit_code, last_error, worker_id, log_path
        FROM {s}.jobs WHERE attempts > 0 AND state <> 'processing';
    CREATE FUNCTION {s}.attempt_ended() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}.attempts (job_id, attempt, started_at, finished_at, duration, exit_code, error,
            worker_id, host, log_path)
        VALUES (NEW.id, NEW.last_attempt, OLD.updated_at, NEW.updated_at, NEW.last_duration, NEW.last_exit_code,
            NEW.last_error, OLD.worker_id, OLD.host, NEW.log_path)
        ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = excluded.started_at,
            finished_at = excluded.finished_at, duration = excluded.duration, exit_code = excluded.exit_code,
            error = excluded.error, worker_id = excluded.worker_id, host = excluded.host, log_path = excluded.log_path;
        RETURN NULL;
    END $$;
    CREATE FUNCTION {s}.attempts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM {s}.attempts a USING removed r WHERE a.job_id = r.id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER attempts_ended AFTER UPDATE OF state ON {s}.jobs FOR EACH ROW
        WHEN (OLD.state = 'processing' AND NEW.state <> 'processing')
        EXECUTE FUNCTION {s}.attempt_ended();
    CREATE TRIGGER attempts_delete AFTER DELETE ON {s}.jobs REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.attempts_removed();
    """,
    # -- accounting: what each attempt used (CPU seconds, peak resident bytes), as its executor
    # measured it, on the job (its last attempt, for `list`) and in its history; the trigger's
    # function copies them. attempts_finished is what /metrics reads new attempts by.
    """
    ALTER TABLE {s}.jobs ADD COLUMN last_cpu_seconds double precision, ADD COLUMN last_max_rss_bytes bigint;
    ALTER TABLE {s}.attempts ADD COLUMN cpu_seconds double precision, ADD COLUMN max_rss_bytes bigint;
    CREATE INDEX attempts_finished ON {s}.attempts (finished_at);
    CREATE OR REPLACE FUNCTION {s}.attempt_ended() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}.attempts (job_id, attempt, started_at, finished_at, duration, exit_code, error,
            worker_id, host, log_path, cpu_seconds, max_rss_bytes)
        VALUES (NEW.id, NEW.last_attempt, OLD.updated_at, NEW.updated_at, NEW.last_duration, NEW.last_exit_code,
            NEW.last_error, OLD.worker_id, OLD.host, NEW.log_path, NEW.last_cpu_seconds, NEW.last_max_rss_bytes)
        ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = excluded.started_at,
            finished_at = excluded.finished_at, duration = excluded.duration, exit_code = excluded.exit_code,
            error = excluded.error, worker_id = excluded.worker_id, host = excluded.host, log_path = excluded.log_path,
            cpu_seconds = excluded.cpu_seconds, max_rss_bytes = excluded.max_rss_bytes;
        RETURN NULL;
    END $$;
    """,
    # -- output: every attempt's output, kept in the database in chunks (queuectl_core.storage.sql.output),
    # deleted with its job by a statement trigger, as its attempts are.
    """
    CREATE TABLE {s}.job_output (
        job_id text NOT NULL,
        attempt integer NOT NULL,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (job_id, attempt, seq)
    );
    CREATE FUNCTION {s}.job_output_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM {s}.job_output o USING removed r WHERE o.job_id = r.id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER job_output_delete AFTER DELETE ON {s}.jobs REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.job_output_removed();
    """,
    # -- limits: a job's own memory (bytes) and CPU time (seconds), and each queue's defaults --
    """
    ALTER TABLE {s}.jobs ADD COLUMN memory bigint, ADD COLUMN cpu_time double precision;
    ALTER TABLE {s}.queues ADD COLUMN memory bigint, ADD COLUMN cpu_time double precision;
    """,
    # -- notifications: the outbox workers deliver from (at least once, each row under a lease),
    # and every delivery try counted per notifier and outcome for /metrics.
    """
    CREATE TABLE {s}.outbox (
        notifier text NOT NULL,
        id text NOT NULL,
        event text NOT NULL,
        body text NOT NULL,
        created_at timestamptz NOT NULL,
        due_at timestamptz NOT NULL,
        tries integer NOT NULL DEFAULT 0,
        owner text,
        token text,
        settled_at timestamptz,
        outcome text,
        last_error text,
        PRIMARY KEY (notifier, id)
    );
    CREATE INDEX outbox_due ON {s}.outbox (due_at) WHERE settled_at IS NULL;
    CREATE INDEX outbox_settled ON {s}.outbox (settled_at) WHERE settled_at IS NOT NULL;
    CREATE TABLE {s}.notification_counts (
        notifier text NOT NULL,
        outcome text NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (notifier, outcome)
    );
    """,
    # -- needs: a job's needs ("gpu=1"), the units of each need class, pools, what each worker has.
    # The ready index leaves out jobs with needs; those have their own, by class, so a class no
    # worker can serve is one row of need_units to the claim, not a walk over its jobs.
    """
    ALTER TABLE {s}.jobs ADD COLUMN needs text;
    CREATE TABLE {s}.need_units (needs text NOT NULL, name text NOT NULL, units integer NOT NULL,
        PRIMARY KEY (needs, name));
    CREATE TABLE {s}.resource_pools (name text PRIMARY KEY, capacity integer NOT NULL);
    CREATE TABLE {s}.worker_resources (hostname text NOT NULL, worker_id text NOT NULL, name text NOT NULL,
        units integer NOT NULL, spec text NOT NULL, PRIMARY KEY (hostname, worker_id, name));
    DROP INDEX {s}.jobs_ready;
    CREATE INDEX jobs_ready ON {s}.jobs (queue, priority DESC, run_at, id)
        WHERE state IN ('pending', 'failed') AND waiting = 0 AND needs IS NULL;
    CREATE INDEX jobs_ready_needs ON {s}.jobs (queue, needs, priority DESC, run_at, id)
        WHERE state IN ('pending', 'failed') AND waiting = 0 AND needs IS NOT NULL;
    CREATE INDEX jobs_running_needs ON {s}.jobs (needs) WHERE state = 'processing' AND needs IS NOT NULL;
    """,
    # -- output: chunks compressed with lz4 where the server has it (PostgreSQL 14 and later, built
    # with lz4, as the usual packages are), else stored as they come. The default, pglz, took a
    # third of a drain of jobs printing 100 KB each, on the database's CPU.
    """
    DO $$ BEGIN
        EXECUTE 'ALTER TABLE {s}.job_output ALTER COLUMN data SET COMPRESSION lz4';
    EXCEPTION WHEN OTHERS THEN
        EXECUTE 'ALTER TABLE {s}.job_output ALTER COLUMN data SET STORAGE EXTERNAL';
    END $$;
    """,
)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a job's output can. Never let that wedge a worker's write."""
    return value.replace("\x00", "\ufffd") if value is not None else None


def _dialect() -> Any:
    from queuectl_core.storage.sql import Dialect

    return Dialect(paramstyle="pyformat", now="now()", after=lambda p: f"(now() + make_interval(secs => :{p}))",
                   to_db=lambda dt: dt, from_db=lambda v: v, clock_param=lambda: None,
                   skip_locked=" FOR UPDATE SKIP LOCKED", materialized="MATERIALIZED",
                   for_update=" FOR UPDATE", for_share=" FOR SHARE", lateral=True, writable_cte=True,
                   # extract(epoch ...) of a timestamptz is UTC seconds whatever the session's zone
                   epoch_minute=lambda col: f"CAST(floor(extract(epoch FROM {col}) / 60) AS bigint)")


class _Tx:
    """One transaction's connection. A COPY into the jobs table stays open across the batches of
    ``enqueue --file`` (:meth:`copy`), so the server stores one batch while this process parses
    and prepares the next; any other statement, and the commit, end it first (:meth:`end_copy`),
    which is also where a refused row (a duplicate id) is reported."""

    __slots__ = ("_conn", "channel", "now", "_copy", "_map_error", "pipelined")

    def __init__(self, conn: Any, channel: str, map_error: Callable[[Exception], Exception],
                 pipelined: bool = False) -> None:
        self._conn = conn
        self.pipelined = pipelined  # in psycopg's pipeline mode: later() statements go together
        self.channel = channel
        self.now: datetime | None = None  # the transaction's now(), once read
        self._copy: tuple[str, Any, Any, Any] | None = None  # (statement, cursor, its copy() context, Copy)
        self._map_error = map_error

    @property
    def conn(self) -> Any:
        """The connection, for a statement of its own: any open COPY is ended first."""
        self.end_copy()
        return self._conn

    def rows(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]:
        return self.later(sql, params)()

    def later(self, sql: str, params: dict[str, Any]) -> Callable[[], list[Sequence[Any]]]:
        # In pipeline mode execute() only queues the statement; fetchall() sends what is queued
        # and waits for its rows (psycopg's sync): statements sent before a read share its round trip.
        for key in ("error", "log_path", "output_tail", "command"):
            if isinstance(params.get(key), str):
                params[key] = _text(params[key])
        return self.conn.execute(sql, params).fetchall

    def wake(self) -> None:
        # Inside the transaction: delivered at commit, never for a rolled-back change.
        self.conn.execute("SELECT pg_notify(%s, '')", (self.channel,))

    def many(self, sql: str, params: Sequence[dict[str, Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql, params)

    def clock(self) -> datetime:
        if self.now is None:
            self.now = self.conn.execute("SELECT now()").fetchone()[0]
        return self.now

    def copy(self, statement: str, text: str) -> None:
        """Send ``text`` to ``COPY statement``, opening it unless it is the one already open."""
        if self._copy is not None and self._copy[0] != statement:
            self.end_copy()
        if self._copy is None:
            cur = self._conn.cursor()
            context = cur.copy(statement)
            self._copy = (statement, cur, context, context.__enter__())
        try:
            self._copy[3].write(text)
        except Exception as exc:
            raise self._map_error(exc) from None

    def end_copy(self) -> None:
        if self._copy is None:
            return
        _, cur, context, _ = self._copy
        self._copy = None
        try:
            context.__exit__(None, None, None)
        except Exception as exc:
            raise self._map_error(exc) from None
        finally:
            cur.close()

    def abort_copy(self, exc: BaseException) -> None:
        """Fail an open COPY (the transaction is rolling back), so the connection can go on."""
        if self._copy is None:
            return
        _, cur, context, _ = self._copy
        self._copy = None
        try:
            context.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:
            pass
        finally:
            cur.close()


class PostgresStorage(SQLStore):
    """The Storage protocol on PostgreSQL, one connection per instance (not shared across threads).

    The connection is opened on first use and dropped on any connection error, which surfaces as
    StorageError; the next call reconnects, so a worker's retry loop rides out a restart.
    """

    def __init__(self, dsn: str, schema: str = "queuectl", connect_timeout: int = 5) -> None:
        from queuectl_core.errors import ConfigError, StorageError

        # socket.gethostname(), without importing socket (~1.5 ms of every `queuectl enqueue`);
        # replaced by the registering worker's own.
        self.hostname = os.uname().nodename
        self._unconfirmed_claim: list[str] = []  # the tokens of a claim whose reply never came
        if not re.match(IDENT_RE, schema):
            raise ConfigError(f"postgres.schema must be a plain identifier, got {schema!r}")
        try:
            import psycopg
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        self._psycopg = psycopg
        self._pipeline_ok = psycopg.Pipeline.is_supported()  # libpq 14 or later
        self._StorageError = StorageError
        self.dialect = _dialect()
        self.dsn = dsn
        self._secrets = _dsn_secrets(dsn)
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.s = _quote_ident(schema)
        self.jobs, self.workers = f"{self.s}.jobs", f"{self.s}.workers"
        self.queues_table, self.deps_table = f"{self.s}.queues", f"{self.s}.job_deps"  # -- scheduling
        self.schedules_table = f"{self.s}.schedules"
        self.counts_table = f"{self.s}.job_counts"  # -- scale (issue 10)
        self.attempts_table = f"{self.s}.attempts"  # -- history (issue 20)
        self.output_table = f"{self.s}.job_output"  # -- output kept by the storage (issue 22)
        self.outbox_table, self.notify_counts_table = f"{self.s}.outbox", f"{self.s}.notification_counts"
        self.pools_table, self.need_units_table = f"{self.s}.resource_pools", f"{self.s}.need_units"  # -- needs
        self.worker_resources_table = f"{self.s}.worker_resources"
        # One channel per schema, so two queues in one database never wake each other.
        self.channel = f"queuectl_{schema}"[:63]
        self._conn: Any = None
        self._listening = False
        self._wants_listen = False
        self._woken = False
        self._migrated = False
        # database clock - local clock, measured at each connect; now() uses it without a round trip
        self._offset = timedelta(0)
        if self._secrets is None:
            raise ConfigError("postgres.dsn cannot be parsed as a PostgreSQL connection string"
                              " (the parser's message is withheld: it may contain the password)")
        # Connect (and migrate) now, as SQLite opens its file: `worker start` fails fast, with one
        # line, on a wrong DSN or a database that is down, before forking workers. Later outages
        # are ridden out call by call.
        self._run(lambda conn: None)

    # -- plumbing -------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._drop()
        conn = self._psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=self.connect_timeout, application_name="queuectl",
            # Notice a vanished server or a cut network within a minute, not the kernel's two hours.
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
        )
        try:
            conn.add_notify_handler(self._on_notify)
            # -- needs: the claim's estimated cost (a subplan per need class) can pass
            # jit_above_cost, and compiling it costs ~100 times what running it does.
            conn.execute("SET jit = off")
            from queuectl_core.jobs.timeutil import UTC

            t0 = time.time()
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            t1 = time.time()
            local = datetime.fromtimestamp((t0 + t1) / 2, tz=UTC)
            self._offset = (row[0] if row else local) - local
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
        """Run fn(connection); any database failure becomes StorageError (with the DSN's password
        masked), and a connection failure also drops the connection so the next call starts afresh."""
        psycopg = self._psycopg
        try:
            return fn(self._connect())
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop()
            raise self._StorageError(f"PostgreSQL unavailable: {self._message(exc)}") from None
        except psycopg.errors.UniqueViolation as exc:
            if "unique_key" not in str(exc):
                raise self._StorageError(f"PostgreSQL: {self._message(exc)}") from None
            # a restart/replay of a job whose key another job now holds
            from queuectl_core.errors import UniqueKeyError

            raise UniqueKeyError(None, None) from None
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.closed:
                self._drop()
            raise self._StorageError(f"PostgreSQL: {self._message(exc)}") from None

    def _message(self, exc: BaseException) -> str:
        return _redact(" ".join(str(exc).split()) or type(exc).__name__, self._secrets or ())

    def _tx(self, fn: Callable[[Any], T], write: bool = True, pipelined: bool = False) -> T:
        def run(conn: Any) -> T:
            if pipelined and write and self._pipeline_ok:
                return self._pipelined(conn, fn)
            tx = _Tx(conn, self.channel, self._copy_error)
            if not write:
                return fn(tx)
            with conn.transaction():
                try:
                    result = fn(tx)
                    tx.end_copy()
                except BaseException as exc:
                    tx.abort_copy(exc)
                    raise
                return result

        return self._run(run)

    def _pipelined(self, conn: Any, fn: Callable[[Any], T]) -> T:
        """``fn`` in one transaction in psycopg's pipeline mode: BEGIN goes with the statements
        sent before ``fn``'s first read, COMMIT with the pipeline's end, so a worker's
        record-and-claim is two round trips rather than four (docs/scaling.md). BEGIN and COMMIT
        are sent as statements: psycopg's transaction() waits for each of them in a pipeline."""
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                result = fn(_Tx(conn, self.channel, self._copy_error, pipelined=True))
                conn.execute("COMMIT")
            return result
        except BaseException:
            if not conn.closed and conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
                try:
                    conn.execute("ROLLBACK")
                except self._psycopg.Error:
                    pass  # the connection is gone with the transaction: _run drops it
            raise

    def _migrate(self, conn: Any) -> None:
        psycopg = self._psycopg
        try:
            row = conn.execute(f"SELECT max(version) FROM {self.s}.schema_migrations").fetchone()
            if row[0] is not None and row[0] >= len(MIGRATIONS):
                return  # the common case: one cheap read, no lock
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
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

    # -- jobs -------------------------------------------------------------------------------
    def now(self) -> datetime:
        """The database clock, estimated locally from the offset measured at connect: callers use
        it to size waits, so it never blocks or raises, even while the database is away."""
        from queuectl_core.jobs.timeutil import UTC

        return datetime.now(tz=UTC) + self._offset

    def _insert(self, tx: Any, jobs: Sequence[NewJob]) -> list[Sequence[Any]]:
        if len(jobs) >= _COPY_FROM:
            return self._insert_copy(tx, jobs)
        # One statement for the whole batch (arrays, not one INSERT per job): --file of tens of
        # thousands of jobs stays one round trip. DO NOTHING + RETURNING tells the shared layer
        # which ids already existed without aborting on the first.
        from queuectl_core.errors import UniqueKeyError
        from queuectl_core.storage.sql import codes_out

        try:
            return tx.conn.execute(
                f"INSERT INTO {self.s}.jobs (id, command, state, max_retries, priority, run_at, timeout,"
                f" queue, unique_key, retry_on, no_retry_on, cwd, env, tags, needs, memory, cpu_time)"
                f" SELECT i, c, 'pending', m, p, coalesce(r, now() + make_interval(secs => coalesce(d, 0))), t,"
                f" q, k, ro, nro, cw, en, tg, nd, mem, cpu"
                f" FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[], %s::timestamptz[],"
                f" %s::float8[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::text[],"
                f" %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::float8[])"
                f" AS u(i, c, m, p, r, d, t, q, k, ro, nro, cw, en, tg, nd, mem, cpu)"
                f" ON CONFLICT (id) DO NOTHING RETURNING {_COLS}",
                ([j.id for j in jobs], [j.command for j in jobs], [j.max_retries for j in jobs],
                 [j.priority for j in jobs], [j.run_at for j in jobs], [_float(j.delay) for j in jobs],
                 [_float(j.timeout) for j in jobs],
                 [j.queue for j in jobs], [_text(j.unique_key) for j in jobs], [codes_out(j.retry_on) for j in jobs],
                 [codes_out(j.no_retry_on) for j in jobs], *_control_arrays(jobs), _needs_array(jobs),
                 [j.memory for j in jobs], [_float(j.cpu_time) for j in jobs]),
            ).fetchall()
        except self._psycopg.errors.UniqueViolation as exc:
            if "unique_key" not in str(exc):
                raise
            raise UniqueKeyError(next(j.unique_key for j in jobs if j.unique_key), None) from None

    def _insert_copy(self, tx: Any, jobs: Sequence[NewJob]) -> list[Sequence[Any]]:
        """A large batch (``enqueue --file``): one COPY straight into the jobs table. psycopg dumps
        the arrays of the one-statement form in Python (~40 µs a job); this COPY text is built with
        a few str.join and translate passes. COPY has no ON CONFLICT: an id that exists aborts
        the transaction, and the batch is refused naming it, as enqueue does anyway (the skipping
        form is kept for enqueue_tick's single job). The times are the transaction's now(), as
        the column defaults would give. The COPY stays open for the next batch (see _Tx): the
        server stores this one while the caller prepares the next (100,000 jobs: ~1.9 s -> ~1.3 s)."""

        from datetime import timedelta

        from queuectl_core.jobs.needs import needs_text
        from queuectl_core.storage.sql import codes_out, control_values

        now = tx.clock()
        rows: list[Sequence[Any]] = []
        for j in jobs:
            v = control_values(j) if (j.cwd is not None or j.env or j.tags) else _NO_CONTROL
            run_at = j.run_at if j.run_at is not None else (now + timedelta(seconds=j.delay) if j.delay else now)
            rows.append((j.id, j.command, "pending", 0, j.max_retries, j.priority, now, now, run_at, _float(j.timeout),
                         None, None, None, None, None, None, None, False, j.queue, 0, _text(j.unique_key),
                         codes_out(j.retry_on), codes_out(j.no_retry_on), _text(v["cwd"]), _text(v["env"]),
                         v["tags"], None, 0, None, None, None, j.memory, _float(j.cpu_time),
                         needs_text(j.needs) if j.needs else None))
        # Column by column, so escaping is a few C-level passes over joined text, not a call per value.
        columns = [_copy_column([r[c] for r in rows]) for c in _COPY_COLUMNS]
        text = "\n".join(map("\t".join, zip(*columns))) + "\n"
        names = ", ".join(JOB_COLUMNS[c] for c in _COPY_COLUMNS)
        # Left open for the next batch: the transaction's next other statement, or its commit,
        # ends it (_Tx.end_copy), and a refused row is reported there.
        tx.copy(f"COPY {self.s}.jobs ({names}) FROM STDIN", text)
        return rows

    def _copy_error(self, exc: Exception) -> Exception:
        """A COPY's failure as enqueue reports it: a duplicate id or a held unique key, named."""
        from queuectl_core.errors import DuplicateJobError, UniqueKeyError

        if not isinstance(exc, self._psycopg.errors.UniqueViolation):
            return exc
        detail = getattr(getattr(exc, "diag", None), "message_detail", None) or ""
        if "unique_key" in str(exc):
            found = re.search(r"Key \(unique_key\)=\((.*)\) already exists", detail)
            return UniqueKeyError(found.group(1) if found else None, None)
        found = re.search(r"Key \(id\)=\((.*)\) already exists", detail)
        return DuplicateJobError(found.group(1) if found else "")

    def claim(self, worker_id: str, lease_seconds: float, queues: Sequence[str] | None = None) -> Job | None:
        jobs = self._claim_tokens(worker_id, lease_seconds, 1, queues)
        return jobs[0] if jobs else None

    def claim_many(self, worker_id: str, lease_seconds: float, limit: int,
                   queues: Sequence[str] | None = None) -> list[Job]:
        return self._claim_tokens(worker_id, lease_seconds, max(limit, 1), queues)

    def apply_and_claim(self, changes: Sequence[tuple[str, str | None, Change]], worker_id: str,
                        lease_seconds: float, limit: int, queues: Sequence[str] | None = None,
                        output: Sequence[OutputWrite] = ()) -> tuple[list[Job | None], list[Job]]:
        if self._unconfirmed_claim:  # take those up first, as claim() does
            return (self.apply_batch(changes, output),
                    self._claim_tokens(worker_id, lease_seconds, max(limit, 1), queues))
        tokens = [os.urandom(8).hex() for _ in range(max(limit, 1))]
        try:
            return self._apply_and_claim(changes, worker_id, tokens, lease_seconds, queues, output)
        except self._StorageError:
            self._unconfirmed_claim = tokens
            raise

    def _claim_tokens(self, worker_id: str, lease_seconds: float, limit: int,
                      queues: Sequence[str] | None) -> list[Job]:
        if self._unconfirmed_claim:
            # The last claim's reply was lost: it may have committed. Take those jobs up again under
            # the same tokens rather than leave them to sit out their leases and count attempts unrun.
            names = {f"t{i}": t for i, t in enumerate(self._unconfirmed_claim)}
            rows = self._tx(lambda tx: self._q(
                tx, "UPDATE {j} SET lease_expires_at = " + self.dialect.after("lease") +
                " WHERE lease_token IN (" + ", ".join(":" + n for n in names) + ") AND state = 'processing'"
                " RETURNING " + _COLS, lease=float(lease_seconds), **names))
            self._unconfirmed_claim = []
            if rows:
                return [self._job(r) for r in rows]
        tokens = [os.urandom(8).hex() for _ in range(limit)]
        try:
            return self._claim_many(worker_id, tokens, lease_seconds, queues)
        except self._StorageError:
            self._unconfirmed_claim = tokens
            raise

    # -- workers ----------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        # From now on this connection LISTENs (and re-LISTENs after every reconnect), so a job
        # enqueued before the first wait_for_work still wakes it.
        self._wants_listen = True
        self.hostname = info.hostname

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

    def unregister_worker(self, worker_id: str) -> None:
        self._wants_listen = False
        super().unregister_worker(worker_id)

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

    def drop_schema(self) -> None:
        """Delete this queue's schema and everything in it: for throw-away queues (`queuectl
        bench`), never called on a user's queue."""
        self._run(lambda conn: conn.execute(f"DROP SCHEMA IF EXISTS {self.s} CASCADE"))
        self._migrated = False


def _control_arrays(jobs: Sequence[NewJob]) -> tuple[list[Any], list[Any], list[Any]]:
    from queuectl_core.storage.sql import control_values

    values = [control_values(j) for j in jobs]
    return ([_text(v["cwd"]) for v in values], [_text(v["env"]) for v in values], [v["tags"] for v in values])


def _needs_array(jobs: Sequence[NewJob]) -> list[str | None]:
    """-- needs: each job's needs as stored, written by the INSERT itself: a row updated after it
    would leave a dead entry in jobs_ready for every job with needs, until a vacuum."""
    if not any(j.needs for j in jobs):
        return [None] * len(jobs)
    from queuectl_core.jobs.needs import needs_text

    return [needs_text(j.needs) for j in jobs]


_COPY_FROM = 200  # jobs a batch from which _insert uses COPY (smaller ones: one statement, no temp table)
_NO_CONTROL: dict[str, Any] = {"cwd": None, "env": None, "tags": None}
# The columns _insert_copy writes (indexes into JOB_COLUMNS; the rest keep their defaults).
_COPY_COLUMNS = tuple(JOB_COLUMNS.index(c) for c in (
    "id", "command", "state", "max_retries", "priority", "created_at", "updated_at", "run_at", "timeout", "queue",
    "unique_key", "retry_on", "no_retry_on", "cwd", "env", "tags", "memory", "cpu_time", "needs"))
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _copy_column(values: list[Any]) -> list[str]:
    """One column in COPY's text format: \\N for NULL, backslash escapes in text. Text here
    never holds NUL (refused, or replaced by _text), so NUL can join a column for one translate."""
    if values.count(None) == len(values):
        return ["\\N"] * len(values)
    sample = next(v for v in values if v is not None)
    if isinstance(sample, str):
        joined = "\x00".join(["" if v is None else v for v in values])
        if "\\" in joined or "\n" in joined or "\r" in joined or "\t" in joined:
            joined = joined.translate(_COPY_ESCAPES)
        out = joined.split("\x00")
        if None in values:  # empty text is never a value here (ids, commands... are non-empty)
            out = ["\\N" if v is None else t for v, t in zip(values, out)]
        return out
    if isinstance(sample, datetime):  # mostly one value a batch (the transaction's now()): formatted once each
        formatted: dict[datetime, str] = {}
        return ["\\N" if v is None else formatted.get(v) or formatted.setdefault(v, v.isoformat()) for v in values]
    if isinstance(sample, float):
        return ["\\N" if v is None else repr(v) for v in values]
    return ["\\N" if v is None else str(v) for v in values]


def _float(value: float | None) -> float | None:
    # psycopg refuses a list mixing int and float; NewJob allows either for seconds.
    return float(value) if value is not None else None


def _dsn_secrets(dsn: str) -> tuple[str, ...] | None:
    """What must never be shown of a DSN: its password, as written and as decoded. None when libpq
    cannot parse the DSN (its message would quote the offending part, possibly the password)."""
    from urllib.parse import unquote

    import psycopg

    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        return None
    found = {str(password)} if password else set()
    # Also what the user may have meant: userinfo up to the last '@' (an unencoded '@' in a password).
    match = re.search(r"://([^/?#]*)@", dsn)
    if match and ":" in match.group(1):
        written = match.group(1).split(":", 1)[1]
        found |= {written, unquote(written)}
    # Masking a one- or two-letter password would garble every message and hide nothing.
    return tuple(sorted((f for f in found if len(f) >= 3), key=len, reverse=True))


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


__all__ = ["MIGRATIONS", "PostgresStorage"]
