"""The scale curve: claim, drain, enqueue, `status` and `list` with 0, 1k, 10k, 100k and 1M jobs queued
(pending) or kept (completed), on SQLite and PostgreSQL.

    python bench/scale.py                                  # both backends, every size, both kinds
    python bench/scale.py --backend sqlite --sizes 1000,1000000 --kinds pending
    TEST_POSTGRES_DSN=postgresql://user@host/postgres python bench/scale.py --backend postgres

Each row is a fresh throw-away queue (a temporary QUEUECTL_HOME; on PostgreSQL a temporary schema,
dropped afterwards) filled with one INSERT ... SELECT through the storage's own connection (a
recursive CTE on SQLite, generate_series on PostgreSQL: fill speed is not the point). The filler jobs
are `true`, older than everything measured, and pending ones have priority -1 so the measured jobs
go first. PostgreSQL is VACUUM ANALYZEd after the fill, as autovacuum would; SQLite's WAL is
checkpointed (as it would have been, a page at a time, by a queue filled over time), with no ANALYZE.

Printed per row, in milliseconds unless said (medians):
  status / list        the in-process work of `queuectl status` (overview()) and of `queuectl list`
                       (the 50 newest and the "N more" count), then the whole `queuectl` process
                       (its start-up included: that part does not depend on the queue's size)
  list pending         the in-process work of `queuectl list --state pending`
  enqueue / claim      one in-process `Storage.enqueue` of one job, one `Storage.claim`
  drain                jobs/s of `worker start --count W` over N `true` jobs enqueued at once
                       (workers already running; with pending filler they are busy on it)

Prints figures and asserts nothing. The machine is shared: run it more than once and compare rows
measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN") or "postgresql://postgres@127.0.0.1:5432/postgres"
_FILL_COLS = ("id, command, state, attempts, max_retries, priority, created_at, updated_at, run_at,"
              " last_exit_code, last_duration, queue")


def _median_ms(fn: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


class Queue:
    """A throw-away queue: its home, the environment a `queuectl` process needs, and a storage."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.home = Path(tempfile.mkdtemp(prefix="queuectl-scale-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
        self.env["QUEUECTL_HOME"] = str(self.home)
        self.env["QUEUECTL_STORAGE"] = backend
        if backend == "postgres":
            from queuectl_plugins.postgres_storage.store import PostgresStorage

            schema = f"queuectl_scale_{secrets.token_hex(4)}"
            self.env["QUEUECTL_POSTGRES_DSN"] = ADMIN_DSN
            self.env["QUEUECTL_POSTGRES_SCHEMA"] = schema
            self.storage: Any = PostgresStorage(ADMIN_DSN, schema)
        else:
            from queuectl_plugins.sqlite_storage import SQLiteStorage

            self.storage = SQLiteStorage(self.home / "queue.db")

    def fill(self, n: int, state: str) -> None:
        if not n:
            return
        done = state == "completed"
        if self.backend == "postgres":
            s = self.storage
            sql = (f"INSERT INTO {s.jobs} ({_FILL_COLS}) SELECT 'fill-' || lpad(i::text, 8, '0'), 'true', %s,"
                   f" %s, 0, -1, now() - interval '2 days' + i * interval '1 ms',"
                   f" now() - interval '2 days' + i * interval '1 ms', now() - interval '2 days', %s, %s, 'default'"
                   f" FROM generate_series(0, %s - 1) AS i")
            s._run(lambda conn: conn.execute(sql, (state, int(done), 0 if done else None, 0.01 if done else None, n)))
            s._run(lambda conn: conn.execute(f"VACUUM ANALYZE {s.jobs}"))
        else:
            now = time.time_ns() // 1_000_000
            t0 = now - 2 * 86_400_000
            conn = self.storage.conn
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                f"WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < ? - 1)"
                f" INSERT INTO jobs ({_FILL_COLS}) SELECT printf('fill-%08d', i), 'true', ?, ?, 0, -1, ? + i, ? + i,"
                f" ?, ?, ?, 'default' FROM c",
                (n, state, int(done), t0, t0, t0, 0 if done else None, 0.01 if done else None))
            from queuectl_plugins.sqlite_storage import RECOUNT

            for statement in RECOUNT.split(";"):  # SQLite's inserts are tallied by _insert, bypassed here
                conn.execute(statement)
            conn.execute("COMMIT")
            # The fill went through the WAL in one go: checkpoint it now, or the first worker commit
            # that trips the auto-checkpoint copies half a gigabyte back mid-drain.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        drop = getattr(self.storage, "drop_schema", None)
        if drop is not None:
            drop()
        self.storage.close()
        shutil.rmtree(self.home, ignore_errors=True)


