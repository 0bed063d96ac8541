"""`queuectl bench`: W1–W4 on a throw-away queue of the configured backend, beside this machine's floors.

Imported only when the command runs. Every workload gets a queue of its own (a temporary
QUEUECTL_HOME; on PostgreSQL also a temporary schema, dropped afterwards), so the user's queue is
never read or written. Children get none of the caller's ``QUEUECTL_*`` variables (one of them could
point at the real database), only what this module sets.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from queuectl_core.errors import QueuectlError

# Keys that say where a backend keeps its data: never carried into the throw-away queue.
# sqlite.path falls back to its default inside the temporary home; postgres.schema gets a
# fresh name. A backend not listed here cannot be benchmarked safely.
_DATA_LOCATION = {"sqlite": ("sqlite.path",), "postgres": ("postgres.schema",)}
# Core keys carried over: they shape speed and locate nothing.
_CORE_CARRIED = ("storage", "executor", "backoff", "poll_interval_ms", "lease_seconds")
# Environment variables that choose what is loaded, not where data lives: kept for children.
_KEEP_ENV = ("QUEUECTL_DISABLE_PLUGINS",)
# W1's floor: the least a click + pluggy CLI does to enqueue one job (framework_floor.py, beside
# this module; also bench/framework_floor.py in the repository). W1's target is at most 1.15 times it.
FRAMEWORK_FLOOR = str(Path(__file__).with_name("framework_floor.py"))
W1_TARGET = 1.15
# W4 samples an idle worker: each sample starts this long after the last job ended.
IDLE_GAP_S = 0.02


@dataclass(frozen=True)
class Sizes:
    enqueue_processes: int = 30   # W1
    file_jobs: int = 100_000      # W2
    drain_jobs: int = 1_000       # W3
    workers: tuple[int, ...] = (2, 4)  # W3: worker processes, one job each at a time
    slots: tuple[int, ...] = (2, 4)  # W3: one worker process with --slots S
    latency_samples: int = 20     # W4


@dataclass
class Queue:
    """One throw-away queue: its home, the environment its `queuectl` children run in, and an
    in-process storage on it (for the in-process enqueue of W4 and to look at it)."""

    home: Path
    env: dict[str, str]
    storage: Any
    cleanup: list[Any] = field(default_factory=list)


def queuectl_command() -> list[str]:
    """The `queuectl` a user runs: the console script beside this interpreter if there is one."""
    script = Path(sys.executable).with_name("queuectl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "queuectl_core"]


# Runs argv[1:] as a child and prints its wall time and peak RSS (RUSAGE_CHILDREN of a parent of
# its own: the peak of that one child), as JSON.
_PEAK = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
print(json.dumps({"returncode": proc.returncode, "seconds": seconds, "stderr": proc.stderr.decode(errors="replace"),
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _p95_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, -(-len(ordered) * 95 // 100) - 1)] * 1000


def _timed(cmd: list[str], env: dict[str, str] | None = None, stdin: Any = subprocess.DEVNULL) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        line = (proc.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise QueuectlError(f"bench: {' '.join(cmd[-3:])} exited {proc.returncode}: {line}")
    return elapsed


class Bench:
    def __init__(self, app: Any, sizes: Sizes, progress: Any = None) -> None:
        from queuectl_core.framework.plugins import registries

        self.app = app
        self.sizes = sizes
        self.progress = progress or (lambda line: None)
        self.storage_name: str = app.config["storage"]
        if self.storage_name not in _DATA_LOCATION:
            known = ", ".join(sorted(_DATA_LOCATION))
            raise QueuectlError(f"queuectl bench can make a throw-away queue only on the {known} storages, "
                                f"not {self.storage_name!r}; it never runs on your own queue")
        self.settings = registries().settings
        self.queuectl = queuectl_command()
        self.python = sys.executable

    # -- throw-away queues ---------------------------------------------------------------
    def _carried(self) -> dict[str, Any]:
        """The caller's effective values that shape the backend's speed (the providers, the
        polling and lease, the storage plugin's own keys), minus the keys that locate its data."""
        config = self.app.config
        storage_plugin = self.app.registries.storages.get(self.storage_name).plugin
        skip = set(_DATA_LOCATION[self.storage_name])
        out: dict[str, Any] = {}
        for key, setting in self.settings.items():
            wanted = key in _CORE_CARRIED or (setting.plugin == storage_plugin and key not in skip)
            if wanted and config.source(key) != "default":
                out[key] = config[key]
        out["storage"] = self.storage_name
        return out

    @contextmanager
    def queue(self) -> Iterator[Queue]:
        import secrets

        from queuectl_core.framework.plugins import make_provider
        from queuectl_core.framework.settings import Config, ensure_private_dir, write_file_values

        home = Path(tempfile.mkdtemp(prefix="queuectl-bench-"))
        try:
            ensure_private_dir(home)
            env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_") or k in _KEEP_ENV}
            env["QUEUECTL_HOME"] = str(home)
            values = self._carried()
            if self.storage_name == "postgres":
                values["postgres.schema"] = f"queuectl_bench_{secrets.token_hex(6)}"
            on_disk = {}
            for key, value in values.items():
                setting = self.settings[key]
                if setting.secret:  # a DSN's password stays out of the temporary config.toml
                    env[setting.env_var] = str(value)
                else:
                    on_disk[key] = value
            write_file_values(home, on_disk)
            storage = make_provider(self.app.registries.storages, self.storage_name,
                                    Config(home, self.settings, on_disk, env))
            queue = Queue(home, env, storage)
            try:
                yield queue
            finally:
                for proc in queue.cleanup:
                    _stop(proc)
                drop = getattr(storage, "drop_schema", None)
                if drop is not None:
                    drop()
                storage.close()
        finally:
            shutil.rmtree(home, ignore_errors=True)

    # -- floors --------------------------------------------------------------------------
    def floors(self) -> dict[str, Any]:
        """Process start, `xargs -P N sh -c true` and a direct spawn, measured now."""
        n = max(self.sizes.enqueue_processes, 5)
        bare = [_timed([self.python, "-c", "pass"]) for _ in range(n)]
        out: dict[str, Any] = {"python_pass_ms": _median_ms(bare)}
        if self.sizes.drain_jobs:
            out["xargs_jobs_per_s"] = {str(w): self.sizes.drain_jobs / self._xargs(w)
                                       for w in sorted({*self.sizes.workers, *self.sizes.slots})}
        if self.sizes.latency_samples:
            # Back to back, and from idle as W4 samples it: a machine that has been idle for
            # IDLE_GAP_S takes longer to spawn (cold caches, a descheduled vCPU): ~2.2 ms against
            # ~1.3 on the 2-CPU development machine, so W4 is compared with the second.
            with tempfile.TemporaryDirectory(prefix="queuectl-bench-") as tmp:
                lat = [self._direct_spawn(Path(tmp) / str(i)) for i in range(self.sizes.latency_samples)]
                idle = []
                for i in range(self.sizes.latency_samples):
                    time.sleep(IDLE_GAP_S)
                    idle.append(self._direct_spawn(Path(tmp) / f"idle-{i}"))
            out["direct_spawn_p50_ms"] = _median_ms(lat)
            out["direct_spawn_idle_p50_ms"] = _median_ms(idle)
        return out

    def _xargs(self, workers: int) -> float:
        start = time.perf_counter()
        subprocess.run(["xargs", f"-P{workers}", "-n1", "sh", "-c", "true"], check=True,
                       input=b"x\n" * self.sizes.drain_jobs, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    @staticmethod
    def _direct_spawn(marker: Path) -> float:
        t0 = time.time()
        subprocess.run(["/bin/sh", "-c", f"date +%s.%N > '{marker}'"], check=True)
        return float(marker.read_text()) - t0

    # -- workloads -----------------------------------------------------------------------
    def w1(self) -> dict[str, Any]:
        """One `queuectl enqueue --cmd true` process per job, each run followed by one run of the
        framework floor on the same throw-away queue (interleaved, so both see the same machine)."""
        n = self.sizes.enqueue_processes
        ours, floor = [], []
        with self.queue() as q:
            cmd = [*self.queuectl, "enqueue", "--cmd", "true"]
            floor_cmd = [self.python, FRAMEWORK_FLOOR, *(["--postgres"] if self.storage_name == "postgres" else [])]
            q.storage.counts()  # the schema exists (migrated) before either is timed
            for _ in range(n):
                ours.append(_timed(cmd, q.env))
                floor.append(_timed(floor_cmd, q.env))
            enqueued = q.storage.counts()
        if sum(enqueued.values()) != n:
            raise QueuectlError(f"bench: W1 enqueued {sum(enqueued.values())} jobs, expected {n}")
        ms, floor_ms = _median_ms(ours), _median_ms(floor)
        return {"processes": n, "median_ms": ms, "jobs_per_s": 1000 / ms,
                "framework_floor_ms": floor_ms, "ratio": ms / floor_ms, "target_ratio": W1_TARGET}

    def w2(self) -> dict[str, Any]:
        """`enqueue --file` of N JSON Lines, one whole process, and its peak RSS; beside it the
        floor of the storage alone (the same jobs, already validated, through enqueue_stream)."""
        import json

        n = self.sizes.file_jobs
        with self.queue() as q:
            path = q.home / "jobs.jsonl"
            with open(path, "w") as fh:
                for start in range(0, n, 10_000):
                    fh.write('{"command": "true"}\n' * min(10_000, n - start))
            measured = subprocess.run([self.python, "-c", _PEAK, *self.queuectl, "enqueue", "--file", str(path)],
                                      env=q.env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            stored = sum(q.storage.counts().values())
        try:
            report = json.loads(measured.stdout)
        except ValueError:
            report = {"returncode": measured.returncode, "stderr": measured.stderr}
        if report.get("returncode") != 0 or stored != n:
            line = (str(report.get("stderr", "")).strip().splitlines() or ["(no output)"])[-1]
            raise QueuectlError(f"bench: W2 enqueue --file stored {stored} of {n} jobs: {line}")
        floor = self._storage_floor(n)
        return {"jobs": n, "seconds": report["seconds"], "jobs_per_s": n / report["seconds"],
                "peak_rss_mib": report["peak_kib"] / 1024, "storage_floor_jobs_per_s": n / floor,
                "of_storage_floor": floor / report["seconds"]}

    def _storage_floor(self, n: int) -> float:
        """Seconds for the storage alone to take N validated jobs in one transaction (in process:
        no start-up, no parsing or validation, no printing)."""
        from queuectl_core.intake.bulk import BATCH
        from queuectl_core.jobs.ids import new_id
        from queuectl_core.jobs.models import NewJob
        from queuectl_core.storage.capabilities import with_fallbacks

        cwd = os.getcwd()

        def batches() -> Iterator[list[NewJob]]:
            for start in range(0, n, BATCH):
                yield [NewJob(new_id(), "true", 0, cwd=cwd) for _ in range(min(BATCH, n - start))]

        with self.queue() as q:
            start = time.perf_counter()
            for _ in with_fallbacks(q.storage).enqueue_stream(batches()):
                pass
            return time.perf_counter() - start

    def w3(self) -> list[dict[str, Any]]:
        """Drain N `true` jobs with `worker start --burst` (its start-up included): W worker
        processes (``--count W``), then one process with ``--slots S``; each beside `xargs -P`
        with as many at once, measured right after it."""
        out = []
        n = self.sizes.drain_jobs
        runs = [(w, 1) for w in self.sizes.workers] + [(1, s) for s in self.sizes.slots]
        for workers, slots in runs:
            with self.queue() as q:
                path = q.home / "jobs.jsonl"
                path.write_text('{"command": "true"}\n' * n)
                _timed([*self.queuectl, "enqueue", "--file", str(path)], q.env)
                elapsed = _timed([*self.queuectl, "worker", "start", "--count", str(workers), "--slots", str(slots),
                                  "--burst"], q.env)
                done = q.storage.counts()
            if done.get("completed", 0) != n:
                raise QueuectlError(f"bench: W3 completed {done.get('completed', 0)} of {n} jobs")
            at_once = workers * slots
            xargs = self._xargs(at_once)
            out.append({"jobs": n, "workers": workers, "slots": slots, "seconds": elapsed, "jobs_per_s": n / elapsed,
                        "xargs_jobs_per_s": n / xargs, "of_xargs": xargs / elapsed})
        return out

    def w4(self) -> dict[str, Any]:
        """Idle worker → job start, the job enqueued in-process (no process start in the figure)."""
        from queuectl_core.jobs.ids import new_id
        from queuectl_core.jobs.models import NewJob

        n = self.sizes.latency_samples
        with self.queue() as q:
            worker = subprocess.Popen([*self.queuectl, "worker", "start"], env=q.env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            q.cleanup.append(worker)
            _wait(lambda: q.storage.live_workers(), "the worker to start", worker)
            time.sleep(0.3)  # let it settle into its idle wait

            def sample(i: int, enqueue: Any) -> float:
                marker = q.home / f"started-{i}"
                command = f"date +%s.%N > '{marker}'"
                t0 = time.time()
                enqueue(command)
                _wait(lambda: marker.exists() and marker.read_text().strip(), "a job to start", worker)
                started = float(marker.read_text())
                # Idle again before the next sample: the figure is pickup by an idle worker.
                _wait(lambda: not q.storage.counts().get("processing"), "the job to finish", worker)
                time.sleep(IDLE_GAP_S)
                return started - t0

            inproc = [sample(i, lambda c: q.storage.enqueue([NewJob(id=new_id(), command=c, max_retries=0)]))
                      for i in range(n)]
        return {"samples": n, "in_process_p50_ms": _median_ms(inproc), "in_process_p95_ms": _p95_ms(inproc)}

    def run(self) -> dict[str, Any]:
        import platform
        import signal

        # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl+C, so the idle worker of W4 is
        # stopped and the throw-away queues are removed rather than left behind.
        def terminate(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, terminate)

        result: dict[str, Any] = {
            "storage": self.storage_name, "cpus": os.cpu_count(), "python": platform.python_version(),
            "queuectl": " ".join(self.queuectl),
        }
        steps = [("floors", self.floors, True), ("w1", self.w1, self.sizes.enqueue_processes),
                 ("w2", self.w2, self.sizes.file_jobs),
                 ("w3", self.w3, self.sizes.drain_jobs and (self.sizes.workers or self.sizes.slots)),
                 ("w4", self.w4, self.sizes.latency_samples)]
        for name, step, wanted in steps:
            if wanted:
                self.progress(f"running {name} ...")
                result[name] = step()
        return result


def _wait(predicate: Any, what: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise QueuectlError(f"bench: the worker exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise QueuectlError(f"bench: timed out waiting for {what}")
        time.sleep(0.0005)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def format_report(r: dict[str, Any]) -> list[str]:
    """The human report: each figure beside the floor it is compared with."""
    lines = [f"queuectl bench: storage {r['storage']} (a throw-away queue), {r['cpus']} CPUs, "
             f"Python {r['python']}, {r['queuectl']}"]
    f = r.get("floors", {})
    if f:
        lines.append(f"floors: process start `python -c pass` {f['python_pass_ms']:.1f} ms")
        for w, rate in f.get("xargs_jobs_per_s", {}).items():
            lines.append(f"        `xargs -P{w} sh -c true` {rate:,.0f} jobs/s")
        if "direct_spawn_p50_ms" in f:
            lines.append(f"        spawning a job directly p50 {f['direct_spawn_p50_ms']:.1f} ms back to back, "
                         f"{f['direct_spawn_idle_p50_ms']:.1f} ms from idle ({IDLE_GAP_S * 1000:.0f} ms, as W4)")
    if "w1" in r:
        w = r["w1"]
        lines.append(f"W1 one `queuectl enqueue --cmd true` process per job: {w['jobs_per_s']:.1f} jobs/s "
                     f"(median {w['median_ms']:.1f} ms over {w['processes']}); framework floor "
                     f"{w['framework_floor_ms']:.1f} ms, interleaved: {w['ratio']:.2f}x the floor "
                     f"(target <= {w['target_ratio']:.2f}x)")
    if "w2" in r:
        w = r["w2"]
        lines.append(f"W2 `enqueue --file`, {w['jobs']:,} JSON Lines: {w['jobs_per_s']:,.0f} jobs/s "
                     f"({w['seconds']:.2f} s, whole process, peak RSS {w['peak_rss_mib']:.0f} MiB); "
                     f"{w['of_storage_floor']:.2f} of the storage alone ({w['storage_floor_jobs_per_s']:,.0f}/s)")
    for w in r.get("w3", []):
        slots = w.get("slots", 1)
        who = f"1 worker --slots {slots}" if slots > 1 else f"{w['workers']} workers"
        lines.append(f"W3 drain {w['jobs']:,} `true`, {who}: {w['jobs_per_s']:,.0f} jobs/s "
                     f"({w['of_xargs']:.2f} of `xargs -P{w['workers'] * slots} sh -c true` {w['xargs_jobs_per_s']:,.0f}/s)")
    if "w4" in r:
        w = r["w4"]
        lines.append(f"W4 idle worker -> job start, in-process enqueue: p50 {w['in_process_p50_ms']:.1f} ms, "
                     f"p95 {w['in_process_p95_ms']:.1f} ms, n={w['samples']} (direct spawn from idle p50 "
                     f"{f.get('direct_spawn_idle_p50_ms', float('nan')):.1f} ms)")
    return lines
