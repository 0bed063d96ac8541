"""SQLite storage: the embedded default. One file, WAL mode, every write under BEGIN IMMEDIATE.

The statements are core's shared SQL layer (``queuectl_core.storage.sql``); this module keeps what is
SQLite's own: the connection, busy-lock retries, migrations, file permissions and the wake-up socket.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from queuectl_core import hookimpl
from queuectl_core.framework.settings import Setting, check_path, make_private_dirs, missing_dirs
from queuectl_core.storage.sql import SQLStore

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

    from queuectl_core.framework.settings import Config
    from queuectl_core.jobs.models import Job, NewJob
    from queuectl_core.jobs.records import WorkerInfo

    T = TypeVar("T")

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    timeout REAL,
    last_exit_code INTEGER,
    last_error TEXT,
    log_path TEXT,
    output_tail TEXT,
    worker_id TEXT,
    lease_token TEXT,
    lease_expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (priority DESC, run_at, id) WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_expires_at) WHERE state = 'processing';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    current_job TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    wake_addr TEXT
)
"""
# -- scheduling: queues, dependencies, unique keys, exit-code rules, schedules --
_SCHEDULING = """
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
ALTER TABLE jobs ADD COLUMN retry_on TEXT;
ALTER TABLE jobs ADD COLUMN no_retry_on TEXT;
DROP INDEX IF EXISTS jobs_ready;
DROP INDEX IF EXISTS jobs_due;
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, id) WHERE state IN ('pending', 'failed') AND waiting = 0;
CREATE INDEX jobs_due ON jobs (queue, run_at) WHERE state IN ('pending', 'failed') AND waiting = 0;
CREATE INDEX jobs_running ON jobs (queue) WHERE state = 'processing';
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'failed', 'processing');
CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    concurrency INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO queues (name) SELECT 'default' UNION SELECT DISTINCT queue FROM jobs;
CREATE TABLE job_deps (
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX job_deps_parent ON job_deps (parent) WHERE NOT done;
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    cron TEXT,
    every REAL,
    tz TEXT,
    job TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    last_tick INTEGER
)
"""
# -- scale (issue 10): `status` and `list` in constant time at a million jobs --------------------
# job_counts holds, per (queue, state, held by --after), how many jobs and their attempts: what
# `status`, `queues` and `list`'s "N more" read instead of counting the table (COUNT over 1M rows
# took 0.2-4 s). Triggers keep it exact through every UPDATE and DELETE, whoever makes it (claim,
# apply, cascades, delete, purge): SQLite serialises writers already, so one row per key costs a
# write and no waiting (+18 us of CPU per claim and completion together). Inserts are tallied by
# _insert, once per batch and queue: a row trigger, even an empty one, doubled the CPU of a bulk
# insert (15 -> 33 us a row). jobs_state gains created_at: `list --state S` walks it newest first
# instead of sorting every job in S (3.4 s at 1M), at the same number of indexes.
RECOUNT = ("DELETE FROM job_counts;"
           "INSERT INTO job_counts (queue, state, held, jobs, attempts)"
           " SELECT queue, state, waiting > 0, count(*), COALESCE(sum(attempts), 0) FROM jobs GROUP BY 1, 2, 3")
