"""Memory of many concurrent jobs: N `sleep 30` jobs running at once under one worker with
``--slots N``, against ``--count P`` worker processes (one job each), as the sum of the RSS of every
queuectl process (supervisor, workers, janitors; never the jobs themselves), read from /proc.

    python bench/slots_rss.py                    # 200 jobs, --slots 200, and 20 processes to compare
    python bench/slots_rss.py --jobs 200 --processes 200

Runs on a throw-away QUEUECTL_HOME (SQLite) and stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUEUECTL = [sys.executable, "-m", "queuectl_core"]


def _stat(pid: int) -> tuple[int, str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def queuectl_processes(root: int) -> list[int]:
    """``root`` and its descendants that run this Python (workers, janitors), not the jobs."""
    exe = os.path.realpath(sys.executable)
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[1] != "Z":
                parents[int(entry)] = st[0]
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    out = []
    for pid in found:
        try:
            if os.path.realpath(f"/proc/{pid}/exe") == exe:
                out.append(pid)
        except OSError:
            pass
    return out


def measure(jobs: int, args: list[str]) -> tuple[int, int, float]:
    """(queuectl processes, total RSS in KiB, seconds until every job ran) with ``jobs`` running."""
    with tempfile.TemporaryDirectory(prefix="queuectl-rss-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
        env["QUEUECTL_HOME"] = home
        lines = "".join(f'{{"command": "sleep 30", "id": "s{i}"}}\n' for i in range(jobs))
        subprocess.run([*QUEUECTL, "enqueue", "--file", "-"], input=lines.encode(), env=env, check=True,
                       stdout=subprocess.DEVNULL)
        t0 = time.monotonic()
        proc = subprocess.Popen([*QUEUECTL, "worker", "start", *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from queuectl_plugins.sqlite_storage import SQLiteStorage

            storage = SQLiteStorage(Path(home) / "queue.db")
            while storage.counts()["processing"] < jobs:
                if proc.poll() is not None or time.monotonic() - t0 > 120:
                    raise SystemExit(f"the workers did not start {jobs} jobs (exit {proc.poll()})")
                time.sleep(0.1)
            ready = time.monotonic() - t0
            time.sleep(1.0)  # settled: every attempt thread and heartbeat under way
            pids = queuectl_processes(proc.pid)
            total = sum(_rss_kib(pid) for pid in pids)
            storage.close()
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGINT)  # at once: the jobs are stopped and released
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return len(pids), total, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="concurrent `sleep 30` jobs (default 200)")
    parser.add_argument("--processes", type=int, default=20,
                        help="also run this many one-job worker processes (--count), to compare (0 skips)")
    opts = parser.parse_args()
    n, kib, ready = measure(opts.jobs, ["--slots", str(opts.jobs)])
    print(f"{opts.jobs} `sleep 30` jobs, 1 worker --slots {opts.jobs}: {n} queuectl processes, "
          f"{kib / 1024:.1f} MiB RSS in total (all running after {ready:.1f} s)")
    if opts.processes:
        n, kib, ready = measure(opts.processes, ["--count", str(opts.processes)])
        per = kib / 1024 / opts.processes
        print(f"{opts.processes} `sleep 30` jobs, --count {opts.processes}: {n} queuectl processes, "
              f"{kib / 1024:.1f} MiB RSS in total, {per:.1f} MiB a job "
              f"(so {opts.jobs} jobs would take ~{per * opts.jobs:.0f} MiB)")


if __name__ == "__main__":
    main()
