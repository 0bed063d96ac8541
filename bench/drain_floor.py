"""How fast can a Python worker drain `true` jobs with each one's state kept in SQLite? W3's floor.

W3's target is a share of `xargs -P N sh -c true`, which keeps no state at all. This prints, in one
run, beside that `xargs`:

1. N Python threads that each spawn `sh -c true` and wait for it, keeping nothing (the spawn's
   cost in Python, without a queue);
2. N Python threads that each claim a job (one UPDATE ... RETURNING, committed), spawn it, and
   record its exit status (one UPDATE, committed) in a SQLite WAL database: the least a durable
   queue does per job, with no lease token check, heartbeat, log, event, retry decision or
   dependency;
3. N Python threads that each do the same through queuectl's own SQLite storage (``claim``, then
   ``apply`` of the completion), the job spawned as in 2, then run by queuectl's subprocess
   executor: what queuectl's storage and executor cost, without a worker's loop
   (bench/storage_cost.py takes the storage apart);
4. with ``--postgres DSN``, the same as 2 on PostgreSQL (psycopg, autocommit: one round trip for
   the claim, one for the record; a table in a throw-away schema, dropped afterwards);
5. `queuectl worker start --slots N --burst` on the same number of jobs (start-up included), on
   SQLite (and on PostgreSQL with ``--postgres``, in a throw-away schema).

    python bench/drain_floor.py [--jobs 4000] [--slots 2 --slots 4] [--queuectl PATH] [--postgres DSN]

Run it from a plain (not editable) install on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from queuectl_core.interfaces import RunContext
from queuectl_core.jobs import lifecycle
from queuectl_core.jobs.models import NewJob
from queuectl_core.jobs.records import AttemptResult
from queuectl_plugins.sqlite_storage import SQLiteStorage
from queuectl_plugins.subprocess_executor.executor import SubprocessExecutor


def _threads(n: int, target: object, args: tuple[object, ...] = ()) -> float:
    start = time.perf_counter()
    threads = [threading.Thread(target=target, args=args) for _ in range(n)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def spawn_only(jobs: int, n: int) -> float:
    left = [jobs]
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
            subprocess.Popen(["sh", "-c", "true"], stdin=subprocess.DEVNULL).wait()

    return _threads(n, run)


def durable(jobs: int, n: int, tmp: str) -> float:
    path = os.path.join(tmp, f"floor-{n}.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, command TEXT, state TEXT, worker TEXT, exit_code INTEGER)")
    db.executemany("INSERT INTO jobs (command, state) VALUES ('true', 'pending')", [()] * jobs)
    db.close()

    def run() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=60)
        conn.execute("PRAGMA synchronous=NORMAL")
        me = threading.current_thread().name
        while True:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("UPDATE jobs SET state = 'processing', worker = ? WHERE id ="
                               " (SELECT id FROM jobs WHERE state = 'pending' LIMIT 1) RETURNING id, command",
                               (me,)).fetchone()
            conn.execute("COMMIT")
            if row is None:
                conn.close()
                return
            code = subprocess.Popen(["sh", "-c", row[1]], stdin=subprocess.DEVNULL).wait()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE jobs SET state = 'completed', exit_code = ? WHERE id = ?", (code, row[0]))
            conn.execute("COMMIT")

    return _threads(n, run)


def drop(storage: SQLiteStorage, names: tuple[str, ...]) -> None:
    """Drop these secondary indexes (or the ``job_counts_*`` trigger): to measure what they cost."""
    for name in names:
        storage.conn.execute(f"DROP {'TRIGGER' if name.startswith('job_counts') else 'INDEX'} {name}")


def queuectl_parts(jobs: int, n: int, tmp: str, executor: bool, without: tuple[str, ...] = ()) -> float:
    """N threads, each with its own connection to queuectl's SQLite storage: ``claim``, the job,
    ``apply(complete)``. The job is spawned as in :func:`durable`, or (``executor``) run by queuectl's
    subprocess executor: what a worker adds on top is then its main loop, events and housekeeping.
    ``without``: the storage without these indexes (:func:`drop`; bench/storage_cost.py)."""
    path = Path(tempfile.mkdtemp(dir=tmp)) / "queue.db"
    first = SQLiteStorage(path)
    drop(first, without)
    first.enqueue([NewJob(id=f"j{i:07d}", command="true", max_retries=0) for i in range(jobs)])
    first.close()
    run_job = SubprocessExecutor(Path(tmp) / f"logs-{n}", 1 << 22, 5.0, "/bin/sh").run

    def run() -> None:
        storage = SQLiteStorage(path)
        me = threading.current_thread().name
        while (job := storage.claim(me, 60.0)) is not None:
            if executor:
                result = run_job(job, RunContext(attempt=job.attempts, tick_interval=1.0, tick=lambda: False))
            else:
                code = subprocess.Popen(["sh", "-c", job.command], stdin=subprocess.DEVNULL).wait()
                result = AttemptResult(exit_code=code)
            storage.apply(job.id, job.lease_token, lifecycle.complete(result))
        storage.close()

    return _threads(n, run)


def durable_postgres(jobs: int, n: int, dsn: str, schema: str) -> float:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
        db.execute(f"CREATE TABLE {schema}.jobs (id serial PRIMARY KEY, command text, state text, worker text,"
                   " exit_code int)")
        db.execute(f"CREATE INDEX ON {schema}.jobs (id) WHERE state = 'pending'")
        db.execute(f"INSERT INTO {schema}.jobs (command, state) SELECT 'true', 'pending' FROM generate_series(1, %s)",
                   (jobs,))

    def run() -> None:
        me = threading.current_thread().name
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                row = conn.execute(f"UPDATE {schema}.jobs SET state = 'processing', worker = %s WHERE id ="
                                   f" (SELECT id FROM {schema}.jobs WHERE state = 'pending' ORDER BY id LIMIT 1"
                                   " FOR UPDATE SKIP LOCKED) RETURNING id, command", (me,)).fetchone()
                if row is None:
                    return
                code = subprocess.Popen(["sh", "-c", row[1]], stdin=subprocess.DEVNULL).wait()
                conn.execute(f"UPDATE {schema}.jobs SET state = 'completed', exit_code = %s WHERE id = %s", (code, row[0]))

    try:
        return _threads(n, run)
    finally:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def xargs(jobs: int, n: int) -> float:
    start = time.perf_counter()
    subprocess.run(["xargs", f"-P{n}", "-n1", "sh", "-c", "true"], input=b"x\n" * jobs, check=True)
    return time.perf_counter() - start


def queuectl(jobs: int, n: int, exe: str, tmp: str, dsn: str | None = None) -> float:
    home = os.path.join(tmp, f"home-{n}-{'postgres' if dsn else 'sqlite'}")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}, "QUEUECTL_HOME": home}
    if dsn:
        env.update(QUEUECTL_STORAGE="postgres", QUEUECTL_POSTGRES_DSN=dsn,
                   QUEUECTL_POSTGRES_SCHEMA=f"queuectl_floor_{os.getpid()}_{n}")
    lines = "".join(json.dumps({"command": "true"}) + "\n" for _ in range(jobs))
    subprocess.run([exe, "enqueue", "--file", "-"], input=lines.encode(), env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        start = time.perf_counter()
        subprocess.run([exe, "worker", "start", "--slots", str(n), "--burst"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        return time.perf_counter() - start
    finally:
        if dsn:
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as db:
                db.execute(f"DROP SCHEMA IF EXISTS {env['QUEUECTL_POSTGRES_SCHEMA']} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--slots", type=int, action="append")
    parser.add_argument("--queuectl", default=shutil.which("queuectl") or "queuectl")
    parser.add_argument("--postgres", metavar="DSN", help="also run the PostgreSQL rungs against this server")
    args = parser.parse_args()
    print(f"{args.jobs:,} `true` jobs; jobs/s, and the share of `xargs -P N` timed just before each", flush=True)
    with tempfile.TemporaryDirectory(prefix="queuectl-drain-floor-") as tmp:
        for n in args.slots or [2, 4]:
            rungs: list[tuple[str, Callable[[], float]]] = [
                ("Python threads, spawn only", lambda: spawn_only(args.jobs, n)),
                ("Python threads, claim + record in SQLite", lambda: durable(args.jobs, n, tmp)),
                ("Python threads, queuectl's SQLite storage", lambda: queuectl_parts(args.jobs, n, tmp, False)),
                ("Python threads, queuectl's SQLite storage and subprocess executor",
                 lambda: queuectl_parts(args.jobs, n, tmp, True)),
                (f"queuectl worker start --slots {n} --burst, SQLite", lambda: queuectl(args.jobs, n, args.queuectl, tmp))]
            if args.postgres:
                rungs += [
                    ("Python threads, claim + record in PostgreSQL",
                     lambda: durable_postgres(args.jobs, n, args.postgres, f"queuectl_floor_{os.getpid()}")),
                    (f"queuectl worker start --slots {n} --burst, PostgreSQL",
                     lambda: queuectl(args.jobs, n, args.queuectl, tmp, args.postgres))]
            for name, run in rungs:
                x = xargs(args.jobs, n)
                took = run()
                print(f"N={n}  {args.jobs / took:7,.0f} jobs/s  {x / took:4.2f} of xargs -P{n} ({args.jobs / x:,.0f}/s)  {name}",
                      flush=True)

if __name__ == "__main__":
    main()
