"""`enqueue --file` streams: batches in one transaction, all or nothing however late the bad line,
the checks across the whole file kept, one event per job, progress on a terminal only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from process_helpers import read_until_closed

from queuectl_core.intake import bulk

N = bulk.BATCH * 2 + 500  # three batches: a failure in the last comes after two were inserted


def _lines(jobs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(j) + "\n" for j in jobs)


def _many(n: int = N, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"j{i}", "command": f"echo {i}", **extra} for i in range(1, n + 1)]


def _fails(q: Any, text: str, needle: str) -> None:
    proc = q.run("enqueue", "--file", "-", input=text, check=False)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-2000:]
    assert needle in lines[0], lines[0]
    assert proc.stdout == ""


def test_a_bad_line_late_in_a_large_file_changes_nothing(qb: Any) -> None:
    jobs = _many()
    jobs[N - 3]["priority"] = "high"  # line N-2, in the last batch
    _fails(qb, _lines(jobs), f"line {N - 2}: 'priority'")
    jobs[N - 3]["priority"] = 1
    text = _lines(jobs) + '{"command": "echo unterminated"\n'
    _fails(qb, text, f"invalid JSON on line {N + 1}")
    assert qb.counts()["pending"] == 0, "a failed --file changed the queue"
    out = qb.run("enqueue", "--file", "-", input=_lines(jobs)).stdout.split()
    assert out == [j["id"] for j in jobs]
    assert qb.counts()["pending"] == N


def test_duplicates_and_unique_keys_in_the_file_and_against_the_queue(qb: Any) -> None:
    qb.run("enqueue", "--id", "seed", "--cmd", "true", "--unique-key", "k-held")
    jobs = _many()
    jobs[-1]["id"] = "j1"  # repeats line 1, two batches later
    _fails(qb, _lines(jobs), f"line {N}: duplicate id 'j1' in the input")
    jobs[-1]["id"] = "seed"  # already in the queue: found by the database, named with its line
    _fails(qb, _lines(jobs), f"line {N}: a job with id 'seed' already exists")
    jobs[-1]["id"] = f"j{N}"
    jobs[0]["unique_key"] = "k1"
    jobs[-1]["unique_key"] = "k1"
    _fails(qb, _lines(jobs), f"line {N}: unique_key 'k1' is also held by 'j1' in the input")
    jobs[-1]["unique_key"] = "k-held"
    _fails(qb, _lines(jobs), f"line {N}: unique_key 'k-held' is held by job 'seed'")
    assert qb.counts()["pending"] == 1, "a failed --file changed the queue"


def test_after_within_the_file_across_batches(qb: Any) -> None:
    jobs = _many()
    jobs[-1]["after"] = ["j1", "j2"]  # parents two batches earlier
    jobs[bulk.BATCH + 10]["after"] = "j5"
    qb.run("enqueue", "--file", "-", input=_lines(jobs))
    assert qb.job(f"j{N}")["waiting"] == 2
    assert qb.job(f"j{bulk.BATCH + 11}")["waiting"] == 1
    # A job may only wait on one earlier in the input (or already queued): a later one is refused.
    later = [{"id": "a", "command": "true", "after": ["b"]}, {"id": "b", "command": "true"}]
    _fails(qb, _lines(later), "line 1: 'after' names 'b', which is not earlier in the input")
    _fails(qb, _lines([{"id": "s", "command": "true", "after": "s"}]), "not earlier in the input")


def test_one_enqueued_event_per_job_after_the_commit(q: Any, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    log = tmp_path / "events.log"
    (site / "counter.py").write_text(
        "from queuectl_core.api import hookimpl\n"
        "@hookimpl\n"
        "def queuectl_job_event(event):\n"
        f"    with open({str(log)!r}, 'a') as fh:\n"
        "        fh.write(f'{event.kind} {event.job.id} {event.job.state}\\n')\n")
    info = site / "counter-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: counter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[queuectl]\ncounter = counter\n")
    env = {"PYTHONPATH": str(site)}
    jobs = _many()
    jobs[-1]["max_retries"] = -1
    proc = q.run("enqueue", "--file", "-", input=_lines(jobs), check=False, env=env)
    assert proc.returncode == 1 and not log.exists(), "events for jobs that were never committed"
    jobs[-1]["max_retries"] = 1
    q.run("enqueue", "--file", "-", input=_lines(jobs), env=env)
    assert log.read_text().splitlines() == [f"enqueued j{i} pending" for i in range(1, N + 1)]


def _pty_run(q: Any, path: Path) -> tuple[int, bytes]:
    """Run `queuectl enqueue --file` with stderr on a pseudo-terminal (stdout to a file)."""
    import pty

    out = path.with_suffix(".out")
    master, slave = pty.openpty()
    with open(out, "wb") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "queuectl_core", "enqueue", "--file", str(path)],
                                env=q.env, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=slave)
    os.close(slave)
    seen = read_until_closed(master)
    return proc.wait(timeout=60), seen


def test_progress_on_a_terminal_and_not_when_piped(q: Any, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(_lines(_many()))
    code, seen = _pty_run(q, path)
    assert code == 0
    assert f"{N:,} jobs enqueued".encode() in seen and b"\r" in seen, seen[-500:]
    assert seen.endswith(b"\r\x1b[K"), "the progress line is cleared at the end"
    assert path.with_suffix(".out").read_text().split() == [f"j{i}" for i in range(1, N + 1)]
    # Piped (stderr not a terminal): nothing on stderr at all, the ids alone on stdout.
    path.write_text(_lines([{"command": "true"} for _ in range(N)]))
    proc = q.run("enqueue", "--file", str(path))
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == N


def test_job_field_orders_match_the_models() -> None:
    """bulk builds NewJobs and Jobs positionally: the orders must be the models'."""
    from queuectl_core.intake.jobspec import JOB_FIELDS, job_fields, validate
    from queuectl_core.jobs.models import Job, NewJob
    from queuectl_core.storage.sql import JOB_COLUMNS

    assert tuple(f.name for f in fields(NewJob)) == JOB_FIELDS
    assert tuple(f.name for f in fields(Job)) == JOB_COLUMNS
    obj = {"id": "x", "command": "true", "queue": "q", "tags": ["a"], "env": {"A": "1"}, "cwd": "/tmp",
           "after": ["p"], "unique_key": "k", "retry_on": [1], "timeout": 5, "delay": 2, "priority": 3}
    assert NewJob(*job_fields(obj, 2)) == validate(obj, 2)