_COUNTS = """
CREATE TABLE job_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    held INTEGER NOT NULL,
    jobs INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (queue, state, held)
) WITHOUT ROWID;
CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET jobs = jobs - 1, attempts = attempts - old.attempts
        WHERE queue = old.queue AND state = old.state AND held = (old.waiting > 0);
END;
CREATE TRIGGER job_counts_update AFTER UPDATE OF state, queue, waiting, attempts ON jobs
WHEN old.state IS NOT new.state OR old.queue IS NOT new.queue OR (old.waiting > 0) IS NOT (new.waiting > 0)
    OR old.attempts IS NOT new.attempts BEGIN
    UPDATE job_counts SET jobs = jobs - 1, attempts = attempts - old.attempts
        WHERE queue = old.queue AND state = old.state AND held = (old.waiting > 0);
    INSERT INTO job_counts (queue, state, held, jobs, attempts) VALUES (new.queue, new.state, new.waiting > 0, 1,
        new.attempts) ON CONFLICT (queue, state, held) DO UPDATE SET jobs = jobs + 1, attempts = attempts + excluded.attempts;
END;
DROP INDEX IF EXISTS jobs_state;
CREATE INDEX jobs_state ON jobs (state, created_at, id);
""" + RECOUNT
# -- history (issue 20): every attempt of a job, kept across restart and dlq retry -----------------
# last_attempt numbers attempts for good (a claim adds one, nothing takes it back), host is where
# the claiming worker runs. A trigger records each attempt as its job leaves processing, in the
# transaction of that change whichever statement makes it (apply, a worker's batch): +1 INSERT a
# job, no statement of the SQL layer's own. Jobs that ran before keep their last attempt.
_HISTORY = """
ALTER TABLE jobs ADD COLUMN last_attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN host TEXT;
UPDATE jobs SET last_attempt = attempts WHERE attempts > 0;
CREATE TABLE attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER NOT NULL,
    duration REAL,
    exit_code INTEGER,
    error TEXT,
    worker_id TEXT,
    host TEXT,
    log_path TEXT,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
INSERT INTO attempts (job_id, attempt, finished_at, duration, exit_code, error, worker_id, log_path)
    SELECT id, attempts, updated_at, last_duration, last_exit_code, last_error, worker_id, log_path FROM jobs
    WHERE attempts > 0 AND state <> 'processing';
CREATE TRIGGER attempts_ended AFTER UPDATE OF state ON jobs
WHEN old.state = 'processing' AND new.state <> 'processing' BEGIN
    INSERT OR REPLACE INTO attempts (job_id, attempt, started_at, finished_at, duration, exit_code, error,
        worker_id, host, log_path)
    VALUES (new.id, new.last_attempt, old.updated_at, new.updated_at, new.last_duration, new.last_exit_code,
        new.last_error, old.worker_id, old.host, new.log_path);
END;
CREATE TRIGGER attempts_deleted AFTER DELETE ON jobs BEGIN
    DELETE FROM attempts WHERE job_id = old.id;
END
"""
# -- accounting: what each attempt used (CPU seconds, peak resident bytes), as its executor measured
# it, on the job (its last attempt, for `list`) and in its history. The trigger is made again to
# copy them; attempts_finished is what /metrics reads the attempts finished since its last scrape by.
_ACCOUNTING = """
ALTER TABLE jobs ADD COLUMN last_cpu_seconds REAL;
ALTER TABLE jobs ADD COLUMN last_max_rss_bytes INTEGER;
ALTER TABLE attempts ADD COLUMN cpu_seconds REAL;
ALTER TABLE attempts ADD COLUMN max_rss_bytes INTEGER;
CREATE INDEX attempts_finished ON attempts (finished_at);
DROP TRIGGER attempts_ended;
CREATE TRIGGER attempts_ended AFTER UPDATE OF state ON jobs
WHEN old.state = 'processing' AND new.state <> 'processing' BEGIN
    INSERT OR REPLACE INTO attempts (job_id, attempt, started_at, finished_at, duration, exit_code, error,
        worker_id, host, log_path, cpu_seconds, max_rss_bytes)
    VALUES (new.id, new.last_attempt, old.updated_at, new.updated_at, new.last_duration, new.last_exit_code,
        new.last_error, old.worker_id, old.host, new.log_path, new.last_cpu_seconds, new.last_max_rss_bytes);
END
"""
# -- output: every attempt's output, kept in the database in chunks (queuectl_core.storage.sql.output),
# deleted with its job.
_OUTPUT = """
CREATE TABLE job_output (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
) WITHOUT ROWID;
CREATE TRIGGER job_output_deleted AFTER DELETE ON jobs BEGIN
    DELETE FROM job_output WHERE job_id = old.id;
END
"""

# Notifications: the outbox workers deliver from (at least once, each row under a lease), and
# every delivery try counted per notifier and outcome for /metrics (queuectl_core.storage.sql.outbox).
_OUTBOX = """
CREATE TABLE outbox (
    notifier TEXT NOT NULL,
    id TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    token TEXT,
    settled_at INTEGER,
    outcome TEXT,
    last_error TEXT,
    PRIMARY KEY (notifier, id)
);
CREATE INDEX outbox_due ON outbox (due_at) WHERE settled_at IS NULL;
CREATE INDEX outbox_settled ON outbox (settled_at) WHERE settled_at IS NOT NULL;
CREATE TABLE notification_counts (
    notifier TEXT NOT NULL,
    outcome TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (notifier, outcome)
);
"""

