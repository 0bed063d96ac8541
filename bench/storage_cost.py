"""What one job costs the storage: ``claim`` then ``apply(complete)``, no process spawned.

Part of W3's floor (bench/drain_floor.py). It prints, per job:

- the wall time of the two calls in one thread, back to back, and the CPU time of this process
  (the storage plugin; for PostgreSQL also psycopg) and of the PostgreSQL server backend that
  served it (read from /proc, so the server must run on this machine);
- the pages SQLite writes to its WAL: with the two calls (two commits, as a worker without
  ``apply_and_claim`` does), with ``apply_and_claim`` (one commit, as queuectl's workers do), and
  how many of those each secondary index and the counts trigger add. A page is 4 KiB written at
  each commit, then again at the checkpoint: on a drain of tiny jobs this write volume is what the
  storage costs. The counts are exact, the same on every run;
- with ``--drain``, the rate at which 2 threads, each with its own SQLite connection (as two plain
  workers have), drain `sh -c true` jobs, as shipped and without those indexes and the trigger.

Those indexes and the trigger are what keep ``status``, ``list``, the DLQ, lease recovery,
retention, idle timers and queue limits fast at a million jobs (docs/operations.md, "A million
jobs"); the figures show their price, they do not propose dropping them.

    python bench/storage_cost.py [--jobs 3000] [--postgres DSN] [--drain]

Run it from a plain (not editable) install on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from drain_floor import drop, queuectl_parts  # beside this script in bench/

from queuectl_core.jobs import lifecycle
from queuectl_core.jobs.models import NewJob
from queuectl_core.jobs.records import AttemptResult
from queuectl_plugins.sqlite_storage import SQLiteStorage

RESULT = AttemptResult(exit_code=0)
SECONDARY = ("jobs_state", "jobs_finished", "jobs_created", "jobs_due", "jobs_lease", "jobs_running",
             "job_counts_update")


def _fill(storage: Any, jobs: int) -> None:
    storage.enqueue([NewJob(id=f"j{i:07d}", command="true", max_retries=0) for i in range(jobs)])


def _drain(storage: Any) -> int:
    done = 0
    while (job := storage.claim("w", 60.0)) is not None:
        storage.apply(job.id, job.lease_token, lifecycle.complete(RESULT))
        done += 1
    return done


def one_thread(storage: Any, jobs: int, backend_cpu: Any = None) -> str:
    _fill(storage, jobs)
    server0 = backend_cpu() if backend_cpu else 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = _drain(storage)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    line = f"{wall / done * 1e3:.3f} ms a job, this process's CPU {cpu / done * 1e3:.3f} ms"
    if backend_cpu:
        line += f", the server backend's CPU {(backend_cpu() - server0) / done * 1e3:.3f} ms"
    return line


def wal_pages(tmp: str, without: tuple[str, ...], together: bool, jobs: int = 1000) -> float:
    """WAL pages written a job while ``jobs`` jobs are claimed and completed, one after another."""
    storage = SQLiteStorage(Path(tempfile.mkdtemp(dir=tmp)) / "queue.db")
    drop(storage, without)
    storage.conn.execute("PRAGMA wal_autocheckpoint = 0")  # every page written stays in the WAL
    _fill(storage, jobs + 1)
    storage.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if together:
        claimed = storage.claim_many("w", 60.0, 1)
        for _ in range(jobs):
            job = claimed[0]
            _, claimed = storage.apply_and_claim([(job.id, job.lease_token, lifecycle.complete(RESULT))], "w", 60.0, 1)
    else:
        for _ in range(jobs):
            job = storage.claim("w", 60.0)
            storage.apply(job.id, job.lease_token, lifecycle.complete(RESULT))
    pages = storage.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    storage.close()
    return float(pages) / jobs


def _postgres(dsn: str) -> tuple[Any, Any]:
    from queuectl_plugins.postgres_storage.store import PostgresStorage

    storage = PostgresStorage(dsn, schema=f"queuectl_cost_{os.getpid()}")
    pid = storage._run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone()[0])
    tick = os.sysconf("SC_CLK_TCK")

    def backend_cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    return storage, backend_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--postgres", metavar="DSN", help="also measure PostgreSQL (a throw-away schema)")
    parser.add_argument("--drain", action="store_true", help="drain `sh -c true` with 2 SQLite connections,"
                        " with and without the secondary indexes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="queuectl-storage-cost-") as tmp:
        storage = SQLiteStorage(Path(tmp) / "queue.db")
        print(f"SQLite, claim + apply, one thread: {one_thread(storage, args.jobs)}", flush=True)
        storage.close()
        n = min(args.jobs, 1000)
        together = wal_pages(tmp, (), True, n)
        print(f"SQLite WAL pages written a job: {wal_pages(tmp, (), False, n):.1f} with claim + apply (two commits),"
              f" {together:.1f} with apply_and_claim (one commit), of which:")
        rest = together
        for name in SECONDARY:
            cost = together - wal_pages(tmp, (name,), True, n)
            rest -= cost
            print(f"  {name:20} {cost:4.1f}")
        print(f"  {'the rest':20} {rest:4.1f}  (the job's row, jobs_ready, the primary key)", flush=True)
    if args.postgres:
        storage, backend_cpu = _postgres(args.postgres)
        try:
            print(f"PostgreSQL, claim + apply, one thread: {one_thread(storage, args.jobs, backend_cpu)}", flush=True)
        finally:
            storage.drop_schema()
            storage.close()
    if args.drain:
        print(f"SQLite, `sh -c true` jobs drained by 2 threads each with its own connection, {args.jobs:,} jobs"
              " (median of 3):")
        with tempfile.TemporaryDirectory(prefix="queuectl-storage-cost-") as tmp:
            for without in ((), SECONDARY):
                rate = statistics.median(args.jobs / queuectl_parts(args.jobs, 2, tmp, False, without)
                                         for _ in range(3))
                label = "as shipped" if not without else "without the secondary indexes and trigger"
                print(f"  {label:42} {rate:7,.0f} jobs/s", flush=True)


if __name__ == "__main__":
    main()
