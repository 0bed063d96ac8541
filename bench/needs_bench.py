"""The claim with jobs that need what no worker has: figures and query plans, asserts little.

    python bench/needs_bench.py [--backend sqlite|postgres|both] [--jobs 100000]

Two queues are filled, each with ``--jobs`` pending jobs: one with none needing anything (the
claim as it was before needs), one where half (ahead in priority, the worst case for a walk)
need ``gpu=1`` and the claiming worker declares no gpu. Prints the median time of one claim on
each (200 claims, each taking a job needing nothing), a claim by a worker that has the gpu, and
the claim statement's plan on the second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent.parent
BATCH = 20_000


def fill(storage: Any, jobs: int, needy: bool) -> None:
    from queuectl_core.jobs.models import NewJob

    for start in range(0, jobs, BATCH):
        end = min(jobs, start + BATCH)
        if needy:
            half = (start + end) // 2
            batch = [NewJob(id=f"g{i}", command="true", max_retries=0, priority=5, needs={"gpu": 1})
                     for i in range(start, half)]
            batch += [NewJob(id=f"j{i}", command="true", max_retries=0) for i in range(half, end)]
        else:
            batch = [NewJob(id=f"j{i}", command="true", max_retries=0) for i in range(start, end)]
        storage.enqueue(batch)


def median_claim(storage: Any, worker: str, n: int = 200, prefix: str = "j") -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        job = storage.claim(worker, 30)
        times.append(time.perf_counter() - t)
        assert job is not None and job.id.startswith(prefix), job
    return statistics.median(times) * 1e6


def register(storage: Any, worker: str, resources: dict[str, str]) -> None:
    import os
    import socket

    from queuectl_core.jobs.records import WorkerInfo

    now = storage.now()
    storage.register_worker(WorkerInfo(worker, socket.gethostname(), os.getpid(), now, now))
    storage.declare_resources(worker, resources)


def run(backend: str, jobs: int) -> None:
    sys.path.insert(0, str(HERE))
    opened: list[Callable[[], None]] = []

    def open_storage() -> Any:
        if backend == "sqlite":
            from queuectl_plugins.sqlite_storage import SQLiteStorage

            storage: Any = SQLiteStorage(Path(tempfile.mkdtemp(prefix="queuectl-needs-")) / "queue.db")
        else:
            from queuectl_plugins.postgres_storage.store import PostgresStorage
            from queuectl_plugins.postgres_testing import temporary_postgres_database

            ctx = temporary_postgres_database("queuectl_needs")
            storage = PostgresStorage(ctx.__enter__())
            opened.append(lambda: ctx.__exit__(None, None, None))
        opened.append(storage.close)
        return storage

    def analyze(storage: Any) -> None:
        if backend == "sqlite":
            storage.conn.execute("ANALYZE")
        else:
            import psycopg

            with psycopg.connect(storage.dsn, autocommit=True) as conn:
                conn.execute(f"ANALYZE {storage.jobs}")

    try:
        plain = open_storage()
        fill(plain, jobs, needy=False)
        analyze(plain)
        register(plain, "w", {})
        before = median_claim(plain, "w")
        needy = open_storage()
        fill(needy, jobs, needy=True)
        analyze(needy)
        register(needy, "w", {})
        register(needy, "gpu-worker", {"gpu": "0,1"})
        after = median_claim(needy, "w")
        print(f"{backend}: one claim, median of 200 (µs)")
        print(f"  {jobs:,} pending, none needing anything (the claim before needs): {before:8.0f}")
        print(f"  {jobs:,} pending, {jobs // 2:,} of them ahead needing gpu=1, no worker has a gpu: {after:8.0f}")
        gpu = median_claim(needy, "gpu-worker", n=2, prefix="g")
        print(f"  the same, claimed by a worker with gpu=0,1 (a gpu job, 2 claims): {gpu:8.0f}")
        show_plan(needy, backend)
    finally:
        for close in reversed(opened):
            close()


def show_plan(storage: Any, backend: str) -> None:
    sql, params = storage.claim_statement()
    if backend == "sqlite":
        params.update(worker="w", token="t", lease=30.0, now=int(time.time() * 1000))
        print("  SQLite EXPLAIN QUERY PLAN of the claim:")
        for row in storage.conn.execute("EXPLAIN QUERY PLAN " + storage._sql(sql), params):
            print("    ", row[1], row[3])
        return
    params.update(worker="w", token="t", lease=30.0, now=None, whost=storage.hostname)
    import psycopg

    with psycopg.connect(storage.dsn, autocommit=True) as conn:
        conn.execute("SET jit = off")  # as the storage's own sessions run
        conn.execute("BEGIN")
        print("  PostgreSQL EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) of the claim (rolled back):")
        for (line,) in conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + storage._sql(sql), params):
            print("    ", line)
        conn.execute("ROLLBACK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="both", choices=("sqlite", "postgres", "both"))
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    for backend in (("sqlite", "postgres") if args.backend == "both" else (args.backend,)):
        run(backend, args.jobs)


if __name__ == "__main__":
    main()