# -- needs: a job's needs ("gpu=1"), the units of each need class, pools, what each worker has.
# The ready index leaves out jobs with needs; those have their own, by class, so a class no
# worker can serve is one row of need_units to the claim, not a walk over its jobs.
_NEEDS = """
ALTER TABLE jobs ADD COLUMN needs TEXT;
CREATE TABLE need_units (needs TEXT NOT NULL, name TEXT NOT NULL, units INTEGER NOT NULL, PRIMARY KEY (needs, name));
CREATE TABLE resource_pools (name TEXT PRIMARY KEY, capacity INTEGER NOT NULL);
CREATE TABLE worker_resources (hostname TEXT NOT NULL, worker_id TEXT NOT NULL, name TEXT NOT NULL,
    units INTEGER NOT NULL, spec TEXT NOT NULL, PRIMARY KEY (hostname, worker_id, name));
DROP INDEX jobs_ready;
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('pending', 'failed') AND waiting = 0 AND needs IS NULL;
CREATE INDEX jobs_ready_needs ON jobs (queue, needs, priority DESC, run_at, id)
    WHERE state IN ('pending', 'failed') AND waiting = 0 AND needs IS NOT NULL;
CREATE INDEX jobs_running_needs ON jobs (needs) WHERE state = 'processing' AND needs IS NOT NULL;
"""
_TALLY_INSERTED = ("INSERT INTO job_counts (queue, state, held, jobs, attempts) VALUES (?, 'pending', 0, ?, 0)"
                   " ON CONFLICT (queue, state, held) DO UPDATE SET jobs = jobs + excluded.jobs")
# Versioned: never edit a released one, add the next.
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_V1,
    "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC, id DESC)",
    _SCHEDULING,
    # Control and visibility: where a job runs, its env and tags, its last attempt's duration,
    # `worker stop --now`, and the finished-jobs index retention purges by.
    "ALTER TABLE jobs ADD COLUMN cwd TEXT;"
    "ALTER TABLE jobs ADD COLUMN env TEXT;"
    "ALTER TABLE jobs ADD COLUMN tags TEXT;"
    "ALTER TABLE jobs ADD COLUMN last_duration REAL;"
    "ALTER TABLE workers ADD COLUMN stop_now INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, updated_at)"
    " WHERE state IN ('completed', 'dead', 'cancelled')",
    _COUNTS,
    _HISTORY,
    _ACCOUNTING,
    _OUTPUT,
    # -- limits: a job's own memory (bytes) and CPU time (seconds), and each queue's defaults --
    "ALTER TABLE jobs ADD COLUMN memory INTEGER;"
    "ALTER TABLE jobs ADD COLUMN cpu_time REAL;"
    "ALTER TABLE queues ADD COLUMN memory INTEGER;"
    "ALTER TABLE queues ADD COLUMN cpu_time REAL",
    _OUTBOX,
    _NEEDS,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """A migration's statements, one by one (executescript would commit the open transaction); a
    trigger's body keeps its own semicolons."""
    import sqlite3

    out, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending.strip())
    return out


_INSERT_WIDTH = 18  # values bound per job by _insert
_insert_sql_cache: dict[tuple[int, tuple[int, ...]], str] = {}