def test_positional_factory_builds_the_very_objects_the_constructor_does() -> None:
    """fastinit's objects (filled through an unfrozen twin class, then given the frozen class) are
    of the class itself, equal, equally hashed, frozen, and pickle and replace() as usual."""
    import dataclasses
    import pickle

    from queuectl_core.jobs.fastinit import positional_factory
    from queuectl_core.jobs.models import EventKind, Job, JobEvent, JobState, NewJob
    from queuectl_core.jobs.timeutil import now

    at = now()
    job_args = ("j1", "true", JobState.PENDING, 0, 3, 0, at, at, at, None, None, None, None, None, None, None, None,
                False, "default", 0, None, None, None, "/tmp", {}, ("t",), None, 0, None, None, None,
                None, None, {"gpu": 1})  # limits: memory, cpu_time; needs
    cases = [(NewJob, ("n1", "true", 3, 0, None, None, 2.0, "q", ("p",), "k", None, (1,), "/tmp", {"A": "1"}, (),
                             512 * 1024**2, 10.0, {"gpu": 1})),
             (Job, job_args), (JobEvent, (EventKind.ENQUEUED, Job(*job_args), None, None, None, at, None))]
    for cls, args in cases:
        made = positional_factory(cls)(*args)
        built = cls(*args)
        assert type(made) is cls and made == built and repr(made) == repr(built)
        if cls is not NewJob:  # NewJob.env is a dict (hash=False), the others hash
            assert hash(made) == hash(built)
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.__setattr__(dataclasses.fields(cls)[0].name, "x")
        assert pickle.loads(pickle.dumps(made)) == built
        assert dataclasses.replace(made) == built


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_inserted_rows_read_back_as_the_same_jobs(tmp_path: Path, backend: str) -> None:
    """The batch converter (the spool's columns -> Jobs) gives exactly what get() reads back:
    batches of one shape, of mixed shapes, children of `after`, on both backends."""
    import contextlib

    from queuectl_core.intake.jobspec import validate
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            store: Any = SQLiteStorage(tmp_path / "q.db")
        else:
            from queuectl_plugins.postgres_storage.store import PostgresStorage
            from queuectl_plugins.postgres_testing import temporary_postgres_database

            store = PostgresStorage(stack.enter_context(temporary_postgres_database()))
        stack.callback(store.close)
        mixed = [validate({"id": f"r{i}", "command": "true", "tags": ["t"], "env": {"A": "b"}, "retry_on": [3],
                           "delay": i}, 1) for i in range(3)]
        mixed += [validate({"id": f"m{i}", "command": f"echo {i}", "priority": i % 2, "timeout": 1 + i % 3,
                            "queue": ("default", "q2")[i % 2], **({"env": {"X": str(i)}} if i % 3 else {}),
                            **({"tags": ["a", "b"]} if i % 4 else {}), **({"unique_key": f"k{i}"} if i % 5 else {}),
                            **({"run_at": "2030-01-01T00:00:00Z"} if i == 7 else {})}, i % 3) for i in range(300)]
        same = [validate({"id": f"s{i}", "command": "true", "cwd": "/tmp"}, 3) for i in range(250)]
        kids = [validate({"id": "kid", "command": "true", "after": ["r0"]}, 0),
                validate({"id": "kid2", "command": "true", "after": ["kid", "s1"]}, 0)]
        batches = list(store.enqueue_stream([mixed[:2], mixed[2:], same, kids]))
        assert [len(b) for b in batches] == [2, 301, 250, 2]
        assert [j for b in batches for j in b] == [store.get(j.id) for j in mixed + same + kids]
        assert batches[3][0].waiting == 1 and batches[3][1].waiting == 2
        assert all(not j.env for j in batches[2]) and len({id(j.env) for j in batches[2]}) == 250


@pytest.mark.slow
def test_a_large_file_is_enqueued_in_bounded_memory(q: Any, tmp_path: Path) -> None:
    """300,000 lines: the old whole-file path peaked near 270 MiB; streaming stays near 40."""
    n = 300_000
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        fh.writelines(f'{{"command": "echo {i}", "tags": ["bulk"]}}\n' for i in range(n))
    # A parent of its own, so the peak is of this one child (RUSAGE_CHILDREN keeps the maximum).
    measure = ("import resource, subprocess, sys\n"
               "proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)\n"
               "print(proc.returncode, proc.stdout.count(b'\\n'), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    proc = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "queuectl_core", "enqueue", "--file",
                           str(path)], env=q.env, capture_output=True, text=True, timeout=300)
    code, printed, peak_kib = (int(x) for x in proc.stdout.split())
    assert code == 0, proc.stderr[-2000:]
    assert printed == n
    assert peak_kib < 120 * 1024, f"peak RSS {peak_kib // 1024} MiB"
    assert q.counts()["pending"] == n
    shutil.rmtree(tmp_path, ignore_errors=True)
