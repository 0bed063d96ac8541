"""PostgreSQL next to SQLite: drain throughput and enqueue-to-start latency with 1, 4 and 8 workers.

    python bench/pg_vs_sqlite.py                       # both backends, 1/4/8 workers
    python bench/pg_vs_sqlite.py --jobs 4000 --runs 3  # bigger drain, median of 3
    TEST_POSTGRES_DSN=postgresql://user@host/postgres python bench/pg_vs_sqlite.py

Prints figures and asserts nothing. PostgreSQL runs on the same machine as the workers (a remote
server adds its round trip to every claim and to the latency). Each PostgreSQL figure uses a fresh
database, dropped afterwards. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUEUECTL = [sys.executable, "-m", "queuectl_core"]
ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN") or "postgresql://postgres@127.0.0.1:5432/postgres"


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    return env


def q(home: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QUEUECTL, *args], env=env_for(home), capture_output=True, text=True, check=True, **kw)


class Backend:
    """A fresh queue (home directory, and for PostgreSQL a database) per measurement."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.db: str | None = None

    def __enter__(self) -> Path:
        self.home = Path(tempfile.mkdtemp(prefix=f"queuectl-bench-{self.name}-"))
        q(self.home, "config", "set", "poll_interval_ms", "500")
        if self.name == "postgres":
            import psycopg
            from psycopg.conninfo import conninfo_to_dict, make_conninfo

            self.db = f"queuectl_bench_{secrets.token_hex(4)}"
            with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db}"')
            params = conninfo_to_dict(ADMIN_DSN)
            params["dbname"] = self.db
            q(self.home, "config", "set", "storage", "postgres")
            q(self.home, "config", "set", "postgres.dsn", make_conninfo(**params))
        return self.home

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        if self.db:
            import psycopg

            with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def drain(backend: str, workers: int, jobs: int) -> float:
    """Jobs per second for `worker start --burst --count N` over `jobs` queued `true` jobs."""
    with Backend(backend) as home:
        q(home, "enqueue", "--file", "-", input="".join(json.dumps({"command": "true"}) + "\n" for _ in range(jobs)))
        t = time.perf_counter()
        q(home, "worker", "start", "--burst", "--count", str(workers), timeout=600)
        elapsed = time.perf_counter() - t
        counts = json.loads(q(home, "status", "--json").stdout)["counts"]
        assert counts["completed"] == jobs, counts
        return jobs / elapsed


def latency(backend: str, workers: int, samples: int) -> list[float]:
    """Milliseconds from an in-process enqueue to the job's first instruction, idle workers waiting."""
    with Backend(backend) as home:
        marks = home / "started"
        marks.mkdir()
        proc = subprocess.Popen([*QUEUECTL, "worker", "start", "--count", str(workers)], env=env_for(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.environ["QUEUECTL_HOME"] = str(home)
        from queuectl_core.framework.app import App
        from queuectl_core.jobs.models import NewJob

        app = App()
        try:
            deadline = time.time() + 30
            while len(app.storage.live_workers()) < workers:
                if time.time() > deadline:
                    raise SystemExit("workers did not start")
                time.sleep(0.1)
            time.sleep(1.0)
            out = []
            for i in range(samples):
                mark = marks / str(i)
                t0 = time.time()
                # In-process, so the figure is commit + wake-up + claim + spawn, not Python start-up.
                app.storage.enqueue([NewJob(id=f"lat{i}", command=f"date +%s.%N > {mark}", max_retries=0)])
                end = time.time() + 10
                while not mark.exists() or not mark.read_text().strip():
                    if time.time() > end:
                        raise SystemExit("a job never started")
                    time.sleep(0.0005)
                out.append((float(mark.read_text()) - t0) * 1000)
                time.sleep(0.15)  # let every worker go idle again
            return out
        finally:
            app.close()
            proc.terminate()
            proc.wait(timeout=60)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="drain runs per figure (median)")
    parser.add_argument("--samples", type=int, default=40, help="latency samples per figure")
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    print(f"{os.cpu_count()} CPUs; drain {args.jobs} `true` jobs (median of {args.runs}); "
          f"latency over {args.samples} jobs")
    print(f"{'backend':<9} {'workers':>7} {'drain jobs/s':>13} {'latency p50 ms':>15} {'p95 ms':>8}")
    for backend in args.backends.split(","):
        for n in counts:
            rate = statistics.median(drain(backend, n, args.jobs) for _ in range(args.runs))
            lat = latency(backend, n, args.samples)
            print(f"{backend:<9} {n:>7} {rate:>13.0f} {statistics.median(lat):>15.1f} {pct(lat, 0.95):>8.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