def _insert_sql(rows: int, varying: tuple[int, ...]) -> str:
    """INSERT of ``rows`` jobs. Of the 18 values a job binds (the rest are literals), those the
    batch shares (``enqueue --file``: usually all but the id and the command) are bound once, as
    ?1..?k, and each row refers to them; only the ``varying`` ones (indexes into the 18) are bound
    per row. Cached by (rows, varying), so full batches of one shape reuse one prepared statement."""
    key = (rows, varying)
    sql = _insert_sql_cache.get(key)
    if sql is None:
        shared = [i for i in range(_INSERT_WIDTH) if i not in varying]
        ref = {i: f"?{n}" for n, i in enumerate(shared, 1)}
        base, width = len(shared), len(varying)
        values = []
        for r in range(rows):
            ref.update({i: f"?{base + r * width + v + 1}" for v, i in enumerate(varying)})
            a = [ref[i] for i in range(_INSERT_WIDTH)]
            values.append(f"({a[0]}, {a[1]}, 'pending', 0, {a[2]}, {a[3]}, {a[4]}, {a[5]}, {a[6]}, {a[7]}, 0, {a[8]},"
                          f" 0, {', '.join(a[9:])})")
        sql = _insert_sql_cache[key] = (
            "INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
            " run_at, timeout, cancel_requested, queue, waiting, unique_key, retry_on, no_retry_on, cwd, env, tags,"
            " memory, cpu_time, needs)"
            " VALUES " + ", ".join(values))
    return sql


