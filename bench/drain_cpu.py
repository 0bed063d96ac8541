"""What a drain of tiny jobs costs in CPU, per job: the worker's own, its jobs', the database
server's (PostgreSQL), beside `xargs -P N sh -c true` measured the same way in the same run.

On a machine whose CPUs the drain keeps busy, jobs/s is bounded by the CPUs divided by the CPU one
job costs in all; so the share of xargs' rate a worker can reach is at most about
``jobs' CPU / (jobs' CPU + worker's CPU + server's CPU)``. That bound, not a wait, is what keeps a
drain of `true` jobs on 2 CPUs near half of xargs.

    python bench/drain_cpu.py --jobs 4000 --slots 2 --slots 4 --rounds 3
    python bench/drain_cpu.py --postgres postgresql://postgres@127.0.0.1:5432/test

Each round enqueues N `true` jobs into a fresh QUEUECTL_HOME (on PostgreSQL, a throw-away schema)
and runs `queuectl worker start --slots S --burst` in a child Python process that reports its own
``getrusage`` (RUSAGE_SELF: the worker; RUSAGE_CHILDREN: the jobs it reaped). The server's CPU is
the growth of every ``postgres`` process's CPU in /proc (ended backends are counted in the
postmaster's). Use a regular (not editable) install; run on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

_WORKER = """
import atexit, json, resource, sys
def report():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps([me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime]), file=sys.stderr)
atexit.register(report)
sys.argv = ["queuectl", "worker", "start", "--burst", "--slots", sys.argv[1]]
from queuectl_core.cli.main import main
main()
"""


def _postgres_cpu() -> float:
    """Seconds of CPU used by every postgres process (and the backends they reaped)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        if stat[stat.index("(") + 1:stat.rindex(")")].startswith("postgres"):
            fields = stat[stat.rindex(")") + 2:].split()
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def worker_round(args: argparse.Namespace, slots: int) -> str:
    import json

    home = tempfile.mkdtemp(prefix="queuectl-drain-cpu-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_") and k != "CI"}
    env["QUEUECTL_HOME"] = home
    schema = f"drain_cpu_{os.getpid()}_{int(time.time() * 1000)}"
    if args.postgres:
        env.update(QUEUECTL_STORAGE="postgres", QUEUECTL_POSTGRES_DSN=args.postgres, QUEUECTL_POSTGRES_SCHEMA=schema)
    queuectl = os.path.join(os.path.dirname(sys.executable), "queuectl")
    try:
        lines = "".join(f"{n}\n" for n in range(args.jobs))
        subprocess.run([queuectl, "enqueue", "--each", "--", "true", "{}"], input=lines, text=True, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        server = _postgres_cpu() if args.postgres else 0.0
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-c", _WORKER, str(slots)], env=env, check=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - start
        worker, jobs = json.loads(done.stderr.strip().splitlines()[-1])
        line = (f"worker --slots {slots}: {args.jobs / wall:,.0f} jobs/s; CPU a job: worker {worker / args.jobs * 1000:.3f} ms, "
                f"jobs {jobs / args.jobs * 1000:.3f} ms")
        if args.postgres:
            server = _postgres_cpu() - server
            line += f", server {server / args.jobs * 1000:.3f} ms"
        return line
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if args.postgres:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as db:
                db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def xargs_round(args: argparse.Namespace, slots: int) -> str:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(["xargs", f"-P{slots}", "-I{}", "sh", "-c", "true"],
                   input="".join(f"{n}\n" for n in range(args.jobs)), text=True, check=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return f"xargs -P{slots} sh -c true: {args.jobs / wall:,.0f} jobs/s; CPU a job {cpu / args.jobs * 1000:.3f} ms (xargs and sh)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--slots", type=int, action="append", help="repeat for several [default: 2 and 4]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", metavar="DSN", help="drain through PostgreSQL instead of SQLite")
    args = parser.parse_args()
    print(f"{args.jobs:,} `true` jobs a round, {os.cpu_count()} CPUs, {'PostgreSQL' if args.postgres else 'SQLite'}")
    for n in range(1, args.rounds + 1):
        for slots in args.slots or [2, 4]:
            print(f"round {n}  {worker_round(args, slots)}")
            print(f"round {n}  {xargs_round(args, slots)}")


if __name__ == "__main__":
    main()