def _new(job_id: str, priority: int = 0) -> Any:
    from queuectl_core.jobs.models import NewJob

    return NewJob(id=job_id, command="true", max_retries=0, priority=priority)


def measure(backend: str, kind: str, size: int, args: argparse.Namespace) -> dict[str, float]:
    from queuectl_core.control.overview import overview
    from queuectl_core.jobs.models import JobState

    q = Queue(backend)
    try:
        t = time.perf_counter()
        q.fill(size, "pending" if kind == "pending" else "completed")
        fill_s = time.perf_counter() - t
        st = q.storage
        out: dict[str, float] = {"fill_s": fill_s}

        def list_work(states: list[JobState] | None) -> None:
            jobs = st.list_jobs(None, 50, states=states)
            held = [j.id for j in jobs if j.waiting]
            if held:
                st.waits_on(held)
            if len(jobs) == 50:
                st.count_jobs(None, states=states)

        out["status_ms"] = _median_ms(lambda: overview(st, os.uname().nodename), args.samples)
        out["list_ms"] = _median_ms(lambda: list_work(None), args.samples)
        out["list_pending_ms"] = _median_ms(lambda: list_work([JobState.PENDING]), args.samples)
        cli = [args.queuectl]
        out["status_cli_ms"] = _median_ms(
            lambda: subprocess.run([*cli, "status"], env=q.env, check=True, stdout=subprocess.DEVNULL), args.cli_samples)
        out["list_cli_ms"] = _median_ms(
            lambda: subprocess.run([*cli, "list"], env=q.env, check=True, stdout=subprocess.DEVNULL), args.cli_samples)
        n = args.latency_samples
        ids = iter(range(n))
        out["enqueue_ms"] = _median_ms(lambda: st.enqueue([_new(f"enq-{next(ids):06d}", 5)]), n)
        out["claim_ms"] = _median_ms(lambda: st.claim("scale-bench", 600.0), n)  # takes the enq- jobs first

        rates = []
        worker = subprocess.Popen([*cli, "worker", "start", "--count", str(args.workers)], env=q.env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while len(st.live_workers()) < args.workers:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit("scale: the workers did not start")
                time.sleep(0.02)
            for run in range(args.runs):
                prefix = f"drain{run}-"
                st.enqueue([_new(f"{prefix}{i:06d}", 10) for i in range(args.drain)])
                t = time.perf_counter()
                while st._read("SELECT count(*) FROM {j} WHERE id >= :a AND id < :b AND state = 'completed'",
                               a=prefix, b=prefix[:-1] + ".")[0][0] < args.drain:
                    time.sleep(0.005)
                rates.append(args.drain / (time.perf_counter() - t))
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        out["drain_per_s"] = statistics.median(rates)
        return out
    finally:
        q.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--sizes", default="0,1000,10000,100000,1000000")
    parser.add_argument("--kinds", default="pending,completed")
    parser.add_argument("--drain", type=int, default=1000, help="jobs per drain (default 1000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="drains per row; the median is shown")
    parser.add_argument("--samples", type=int, default=9, help="in-process status/list samples")
    parser.add_argument("--cli-samples", type=int, default=5)
    parser.add_argument("--latency-samples", type=int, default=200, help="enqueue and claim samples")
    parser.add_argument("--queuectl", default=shutil.which("queuectl") or "queuectl",
                        help="the queuectl binary for the CLI and worker figures (a plain, non-editable venv's)")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"queuectl: {args.queuectl}; drain {args.drain} `true` x {args.runs}, {args.workers} workers")
    head = (f"{'backend':<9}{'jobs':>10} {'kind':<10}{'status':>8}{'(cli)':>8}{'list':>8}{'(cli)':>8}"
            f"{'list pend':>10}{'enqueue':>9}{'claim':>7}{'drain/s':>9}{'fill s':>8}")
    print(head)
    for backend in backends:
        for kind in args.kinds.split(","):
            for size in sizes:
                r = measure(backend, kind, size, args)
                print(f"{backend:<9}{size:>10,} {kind:<10}{r['status_ms']:>8.1f}{r['status_cli_ms']:>8.0f}"
                      f"{r['list_ms']:>8.1f}{r['list_cli_ms']:>8.0f}{r['list_pending_ms']:>10.1f}"
                      f"{r['enqueue_ms']:>9.2f}{r['claim_ms']:>7.2f}{r['drain_per_s']:>9,.0f}{r['fill_s']:>8.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
