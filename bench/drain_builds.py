"""Two (or more) builds of queuectl draining the same jobs, interleaved round by round.

Each round gives every build a fresh QUEUECTL_HOME (on PostgreSQL, a throw-away schema), enqueues
the same N jobs with `enqueue --file -`, and times `worker start --count W --burst` until the queue is
empty. It prints each build's jobs/s per round, the median, the median of its per-round ratios to
the first build (rounds drift on a shared machine; a pair in one round does not), and on SQLite how
much the database grew per job.

    python bench/drain_builds.py --build OLD_VENV/bin/queuectl --build NEW_VENV/bin/queuectl \\
        --cmd 'yes line {} of a chatty job, as a build prints it | head -c 102400' --jobs 1000 --workers 2 --rounds 8
    # --worker-arg=--slots --worker-arg=4 --workers 1: one worker with 4 slots
    # --postgres postgresql://postgres@127.0.0.1/postgres: the same on PostgreSQL

The command must contain {} (the line number, so every job is its own). Use regular (not editable)
installs of each build, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time


def _size(home: str) -> int:
    return sum(os.path.getsize(os.path.join(home, f)) for f in os.listdir(home) if f.startswith("queue.db"))


def drain(queuectl: str, args: argparse.Namespace, schema: str) -> tuple[float, float | None]:
    """(jobs/s, bytes the database grew per job, on SQLite) for one build, one round."""
    home = tempfile.mkdtemp(prefix="queuectl-drain-builds-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_") and k != "CI"}
    env["QUEUECTL_HOME"] = home
    if args.postgres:
        env.update(QUEUECTL_STORAGE="postgres", QUEUECTL_POSTGRES_DSN=args.postgres, QUEUECTL_POSTGRES_SCHEMA=schema)
    try:
        # JSON Lines, which every build reads (`--each` is newer, and quotes what it puts in for {}).
        lines = "".join(json.dumps({"command": args.cmd.replace("{}", str(i))}) + "\n" for i in range(args.jobs))
        subprocess.run([queuectl, "enqueue", "--file", "-"], input=lines, env=env, text=True,
                       check=True, stdout=subprocess.DEVNULL)
        before = None if args.postgres else _size(home)
        started = time.perf_counter()
        subprocess.run([queuectl, "worker", "start", "--count", str(args.workers), "--burst", *args.worker_arg],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rate = args.jobs / (time.perf_counter() - started)
        return rate, (None if before is None else (_size(home) - before) / args.jobs)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if args.postgres:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", action="append", required=True, help="a queuectl executable (repeat)")
    parser.add_argument("--cmd", default="true {}", help="each job's command line; {} is the job's number")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-arg", action="append", default=[], help="passed to `worker start` (repeat)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--postgres", metavar="DSN", help="drain on PostgreSQL (a throw-away schema a run)")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {b: [] for b in args.build}
    growth: dict[str, list[float]] = {b: [] for b in args.build}
    for r in range(args.rounds):
        for n, build in enumerate(args.build):
            rate, grew = drain(build, args, f"queuectl_drain_builds_{os.getpid()}_{r}_{n}")
            rates[build].append(rate)
            if grew is not None:
                growth[build].append(grew)
            print(f"round {r + 1} build {n + 1}: {rate:,.0f} jobs/s" +
                  (f", database +{grew / 1024:.1f} KB a job" if grew is not None else ""), flush=True)
    first = args.build[0]
    for n, build in enumerate(args.build):
        ratios = [a / b for a, b in zip(rates[build], rates[first])]
        grew = f", database +{statistics.median(growth[build]) / 1024:.1f} KB a job" if growth[build] else ""
        print(f"build {n + 1} ({build}): median {statistics.median(rates[build]):,.0f} jobs/s,"
              f" {statistics.median(ratios):.2f} of build 1 (median of the rounds' ratios){grew}")


if __name__ == "__main__":
    main()
