"""Claim cost with queues, limits, pauses and dependencies in play; prints figures and query plans, asserts nothing.

    python bench/scheduling_bench.py drain [--jobs 100000] [--scheduling] [--queuectl PATH]
    python bench/scheduling_bench.py plans [--backend sqlite|postgres]

``drain``: enqueue N `true` jobs (one `enqueue --file`), then time `worker start --count 2 --burst`
draining them, on SQLite. With ``--scheduling`` the same N runnable jobs sit beside 100,000 jobs
waiting (`after`) on a parent in a paused queue and 100,000 jobs of that paused queue, ahead of
them in priority: what a claim must skip. ``--queuectl`` runs another build (say, one from before
queues and dependencies) for a before/after comparison; ``--scheduling`` needs this one.

``plans``: the claim statement's plan (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL ``EXPLAIN
ANALYZE``) on such a populated queue, and the median time of one claim.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    return env


def drain(queuectl: list[str], jobs: int, scheduling: bool) -> float:
    home = Path(tempfile.mkdtemp(prefix="queuectl-sched-bench-"))
    try:
        env = env_for(home)
        lines = []
        if scheduling:
            lines.append(json.dumps({"id": "parent", "command": "true", "queue": "held"}))
            lines += (json.dumps({"id": f"w{i}", "command": "true", "after": ["parent"], "priority": 5})
                      for i in range(100_000))
            lines += (json.dumps({"id": f"h{i}", "command": "true", "queue": "held", "priority": 5})
                      for i in range(100_000))
        lines += (json.dumps({"id": f"j{i}", "command": "true"}) for i in range(jobs))
        subprocess.run([*queuectl, "enqueue", "--file", "-"], input="\n".join(lines), text=True, env=env,
                       check=True, capture_output=True)
        if scheduling:
            subprocess.run([*queuectl, "queue", "pause", "held"], env=env, check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run([*queuectl, "worker", "start", "--count", "2", "--burst"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return jobs / (time.perf_counter() - start)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def populate(storage: Any, n: int = 100_000) -> None:
    from queuectl_core.jobs.models import NewJob

    storage.enqueue([NewJob(id="parent", command="true", max_retries=0, queue="held")])
    storage.set_queue("held", paused=True)
    for start in range(0, n, 20_000):
        storage.enqueue([NewJob(id=f"w{i}", command="true", max_retries=0, after=("parent",), priority=5)
                         for i in range(start, start + 20_000)])
        storage.enqueue([NewJob(id=f"h{i}", command="true", max_retries=0, queue="held", priority=5)
                         for i in range(start, start + 20_000)])
        storage.enqueue([NewJob(id=f"j{i}", command="true", max_retries=0) for i in range(start, start + 20_000)])
    storage.set_queue("limited", concurrency=1)
    storage.enqueue([NewJob(id="lim", command="true", max_retries=0, queue="limited")])


def plans(backend: str) -> None:
    sys.path.insert(0, str(HERE))
    if backend == "sqlite":
        from queuectl_plugins.sqlite_storage import SQLiteStorage

        tmp = Path(tempfile.mkdtemp(prefix="queuectl-plan-"))
        storage: Any = SQLiteStorage(tmp / "queue.db")
        populate(storage)
        storage.conn.execute("ANALYZE")
        sql, params = storage.claim_statement()
        params.update(worker="w", token="t", lease=30.0, now=int(time.time() * 1000))
        print("SQLite EXPLAIN QUERY PLAN of the claim:")
        for row in storage.conn.execute("EXPLAIN QUERY PLAN " + storage._sql(sql), params):
            print("  ", row[1], row[3])
    else:
        import psycopg

        from queuectl_plugins.postgres_storage.store import PostgresStorage
        from queuectl_plugins.postgres_testing import temporary_postgres_database

        ctx = temporary_postgres_database("queuectl_plan")
        dsn = ctx.__enter__()
        storage = PostgresStorage(dsn)
        populate(storage)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE queuectl.jobs")
            sql, params = storage.claim_statement()
            params.update(worker="w", token="t", lease=30.0, now=None)
            conn.execute("BEGIN")
            print("PostgreSQL EXPLAIN (ANALYZE, COSTS OFF) of the claim:")
            for (line,) in conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + storage._sql(sql), params):
                print("  ", line)
            conn.execute("ROLLBACK")
    times = []
    for _ in range(200):
        t = time.perf_counter()
        job = storage.claim("w", 30)
        times.append(time.perf_counter() - t)
        assert job is not None and not job.id.startswith(("w", "h"))
    print(f"one claim (median of 200, 100k runnable + 100k waiting + 100k paused): "
          f"{statistics.median(times) * 1e6:.0f} µs")
    storage.close()
    if backend != "sqlite":
        ctx.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("drain", "plans"))
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--scheduling", action="store_true")
    parser.add_argument("--queuectl", default=None, help="the queuectl executable to bench (default: this tree)")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    if args.what == "plans":
        plans(args.backend)
        return
    queuectl = [args.queuectl] if args.queuectl else [sys.executable, "-m", "queuectl_core"]
    rate = drain(queuectl, args.jobs, args.scheduling)
    label = "with 100k waiting + 100k paused beside them" if args.scheduling else "alone"
    print(f"drain, 2 workers, {args.jobs} pending ({label}): {rate:,.0f} jobs/s")


if __name__ == "__main__":
    main()
