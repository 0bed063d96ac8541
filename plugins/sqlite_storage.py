"""SQLite storage: the embedded default. One file, WAL mode, every write under BEGIN IMMEDIATE."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from queuectl_core import hookimpl
from queuectl_core.settings import Setting

if TYPE_CHECKING:
    import socket

    from queuectl_core.models import AttemptResult, Job, JobState, NewJob, WorkerInfo
    from queuectl_core.settings import Config

T = TypeVar("T")

SCHEMA_VERSION = 1
# A worker that has not been seen for this long is not listed as live.
WORKER_LIVE_SECONDS = 15.0

_SCHEMA = """
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
);
"""

_COLS = ("id, command, state, attempts, max_retries, priority, created_at, updated_at, run_at, timeout, "
         "last_exit_code, last_error, log_path, output_tail, worker_id, lease_token, lease_expires_at")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _is_busy(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class SQLiteStorage:
    """The Storage protocol on one SQLite file. Times are integer milliseconds since the epoch,
    so every comparison is numeric and one format is shown everywhere."""

    def __init__(self, path: Path, synchronous: str = "NORMAL", busy_timeout_ms: int = 60000) -> None:
        import sqlite3

        from queuectl_core.errors import StorageError
        from queuectl_core.models import JobState

        self._sqlite3 = sqlite3
        self._StorageError = StorageError
        self._JobState = JobState
        self.path = path
        self.hostname = os.uname().nodename  # socket.gethostname(), without importing socket at start-up
        self._wake_sock: socket.socket | None = None
        self._busy_timeout = busy_timeout_ms / 1000
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open every transaction ourselves (BEGIN IMMEDIATE for writes);
            # Python's default would open DEFERRED ones that fail with SQLITE_BUSY on upgrade.
            # timeout=0: SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries, which on a
            # lock held for ~100 µs caps two busy workers below one; _retry polls far finer instead.
            self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=0, check_same_thread=False)
            self._retry(lambda: self.conn.execute("PRAGMA journal_mode = WAL").fetchone())
            self.conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open SQLite database {path}: {getattr(exc, 'strerror', None) or exc}") from None

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

    def _write(self, fn: Callable[[Any], T]) -> T:
        """One write transaction, BEGIN IMMEDIATE so the write lock is taken up front."""

        def attempt() -> T:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        try:
            return self._retry(attempt)
        except (self._sqlite3.Error, OverflowError) as exc:  # OverflowError: an int beyond 64 bits
            if isinstance(exc, self._sqlite3.IntegrityError):
                raise
            raise self._StorageError(f"SQLite {self.path}: {exc}") from None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._retry(lambda: self.conn.execute(sql, params).fetchall())
        except self._sqlite3.Error as exc:
            raise self._StorageError(f"SQLite {self.path}: {exc}") from None

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return

        def migrate(conn: Any) -> None:
            if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # another process got here first
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self._write(migrate)

    def _job(self, row: Sequence[Any]) -> Job:
        from queuectl_core.models import Job
        from queuectl_core.timeutil import from_ms

        return Job(
            id=row[0], command=row[1], state=self._JobState(row[2]), attempts=row[3], max_retries=row[4],
            priority=row[5], created_at=from_ms(row[6]), updated_at=from_ms(row[7]), run_at=from_ms(row[8]),
            timeout=row[9], last_exit_code=row[10], last_error=row[11], log_path=row[12], output_tail=row[13],
            worker_id=row[14], lease_token=row[15],
            lease_expires_at=from_ms(row[16]) if row[16] is not None else None,
        )

    def _one(self, rows: list[Any]) -> Job | None:
        return self._job(rows[0]) if rows else None

    # -- jobs -------------------------------------------------------------------------------
    def now(self) -> datetime:
        from queuectl_core.timeutil import from_ms

        return from_ms(_now_ms())

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        from queuectl_core.errors import DuplicateJobError
        from queuectl_core.timeutil import to_ms

        now = _now_ms()
        rows = [
            (j.id, j.command, j.max_retries, j.priority, now, now,
             to_ms(j.run_at) if j.run_at is not None else now + round((j.delay or 0) * 1000), j.timeout)
            for j in jobs
        ]
        try:
            self._write(lambda conn: conn.executemany(
                "INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                " run_at, timeout) VALUES (?, ?, 'pending', 0, ?, ?, ?, ?, ?, ?)", rows))
        except self._sqlite3.IntegrityError:
            ids = [j.id for j in jobs]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                found = self._read(f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                if found:
                    raise DuplicateJobError(found[0][0]) from None
            # Nothing existed before: the batch itself repeats an id (the rollback undid its first copy).
            seen: set[str] = set()
            for job_id in ids:
                if job_id in seen:
                    raise DuplicateJobError(job_id) from None
                seen.add(job_id)
            raise self._StorageError(f"SQLite {self.path}: cannot insert jobs") from None
        self._wake_workers()
        from queuectl_core.models import Job, JobState
        from queuectl_core.timeutil import from_ms

        created = from_ms(now)  # shared: most jobs run "now", and datetimes are immutable
        return [Job(id=r[0], command=r[1], state=JobState.PENDING, attempts=0, max_retries=r[2], priority=r[3],
                    created_at=created, updated_at=created, run_at=created if r[6] == now else from_ms(r[6]),
                    timeout=r[7])
                for r in rows]

    def get(self, job_id: str) -> Job | None:
        return self._one(self._read(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)))

    def list_jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]:
        sql = f"SELECT {_COLS} FROM jobs"
        params: list[Any] = []
        if state is not None:
            sql += " WHERE state = ?"
            params.append(str(state))
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._job(r) for r in self._read(sql, params)]

    def counts(self) -> dict[JobState, int]:
        counts = {s: 0 for s in self._JobState}
        for state, n in self._read("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[self._JobState(state)] = n
        return counts

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        token = os.urandom(8).hex()

        def claim(conn: Any) -> Job | None:
            now = _now_ms()
            rows = conn.execute(
                f"UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = ?, lease_token = ?,"
                f" lease_expires_at = ?, updated_at = ?"
                f" WHERE id = (SELECT id FROM jobs INDEXED BY jobs_ready"
                f" WHERE state IN ('pending', 'failed') AND run_at <= ?"
                f" ORDER BY priority DESC, run_at, id LIMIT 1)"
                f" RETURNING {_COLS}",
                (worker_id, token, now + round(lease_seconds * 1000), now, now),
            ).fetchall()
            return self._one(rows)

        return self._write(claim)

    def heartbeat(self, job_id: str, token: str, lease_seconds: float) -> bool:
        def beat(conn: Any) -> bool:
            now = _now_ms()
            cur = conn.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_token = ? AND state = 'processing'",
                (now + round(lease_seconds * 1000), job_id, token),
            )
            return cur.rowcount == 1

        return self._write(beat)

    def _finish(self, job_id: str, token: str, state: str, run_at_ms: Callable[[int], int] | None,
                result: AttemptResult) -> Job | None:
        def finish(conn: Any) -> Job | None:
            now = _now_ms()
            rows = conn.execute(
                f"UPDATE jobs SET state = ?, run_at = COALESCE(?, run_at), updated_at = ?, last_exit_code = ?,"
                f" last_error = ?, log_path = ?, output_tail = ?, lease_token = NULL, lease_expires_at = NULL"
                f" WHERE id = ? AND lease_token = ? AND state = 'processing' RETURNING {_COLS}",
                (state, run_at_ms(now) if run_at_ms else None, now, result.exit_code, result.error,
                 result.log_path, result.output_tail, job_id, token),
            ).fetchall()
            return self._one(rows)

        return self._write(finish)

    def complete(self, job_id: str, token: str, result: AttemptResult) -> Job | None:
        return self._finish(job_id, token, "completed", None, result)

    def fail(self, job_id: str, token: str, result: AttemptResult, retry_in: float | None) -> Job | None:
        if retry_in is None:
            return self._finish(job_id, token, "dead", None, result)
        return self._finish(job_id, token, "failed", lambda now: now + round(retry_in * 1000), result)

    def release(self, job_id: str, token: str) -> Job | None:
        def release(conn: Any) -> Job | None:
            now = _now_ms()
            rows = conn.execute(
                f"UPDATE jobs SET state = 'pending', attempts = max(attempts - 1, 0), run_at = ?, updated_at = ?,"
                f" worker_id = NULL, lease_token = NULL, lease_expires_at = NULL"
                f" WHERE id = ? AND lease_token = ? AND state = 'processing' RETURNING {_COLS}",
                (now, now, job_id, token),
            ).fetchall()
            return self._one(rows)

        job = self._write(release)
        if job is not None:
            self._wake_workers()
        return job

    def recover_expired(self) -> list[Job]:
        now = _now_ms()
        if not self._read("SELECT 1 FROM jobs WHERE state = 'processing' AND lease_expires_at < ? LIMIT 1", (now,)):
            return []  # the common case: a cheap read, no write lock

        def recover(conn: Any) -> list[Any]:
            now = _now_ms()
            reason = "worker lost: lease expired while the job was running"
            rows = conn.execute(
                f"UPDATE jobs SET state = CASE WHEN attempts > max_retries THEN 'dead' ELSE 'failed' END,"
                f" run_at = ?, updated_at = ?, last_error = ?, last_exit_code = NULL, lease_token = NULL,"
                f" lease_expires_at = NULL WHERE state = 'processing' AND lease_expires_at < ? RETURNING {_COLS}",
                (now, now, reason, now),
            ).fetchall()
            return rows

        jobs = [self._job(r) for r in self._write(recover)]
        if jobs:
            self._wake_workers()
        return jobs

    def retry_dead(self, job_id: str) -> Job:
        from queuectl_core.errors import JobNotFoundError, ValidationError

        def retry(conn: Any) -> Job:
            now = _now_ms()
            rows = conn.execute(
                f"UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?, worker_id = NULL"
                f" WHERE id = ? AND state = 'dead' RETURNING {_COLS}", (now, now, job_id)).fetchall()
            if rows:
                return self._job(rows[0])
            state = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if state is None:
                raise JobNotFoundError(job_id)
            raise ValidationError(f"job {job_id!r} is not in the DLQ (its state is {state[0]})")

        job = self._write(retry)
        self._wake_workers()
        return job

    def next_run_at(self) -> datetime | None:
        from queuectl_core.timeutil import from_ms

        row = self._read("SELECT min(run_at) FROM jobs INDEXED BY jobs_due WHERE state IN ('pending', 'failed')")
        return from_ms(row[0][0]) if row and row[0][0] is not None else None

    # -- workers ----------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        from queuectl_core.timeutil import to_ms

        addr: str | None = None
        if sys.platform.startswith("linux"):
            # An abstract socket: no path-length limit, nothing left on disk when the worker dies.
            # (Other systems have none; their workers rely on polling alone, which is correct.)
            import socket

            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            addr = f"\0queuectl-{os.getpid()}-{os.urandom(6).hex()}"
            sock.bind(addr)
            sock.setblocking(False)
            self._wake_sock = sock
        now = _now_ms()

        def register(conn: Any) -> None:
            conn.execute("DELETE FROM workers WHERE last_seen < ?", (now - 86_400_000,))
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, hostname, pid, started_at, last_seen, wake_addr)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, info.hostname, info.pid, to_ms(info.started_at), now, addr[1:] if addr else None),
            )

        self._write(register)

    def worker_seen(self, worker_id: str, current_job: str | None) -> bool:
        def seen(conn: Any) -> bool:
            row = conn.execute(
                "UPDATE workers SET last_seen = ?, current_job = ? WHERE id = ? RETURNING stop_requested",
                (_now_ms(), current_job, worker_id),
            ).fetchone()
            return bool(row and row[0])

        return self._write(seen)

    def unregister_worker(self, worker_id: str) -> None:
        self._write(lambda conn: conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,)))
        if self._wake_sock is not None:
            self._wake_sock.close()
            self._wake_sock = None

    def live_workers(self) -> list[WorkerInfo]:
        from queuectl_core.models import WorkerInfo
        from queuectl_core.timeutil import from_ms

        rows = self._read(
            "SELECT id, hostname, pid, started_at, last_seen, current_job FROM workers WHERE last_seen >= ? ORDER BY id",
            (_now_ms() - int(WORKER_LIVE_SECONDS * 1000),),
        )
        return [WorkerInfo(r[0], r[1], r[2], from_ms(r[3]), from_ms(r[4]), r[5]) for r in rows]

    def request_stop(self) -> int:
        cutoff = _now_ms() - int(WORKER_LIVE_SECONDS * 1000)
        rows = self._write(lambda conn: conn.execute(
            "UPDATE workers SET stop_requested = 1 WHERE last_seen >= ? RETURNING id", (cutoff,)).fetchall())
        self._wake_workers()
        return len(rows)

    def _wake_workers(self) -> None:
        """Nudge idle workers on this host (one datagram each); polling covers everything else."""
        try:
            rows = self.conn.execute(
                "SELECT wake_addr FROM workers WHERE hostname = ? AND wake_addr IS NOT NULL", (self.hostname,)
            ).fetchall()
        except self._sqlite3.Error:
            return
        if not rows:
            return
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for (addr,) in rows:
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
        if self._wake_sock is not None:
            self._wake_sock.close()
            self._wake_sock = None
        self.conn.close()


def _open(config: Config) -> SQLiteStorage:
    return SQLiteStorage(Path(config["sqlite.path"]).expanduser(), config["sqlite.synchronous"],
                         config["sqlite.busy_timeout_ms"])


@hookimpl
def queuectl_register_storages(register: Callable[[str, Any], None]) -> None:
    register("sqlite", _open)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting("sqlite.path", str, lambda home: str(home / "queue.db"),
                     "The SQLite database file (default: queue.db in QUEUECTL_HOME)."))
    register(Setting("sqlite.synchronous", str, "NORMAL",
                     "SQLite's synchronous level: NORMAL survives crashes, FULL also survives power loss.",
                     choices=("NORMAL", "FULL")))
    register(Setting("sqlite.busy_timeout_ms", int, 60000,
                     "How long a statement retries a locked database before failing (a worker then waits on).",
                     minimum=1))
