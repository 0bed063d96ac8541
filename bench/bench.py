"""Benchmarks for queuectl on the embedded SQLite default; prints figures, asserts nothing.

    python bench/bench.py                 # every workload
    python bench/bench.py drain startup   # some of them

Workloads: CLI start-up against bare `python -c pass`; draining N `true` jobs with 1, 2
and 4 workers next to `xargs -P` running the same `sh -c true`; idle worker → job start latency
after `enqueue`; `enqueue --file` of 10,000 JSON Lines; one `queuectl enqueue` process per job.
Each figure is the median of several runs. Run it on a quiet machine.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUEUECTL = [sys.executable, "-m", "queuectl_core"]
if shutil.which("queuectl"):
    QUEUECTL = [shutil.which("queuectl")]  # type: ignore[list-item]


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    return env


def q(home: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QUEUECTL, *args], env=env_for(home), capture_output=True, text=True, check=True, **kw)


def fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="queuectl-bench-"))
    q(home, "config", "set", "poll_interval_ms", "500")
    return home


def median_ms(cmd: list[str], runs: int = 15, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def bench_startup() -> None:
    home = fresh_home()
    env = env_for(home)
    base = median_ms([sys.executable, "-c", "pass"])
    print(f"start-up (median of 15): python -c pass {base:.1f} ms; "
          f"queuectl --help {median_ms([*QUEUECTL, '--help'], env=env):.1f} ms; "
          f"queuectl status {median_ms([*QUEUECTL, 'status'], env=env):.1f} ms")


def drain_once(n: int, workers: int) -> float:
    home = fresh_home()
    lines = "\n".join(json.dumps({"command": "true"}) for _ in range(n))
    q(home, "enqueue", "--file", "-", input=lines)
    t = time.perf_counter()
    subprocess.run([*QUEUECTL, "worker", "start", "--count", str(workers), "--burst"], env=env_for(home),
                   stdout=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - t
    shutil.rmtree(home)
    return elapsed


def xargs_once(n: int, workers: int) -> float:
    t = time.perf_counter()
    subprocess.run(f"seq {n} | xargs -P{workers} -I{{}} sh -c true", shell=True, check=True)
    return time.perf_counter() - t


def bench_drain(n: int = 1000, runs: int = 3) -> None:
    for workers in (1, 2, 4):
        ours = statistics.median(drain_once(n, workers) for _ in range(runs))
        base = statistics.median(xargs_once(n, workers) for _ in range(runs))
        print(f"drain {n} `true` jobs, {workers} worker(s): {ours:.2f} s = {n / ours:.0f} jobs/s "
              f"(incl. start-up); xargs -P{workers} sh -c true: {n / base:.0f} jobs/s; ratio {base / ours:.2f}")


def bench_latency(samples: int = 30) -> None:
    home = fresh_home()
    marker_dir = home / "started"
    marker_dir.mkdir()
    worker = subprocess.Popen([*QUEUECTL, "worker", "start"], env=env_for(home), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(1.5)
        lat = []
        os.environ["QUEUECTL_HOME"] = str(home)
        from queuectl_core.framework.app import App
        from queuectl_core.jobs.models import NewJob

        app = App()
        for i in range(samples):
            marker = marker_dir / str(i)
            t0 = time.time()
            # In-process enqueue, so the figure is wake-up + claim + spawn, not Python start-up.
            app.storage.enqueue([NewJob(id=f"lat{i}", command=f"date +%s.%N > {marker}", max_retries=0)])
            deadline = time.time() + 10
            while not marker.exists() or not marker.read_text().strip():
                if time.time() > deadline:
                    raise SystemExit("job never started")
                time.sleep(0.0005)
            lat.append((float(marker.read_text()) - t0) * 1000)
            time.sleep(0.2)
        app.close()
        lat.sort()
        print(f"idle worker -> job start after enqueue returns: p50 {statistics.median(lat):.1f} ms, "
              f"p95 {lat[int(len(lat) * 0.95) - 1]:.1f} ms (n={samples})")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        shutil.rmtree(home)


def bench_enqueue_file(n: int = 10_000, runs: int = 3) -> None:
    lines = "\n".join(json.dumps({"command": "true", "priority": i % 3}) for i in range(n))
    times = []
    for _ in range(runs):
        home = fresh_home()
        t = time.perf_counter()
        q(home, "enqueue", "--file", "-", input=lines)
        times.append(time.perf_counter() - t)
        shutil.rmtree(home)
    el = statistics.median(times)
    print(f"enqueue --file of {n} JSON Lines: {el:.2f} s = {n / el:.0f} jobs/s (whole process)")


def bench_enqueue_process(n: int = 100) -> None:
    home = fresh_home()
    env = env_for(home)
    t = time.perf_counter()
    for i in range(n):
        subprocess.run([*QUEUECTL, "enqueue", "--cmd", "true"], env=env, capture_output=True, check=True)
    el = time.perf_counter() - t
    print(f"one `queuectl enqueue` process per job: {n / el:.1f} jobs/s")
    shutil.rmtree(home)


WORKLOADS = {"startup": bench_startup, "drain": bench_drain, "latency": bench_latency,
             "enqueue_file": bench_enqueue_file, "enqueue_process": bench_enqueue_process}

if __name__ == "__main__":
    names = sys.argv[1:] or list(WORKLOADS)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; queuectl via {' '.join(QUEUECTL)}")
    for name in names:
        WORKLOADS[name]()