(_ID, _COMMAND, _MAX_RETRIES, _PRIORITY, _RUN_AT, _DELAY, _TIMEOUT, _QUEUE, _UNIQUE_KEY, _RETRY_ON, _NO_RETRY_ON,
 _CWD, _ENV, _TAGS, _MEMORY, _CPU_TIME, _JOB_NEEDS) = map(attrgetter, (
    "id", "command", "max_retries", "priority", "run_at", "delay", "timeout", "queue", "unique_key", "retry_on",
    "no_retry_on", "cwd", "env", "tags", "memory", "cpu_time", "needs"))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _is_busy(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _missing(path: str) -> bool:
    """Whether nothing is at ``path``. One that cannot be looked at (a directory we may not
    search) is not missing: opening it says why, rather than a queue that may hold jobs reading empty."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _discard(temp: str, made: Sequence[str]) -> None:
    """Remove a first write's private file (and what SQLite kept beside it), then the directories
    made for it, innermost first, each only if empty: another process may be using it by now."""
    for p in (temp, f"{temp}-wal", f"{temp}-shm", f"{temp}-journal", f"{temp}.link"):
        try:
            os.unlink(p)
        except OSError:
            pass
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _can_link(temp: str) -> bool:
    """Whether this file system has hard links (FAT and some network ones have none)."""
    try:
        os.link(temp, f"{temp}.link")
    except OSError:
        return False
    os.unlink(f"{temp}.link")
    return True


def _private(path: str) -> None:
    """The database holds every job's command and output: readable by its owner only, whatever
    the umask, and tightened if an older version left it wider (as ssh does for its files)."""
    for p in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)
        except OSError:
            pass


def _dialect() -> Any:
    from queuectl_core.jobs.timeutil import from_ms, to_ms
    from queuectl_core.storage.sql import Dialect

    # Times are integer milliseconds since the epoch, from this host's clock, bound as :now.
    return Dialect(paramstyle="named", now=":now", after=lambda p: f"(:now + CAST(ROUND(:{p} * 1000) AS INTEGER))",
                   to_db=to_ms, from_db=from_ms, clock_param=_now_ms,
                   epoch_minute=lambda col: f"({col} / 60000)",  # epoch ms: integer division
                   ready_index="INDEXED BY jobs_ready", due_index="INDEXED BY jobs_due")


class _Tx:
    __slots__ = ("conn", "hostname", "woken")
    pipelined = False  # SQLite runs in this process: nothing to gain by sending statements together

    def __init__(self, conn: Any, hostname: str) -> None:
        self.conn = conn
        self.hostname = hostname
        self.woken: list[str] | None = None  # the wake-up addresses to nudge once this commits

    def rows(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]:
        return self.conn.execute(sql, params).fetchall()

    def later(self, sql: str, params: dict[str, Any]) -> Callable[[], list[Sequence[Any]]]:
        rows = self.rows(sql, params)
        return lambda: rows

    def wake(self) -> None:
        # Read under the write lock this transaction holds: no worker can register in between, and
        # after the commit only the datagrams remain to send (a job's pick-up waits on them).
        if self.woken is None:
            import sqlite3

            try:
                self.woken = [a for (a,) in self.conn.execute(
                    "SELECT wake_addr FROM workers WHERE hostname = ? AND wake_addr IS NOT NULL", (self.hostname,))]
            except sqlite3.Error:  # best effort: idle workers poll anyway
                self.woken = []

    def many(self, sql: str, params: Sequence[dict[str, Any]]) -> None:
        self.conn.executemany(sql, params)


class SQLiteStorage(SQLStore):
    """The Storage protocol on one SQLite file.

    ``lazy``: a file that does not exist yet is created by the first write that changes something,
    not on open. The plugin opens it so for every command: one that only reads, is refused, or
    changes nothing leaves nothing on disk. Without it (a program opening a file of its own) the
    file is created now, as before.
    """

    _once = False  # the write under way cannot run twice: enqueue_stream's insert reads its input as it goes

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "NORMAL", busy_timeout_ms: int = 60000,
                 *, lazy: bool = False) -> None:
        import sqlite3

        from queuectl_core.errors import StorageError

        self._sqlite3 = sqlite3
        self._StorageError = StorageError
        self.dialect = _dialect()
        self.path = str(Path(path))  # as messages name it: a trailing / dropped
        self.hostname = socket.gethostname()
        self._wake_sock: socket.socket | None = None
        self._send_sock: socket.socket | None = None  # kept: one socket for every wake-up sent
        self._busy_timeout = busy_timeout_ms / 1000
        self._synchronous = synchronous
        # A missing file, opened lazily, reads as an in-memory database with the current schema and
        # no rows: every read runs the same SQL as on the file, and finds what a new queue holds.
        # Nothing is written to it: the first write creates the file (_first_write), and the first
        # read after another process has created it opens it (_tx).
        self._unborn = lazy and _missing(self.path)
        if self._unborn:
            self._check_creatable()
            self.conn = self._connect(":memory:")
        else:
            self._open_file()

    def _cannot_open(self, exc: BaseException) -> Exception:
        return self._StorageError(f"cannot open SQLite database {self.path}: {getattr(exc, 'strerror', None) or exc}")

    def _check_creatable(self) -> None:
        """Refuse now, as creating the file on open did, a file no write could create: the nearest
        existing directory above it must let this process create in it (write and search). So
        `worker start` fails before it forks instead of retrying "storage unavailable" for ever,
        and `status` says why. (Root passes permission checks; a read-only file system does not.)"""
        d = missing_dirs(os.path.dirname(self.path) or ".")[0]
        if not os.access(d, os.W_OK | os.X_OK):
            raise self._StorageError(f"cannot open SQLite database {self.path}: cannot create it, {d} is not writable")

    def _connect(self, file: str) -> Any:
        """A connection to ``file`` in WAL mode, migrated. Several processes may open one file at
        once: each step is safe to repeat, migrations run once."""
        # isolation_level=None: we open every transaction ourselves (BEGIN IMMEDIATE for writes);
        # Python's default would open DEFERRED ones that fail with SQLITE_BUSY on upgrade.
        # timeout=0: SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries, which on a
        # lock held for ~100 µs caps two busy workers below one; _retry polls far finer instead.
        conn = self._sqlite3.connect(file, isolation_level=None, timeout=0, check_same_thread=False)
        try:
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._migrate(conn)
        except BaseException:
            conn.close()  # closed now, not whenever the half-opened storage is collected
            raise
        return conn

    def _open_file(self) -> None:
        """Open the file, creating it (and its directories, 0700) if missing, 0600."""
        try:
            make_private_dirs(os.path.dirname(self.path) or ".")
            # SQLite gives -wal, -shm and -journal the database file's own mode: creating it 0600
            # (whatever the umask) keeps all of them private.
            if not os.path.exists(self.path):
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            _private(self.path)
            conn = self._connect(self.path)
        except (self._sqlite3.Error, OSError) as exc:
            raise self._cannot_open(exc) from None
        if self._unborn:
            self.conn.close()  # the empty view: reads see the file from now on
        self.conn, self._unborn = conn, False

    def _first_write(self, fn: Callable[[Any], T]) -> tuple[bool, Any]:
        """The first write to a file not created yet: (True, its result), or (False, None) when it
        is to run on the file the usual way (another process created it meanwhile).

        It runs in a private file beside the database's, created and migrated as that would be. If
        it raises (a refusal) or commits no change (`worker stop`, `purge` on an empty queue), that
        file and the directories made for it are removed: nothing is left. Otherwise the file is
        published under the database's name in one step, a hard link, which fails if the name
        exists: another process created the database at the same moment, and its file is never
        touched; the write runs again there, except enqueue_stream's, which has read its input.
        (Creating the database first and removing it on a refusal could remove a file another
        process has just written to: SQLite has no "create only if absent" of its own.)"""
        temp = f"{self.path}.{os.getpid()}-{os.urandom(4).hex()}.new"
        made: list[str] = []
        conn = None
        try:
            try:
                for attempt in range(5):
                    try:
                        made += make_private_dirs(os.path.dirname(temp))
                        os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                        break
                    except FileNotFoundError:  # another process's _discard removed a directory we found
                        if attempt == 4:
                            raise
                if not _can_link(temp):
                    return False, None  # no hard links on this file system: the file is created first, as before
                conn = self._connect(temp)
            except (self._sqlite3.Error, OSError) as exc:
                raise self._cannot_open(exc) from None
            before = conn.total_changes  # rows inserted, updated or deleted, triggers' too
            result = self._run(conn, fn)
            changed = conn.total_changes != before
            conn.close()  # the only connection: SQLite checkpoints, and removes -wal and -shm
            if changed:
                try:
                    os.link(temp, self.path)
                except FileExistsError:
                    if self._once:
                        raise self._StorageError(
                            f"SQLite {self.path}: another process created the queue at the same moment; nothing was"
                            " enqueued: run the command again") from None
                    return False, None
                except OSError as exc:
                    raise self._cannot_open(exc) from None
            return True, result
        finally:
            if conn is not None:
                conn.close()
            _discard(temp, made)

    # -- plumbing -------------------------------------------------------------------------
    def _retry(self, fn: Callable[[], T]) -> T:
        """Run fn, retrying SQLITE_BUSY for up to busy_timeout_ms, first every ~50 µs, backing off
        to 20 ms. Past that a StorageError, which a worker waits out: busy is never a job failure."""
        delay = 0.00005
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return fn()
            except self._sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise self._StorageError(f"SQLite {self.path}: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 1.5, 0.02)

    def _tx(self, fn: Callable[[Any], T], write: bool = True, pipelined: bool = False) -> T:
        """One transaction; a write takes the lock up front (BEGIN IMMEDIATE). Until the file
        exists a read runs on the empty view, and a write is the first (_first_write)."""
        if self._unborn and (write or not _missing(self.path)):
            if write and _missing(self.path):
                done, result = self._first_write(fn)
                if done:
                    return result
            self._open_file()
        return self._run(self.conn, fn, write)

    def _run(self, conn: Any, fn: Callable[[Any], T], write: bool = True) -> T:
        tx = _Tx(conn, self.hostname)

        def attempt() -> T:
            if not write:
                return fn(tx)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(tx)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        try:
            result = self._retry(attempt)
        except self._sqlite3.IntegrityError as exc:
            if "unique_key" in str(exc):  # a restart/replay of a job whose key another job now holds
                from queuectl_core.errors import UniqueKeyError

                raise UniqueKeyError(None, None) from None
            raise self._StorageError(f"SQLite {self.path}: {exc}") from None
        except (self._sqlite3.Error, OverflowError) as exc:  # OverflowError: an int beyond 64 bits
            raise self._StorageError(f"SQLite {self.path}: {exc}") from None
        if tx.woken:
            self._wake_workers(tx.woken)
        return result

    def _migrate(self, conn: Any) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return

        def migrate(tx: _Tx) -> None:
            done = tx.conn.execute("PRAGMA user_version").fetchone()[0]  # another process may be first
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > done:
                    for statement in _statements(script):
                        tx.conn.execute(statement)
            tx.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self._run(conn, migrate)

    # -- jobs -------------------------------------------------------------------------------
    def enqueue_stream(self, batches: Iterable[Sequence[NewJob]]) -> Iterator[list[Job]]:
        self._once = True  # see _first_write
        try:
            return super().enqueue_stream(batches)
        finally:
            self._once = False
    def now(self) -> datetime:
        from queuectl_core.jobs.timeutil import from_ms

        return from_ms(_now_ms())

    def _insert(self, tx: Any, jobs: Sequence[NewJob]) -> list[Sequence[Any]]:
        # Multi-row INSERT ... VALUES, only the columns a job may set bound (the rest are literals):
        # Python's executemany costs ~10 µs a row here, binding ~2,500 rows a statement ~3 µs
        # (100,000 jobs: 2.3 s -> 0.9 s), and binding what the batch shares once ~1.5 µs less.
        from itertools import chain, repeat

        from queuectl_core.errors import DuplicateJobError, UniqueKeyError
        from queuectl_core.jobs.timeutil import to_ms
        from queuectl_core.storage.sql import codes_out

        # Column by column (a C-level pass each), each derived column computed per job only if
        # some job of the batch has a value there.
        if not jobs:
            return []
        now = _now_ms()
        n = len(jobs)
        ids, commands = list(map(_ID, jobs)), list(map(_COMMAND, jobs))
        nows = [now] * n
        run_at, delay = list(map(_RUN_AT, jobs)), list(map(_DELAY, jobs))
        if run_at.count(None) != n or any(delay):
            run_at = [to_ms(r) if r is not None else (now + round(d * 1000) if d else now) for r, d in zip(run_at, delay)]
        else:
            run_at = nows
        retry_on, no_retry_on = list(map(_RETRY_ON, jobs)), list(map(_NO_RETRY_ON, jobs))
        if retry_on.count(None) != n:
            retry_on = [codes_out(c) if c is not None else None for c in retry_on]
        if no_retry_on.count(None) != n:
            no_retry_on = [codes_out(c) if c is not None else None for c in no_retry_on]
        env, tags = list(map(_ENV, jobs)), list(map(_TAGS, jobs))
        if any(env):
            import json  # only then: a batch without env never needs json (~1 ms to import)

            env = [json.dumps(e, sort_keys=True) if e else None for e in env]
        else:
            env = [None] * n
        tags = ["," + ",".join(t) + "," if t else None for t in tags] if any(tags) else [None] * n
        # -- limits and needs: written by the insert itself, never by an UPDATE after it --
        memory, cpu_time, needs = list(map(_MEMORY, jobs)), list(map(_CPU_TIME, jobs)), list(map(_JOB_NEEDS, jobs))
        if cpu_time.count(None) != n:
            cpu_time = [float(c) if c is not None else None for c in cpu_time]
        if any(needs):
            from queuectl_core.jobs.needs import needs_text

            needs = [needs_text(x) if x else None for x in needs]
        else:
            needs = [None] * n
        max_retries, priority, timeout = list(map(_MAX_RETRIES, jobs)), list(map(_PRIORITY, jobs)), list(map(_TIMEOUT, jobs))
        queue, unique_key, cwd = list(map(_QUEUE, jobs)), list(map(_UNIQUE_KEY, jobs)), list(map(_CWD, jobs))
        none, zero = repeat(None), repeat(0)
        rows: list[Sequence[Any]] = list(zip(ids, commands, repeat("pending"), zero, max_retries, priority, nows, nows,
                                             run_at, timeout, none, none, none, none, none, none, none, zero, queue,
                                             zero, unique_key, retry_on, no_retry_on, cwd, env, tags, none, zero,
                                             none, none, none, memory, cpu_time, needs))
        # Binding a value costs more than SQLite storing it: a column every job of the batch
        # shares is bound once (100,000 jobs of one shape: 1.5 million values bound -> 200,000).
        # Equal values of a column are the same stored value (INTEGER/REAL affinity: 1 and 1.0).
        columns = [ids, commands, max_retries, priority, nows, nows, run_at, timeout, queue, unique_key, retry_on,
                   no_retry_on, cwd, env, tags, memory, cpu_time, needs]
        varying = tuple(i for i, col in enumerate(columns) if col.count(col[0]) != n)
        shared = [columns[i][0] for i in range(_INSERT_WIDTH) if i not in varying]
        # SQLite before 3.32 allows 999 bound variables a statement, later ones 32,766.
        limit = 32766 if self._sqlite3.sqlite_version_info >= (3, 32) else 999
        per = max(1, min(2000, (limit - len(shared)) // max(1, len(varying))))
        try:
            for start in range(0, n, per):
                m = min(per, n - start)
                values = list(chain.from_iterable(zip(*[columns[i][start:start + m] for i in varying])))
                tx.conn.execute(_insert_sql(m, varying), shared + values)
        except self._sqlite3.IntegrityError as exc:
            if "unique_key" in str(exc):
                raise UniqueKeyError(next(j.unique_key for j in jobs if j.unique_key), None) from None
            ids = [j.id for j in jobs]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                found = tx.conn.execute(f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
                if found:
                    raise DuplicateJobError(found[0][0]) from None
            raise
        # -- scale (issue 10): the tallies, once per queue of the batch (see _COUNTS) --
        per_queue = {name: queue.count(name) for name in dict.fromkeys(queue)}
        tx.conn.executemany(_TALLY_INSERTED, per_queue.items())
        return rows

    # -- workers ----------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        from queuectl_core.jobs.timeutil import to_ms

        addr: str | None = None
        if sys.platform.startswith("linux") and self._wake_sock is None:
            # An abstract socket: no path-length limit, nothing left on disk when the worker dies.
            # (Other systems have none; their workers rely on polling alone, which is correct.)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            addr = f"\0queuectl-{os.getpid()}-{os.urandom(6).hex()}"
            sock.bind(addr)
            sock.setblocking(False)
            self._wake_sock = sock
        self.hostname = info.hostname
        now = _now_ms()

        def register(tx: _Tx) -> None:
            tx.conn.execute("DELETE FROM workers WHERE last_seen < ?", (now - 86_400_000,))
            tx.conn.execute(
                "INSERT OR REPLACE INTO workers (id, hostname, pid, started_at, last_seen, wake_addr)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, info.hostname, info.pid, to_ms(info.started_at), now, addr[1:] if addr else None))

        self._tx(register)

    def unregister_worker(self, worker_id: str) -> None:
        super().unregister_worker(worker_id)
        if self._wake_sock is not None:
            self._wake_sock.close()
            self._wake_sock = None

    def _wake_workers(self, addrs: list[str]) -> None:
        """Nudge idle workers on this host (one datagram each); polling covers everything else."""
        sock = self._send_sock
        if sock is None:
            sock = self._send_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
        for addr in addrs:
            try:
                sock.sendto(b"!", "\0" + addr)
            except OSError:
                pass  # a dead worker's address, or its buffer is already full of wake-ups

    def wait_for_work(self, timeout: float, wakeup_fd: int | None = None) -> None:
        import select

        fds: list[Any] = [fd for fd in (self._wake_sock, wakeup_fd) if fd is not None]
        if not fds:
            time.sleep(max(timeout, 0))
            return
        ready, _, _ = select.select(fds, [], [], max(timeout, 0))
        if self._wake_sock is not None and self._wake_sock in ready:
            try:
                while self._wake_sock.recv(64):
                    pass
            except OSError:
                pass

    def close(self) -> None:
        for sock in (self._wake_sock, self._send_sock):
            if sock is not None:
                sock.close()
        self._wake_sock = self._send_sock = None
        self.conn.close()


def _open(config: Config) -> SQLiteStorage:
    # sqlite.path's check_path already refused a `~user` this machine does not know.
    storage = SQLiteStorage(Path(config["sqlite.path"]).expanduser(), config["sqlite.synchronous"],
                            config["sqlite.busy_timeout_ms"], lazy=True)
    # An enqueue wakes the idle workers registered under this host name (config worker.host).
    storage.hostname = config["worker.host"]
    return storage


@hookimpl
def queuectl_register_storages(register: Callable[[str, Any], None]) -> None:
    register("sqlite", _open)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting("sqlite.path", str, lambda home: str(home / "queue.db"),
                     "The SQLite database file (default: queue.db in QUEUECTL_HOME).", validate=check_path))
    register(Setting("sqlite.synchronous", str, "NORMAL",
                     "SQLite's synchronous level: NORMAL survives crashes, FULL also survives power loss.",
                     choices=("NORMAL", "FULL")))
    register(Setting("sqlite.busy_timeout_ms", int, 60000,
                     "How long a statement retries a locked database before failing (a worker then waits on).",
                     minimum=1))
