"""What a job needs: `enqueue --needs`, a worker's `--resources` (and nvidia-smi), pools, and why a
job waits, with real worker processes on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from process_helpers import start, stop

# Each run appends "<QUEUECTL_RESOURCE_GPU> <CUDA_VISIBLE_DEVICES> <start> <end>" to the file.
_RECORD = ('s=$(date +%s.%N); sleep {sleep}; echo "${{QUEUECTL_RESOURCE_{name}:-none}} ${{CUDA_VISIBLE_DEVICES:-none}}'
           ' $s $(date +%s.%N)" >> {file}')


def _record(file: Path, sleep: float = 1, name: str = "GPU") -> str:
    return _RECORD.format(sleep=sleep, file=file, name=name)


def _runs(file: Path) -> list[tuple[str, str, float, float]]:
    out = []
    for line in file.read_text().splitlines():
        held, cuda, begin, end = line.split()
        out.append((held, cuda, float(begin), float(end)))
    return out


def _overlap(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[2] < b[3] and b[2] < a[3]


def _most_at_once(runs: list[tuple[Any, ...]]) -> int:
    edges = sorted([(r[2], 1) for r in runs] + [(r[3], -1) for r in runs])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_gpu_jobs_pack_a_workers_instances_and_a_job_without_needs_runs_beside_them(qb: Any, tmp_path: Path) -> None:
    gpu, plain = tmp_path / "gpu.txt", tmp_path / "plain.txt"
    for n in range(4):
        qb.run("enqueue", "--id", f"g{n}", "--needs", "gpu=1", "--cmd", _record(gpu))
    qb.run("enqueue", "--id", "plain", "--cmd", _record(plain, sleep=1.5))
    proc, out = start(qb, "--slots", "4", "--resources", "gpu=0,1")
    try:
        usage = qb.wait_for(lambda: (u := qb.json("resource", "list"))["workers"]
                            and u["workers"][0]["resources"]["gpu"]["in_use"] == 2 and u, what="two gpus in use")
        assert usage["workers"][0]["resources"]["gpu"]["declared"] == "0,1"
        status = qb.run("status").stdout
        assert "gpu" in status and "2/2" in status
        for n in range(4):
            qb.wait_state(f"g{n}", "completed", timeout=60)
        qb.wait_state("plain", "completed", timeout=60)
    finally:
        stop(proc, out)
    runs = _runs(gpu)
    assert len(runs) == 4
    assert all(held == cuda and held in ("0", "1") for held, cuda, _, _ in runs), runs
    for i, a in enumerate(runs):  # two running jobs never share an instance
        for b in runs[i + 1:]:
            assert not (a[0] == b[0] and _overlap(a, b)), (a, b)
    assert _most_at_once(runs) == 2, runs  # at most two at once, and both gpus used together
    [p] = _runs(plain)
    assert p[0] == "none" and any(_overlap(p, r) for r in runs), (p, runs)  # beside the gpu jobs


def test_a_pool_is_never_exceeded_by_two_racing_worker_processes(qb: Any, tmp_path: Path) -> None:
    qb.run("resource", "set", "license", "--capacity", "1")
    runs = tmp_path / "runs.txt"
    for n in range(6):
        qb.run("enqueue", "--id", f"l{n}", "--queue", f"q{n % 3}", "--needs", "license=1",
               "--cmd", _record(runs, sleep=0.3, name="LICENSE"))
    workers = [start(qb, "--slots", "3") for _ in range(2)]
    try:
        for n in range(6):
            qb.wait_state(f"l{n}", "completed", timeout=90)
    finally:
        for proc, out in workers:
            stop(proc, out)
    got = _runs(runs)
    assert len(got) == 6 and all(held == "1" for held, *_ in got)  # a pool's count, in the env
    assert _most_at_once(got) == 1, got
    listed = qb.json("resource", "list")["pools"]
    assert listed == [{"name": "license", "capacity": 1, "in_use": 0}]


def test_nvidia_smi_on_path_declares_the_gpus(q: Any, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "--query-gpu=index --format=csv,noheader" ] || exit 9\nprintf "0\\n1\\n"\n')
    fake.chmod(0o755)
    out_file = tmp_path / "gpu.txt"
    q.run("enqueue", "--id", "g", "--needs", "gpu=2", "--cmd", _record(out_file, sleep=0))
    proc = q.start_worker(env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    try:
        q.wait_state("g", "completed")
        workers = q.wait_for(lambda: q.json("resource", "list")["workers"], what="the worker's resources")
        assert workers[0]["resources"] == {"gpu": {"declared": "0,1", "units": 2, "in_use": 0}}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    [(held, cuda, _, _)] = _runs(out_file)
    assert held == cuda == "0,1"


def test_a_job_no_live_worker_can_serve_stays_pending_and_show_says_why(qb: Any, tmp_path: Path) -> None:
    qb.run("resource", "set", "license", "--capacity", "1")
    qb.run("enqueue", "--id", "big", "--needs", "gpu=2", "--", "true")
    qb.run("enqueue", "--id", "holder", "--needs", "license=1", "--", "sleep", "30")
    qb.run("enqueue", "--id", "second", "--needs", "license=1", "--", "true")
    qb.run("enqueue", "--id", "plain", "--", "true")
    proc, out = start(qb, "--slots", "4", "--resources", "gpu=0")
    try:
        qb.wait_state("plain", "completed")
        qb.wait_state("holder", "processing")
        qb.wait_for(lambda: "no live worker has gpu=2" in qb.run("show", "big").stdout, what="show's reason")
        shown = qb.run("show", "big").stdout
        assert "waiting" in shown and "gpu=0" in shown, shown
        reason = qb.json("show", "second")["waiting_reason"]
        assert reason == "pool license full 1/1"
        assert qb.job("big")["state"] == "pending" and qb.job("second")["state"] == "pending"
        qb.run("cancel", "holder")
        qb.wait_state("second", "completed")
        assert qb.job("big")["state"] == "pending"
    finally:
        stop(proc, out)


def test_a_sigkilled_workers_pool_unit_is_free_once_its_job_is_taken_back(qb: Any) -> None:
    qb.config("lease_seconds", 2)
    qb.run("resource", "set", "license", "--capacity", "1")
    qb.run("enqueue", "--id", "held", "--max-retries", "0", "--needs", "license=1", "--", "sleep", "60")
    victim = qb.start_worker()
    try:
        qb.wait_state("held", "processing", timeout=90)
        assert qb.json("resource", "list")["pools"][0]["in_use"] == 1
        os.killpg(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
        qb.run("enqueue", "--id", "next", "--needs", "license=1", "--", "true")
        proc, out = start(qb)
        try:
            qb.wait_state("next", "completed", timeout=60)
            assert qb.job("held")["state"] == "dead"  # taken back: its lease expired
            assert qb.json("resource", "list")["pools"][0]["in_use"] == 0
        finally:
            stop(proc, out)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)


def test_bad_needs_and_resources_are_one_line_and_change_nothing(q: Any) -> None:
    for needs in ("gpu=0", "gpu", "9x=1", "gpu=1,gpu=2"):
        done = q.run("enqueue", "--needs", needs, "--", "true", check=False)
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = q.run("enqueue", '{"command": "true", "needs": {"gpu": -1}}', check=False)
    assert done.returncode != 0 and "needs" in done.stderr
    assert q.json("list") == []
    done = q.run("worker", "start", "--resources", "gpu", check=False)
    assert done.returncode != 0 and "--resources" in done.stderr and "Traceback" not in done.stderr
    done = q.run("config", "set", "worker.resources", "gpu=", check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    done = q.run("resource", "remove", "nope", check=False)
    assert done.returncode != 0 and "no pool named 'nope'" in done.stderr
    assert q.json("resource", "list") == {"pools": [], "workers": []}


def test_needs_from_a_file_and_the_python_api(q: Any, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "f1", "command": "true", "needs": {"gpu": 1}}) + "\n"
                    + json.dumps({"id": "f2", "command": "true"}) + "\n")
    q.run("enqueue", "--file", str(jobs))
    code = ("from queuectl import Queue; import sys; j = Queue(sys.argv[1]).enqueue('true', needs={'license': 2});"
            " print(j.needs)")
    import subprocess
    import sys

    api = subprocess.run([sys.executable, "-c", code, str(q.home)], capture_output=True, text=True, env=q.env,
                         timeout=60)
    assert api.returncode == 0, api.stderr
    assert api.stdout.strip() == "{'license': 2}"
    assert q.job("f1")["needs"] == {"gpu": 1} and q.job("f2")["needs"] == {}


# -- the migration: a database of the release before needs ------------------------------------------
def test_sqlite_needs_migration_keeps_jobs_claimable(tmp_path: Path) -> None:
    from test_migrations import sqlite_schema_at

    from queuectl_core.jobs.models import NewJob
    from queuectl_plugins.sqlite_storage import _NEEDS, MIGRATIONS, SQLiteStorage

    db = tmp_path / "queue.db"
    conn = sqlite_schema_at(db, MIGRATIONS.index(_NEEDS))  # the release before needs
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 " run_at, queue) VALUES ('old', 'true', 'pending', 0, 0, 0, 1, 1, 1, 'default')")
    conn.close()
    storage = SQLiteStorage(db)
    try:
        storage.enqueue([NewJob("gpu", "true", 0, priority=9, needs={"gpu": 1})])
        job = storage.claim("w", 30)  # the gpu job, first by priority, fits no worker here
        assert job is not None and (job.id, job.needs) == ("old", {})
        assert storage.get("gpu").needs == {"gpu": 1}
        assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        storage.close()


def test_postgres_needs_migration_keeps_jobs_claimable() -> None:
    import psycopg

    from queuectl_core.jobs.models import NewJob
    from queuectl_plugins.postgres_storage.store import MIGRATIONS, PostgresStorage
    from queuectl_plugins.postgres_testing import postgres_schema_at, temporary_postgres_database

    before = next(n for n, script in enumerate(MIGRATIONS) if "need_units" in script)
    with temporary_postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            postgres_schema_at(conn, before)
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, max_retries) VALUES ('old', 'true', 'pending', 0)")
        storage = PostgresStorage(dsn)
        try:
            storage.set_pool("gpu", 1)
            storage.enqueue([NewJob("gpu", "true", 0, priority=9, needs={"gpu": 1})])
            first, second = storage.claim("w", 30), storage.claim("w", 30)
            assert first is not None and second is not None
            assert [(first.id, first.needs), (second.id, second.needs)] == [("gpu", {"gpu": 1}), ("old", {})]
        finally:
            storage.close()


def test_the_dashboard_shows_pools_and_workers_resources_in_use(q: Any, dash: Any) -> None:
    q.run("resource", "set", "license", "--capacity", "2")
    q.run("enqueue", "--id", "g", "--needs", "gpu=1,license=1", "--", "sleep", "30")
    proc, out = start(q, "--slots", "2", "--resources", "gpu=0,1")
    try:
        q.wait_state("g", "processing")
        d = dash()
        res = q.wait_for(lambda: (r := d.get("/api/overview")["resources"])["workers"] and r, what="resources")
        assert res["pools"] == [{"name": "license", "capacity": 2, "in_use": 1}]
        [w] = res["workers"]
        assert w["resources"] == {"gpu": {"declared": "0,1", "units": 2, "in_use": 1}}
        assert 'id="resources"' in d.http.get("/").text
        q.run("cancel", "g")
    finally:
        stop(proc, out)


def test_a_storage_without_the_capability_refuses_jobs_with_needs() -> None:
    import pytest

    from queuectl_core.errors import ValidationError
    from queuectl_core.intake.jobspec import enqueue_with_fresh_ids
    from queuectl_core.jobs.models import NewJob
    from queuectl_core.jobs.needs import refuse_unsupported
    from queuectl_core.storage.capabilities import capabilities, with_fallbacks
    from queuectl_core.testing.memory import MemoryStorage

    class Plain(MemoryStorage):
        declare_resources = None  # type: ignore[assignment]  # a protocol member set to None is not provided

    storage = Plain()
    assert "ResourceNeeds" not in capabilities(storage)
    with pytest.raises(ValidationError, match="cannot hold jobs with 'needs'"):
        enqueue_with_fresh_ids(storage, [NewJob("g", "true", 0, needs={"gpu": 1})], {"g"})
    with pytest.raises(ValidationError, match="cannot hold jobs with 'needs'"):
        batches = [[NewJob("g", "true", 0, needs={"gpu": 1})]]
        list(with_fallbacks(storage).enqueue_stream(refuse_unsupported(storage, batches)))
    assert storage.get("g") is None
    assert [j.id for j in enqueue_with_fresh_ids(storage, [NewJob("p", "true", 0)], {"p"})] == ["p"]
    assert with_fallbacks(storage).resource_usage().pools == ()


# -- --burst: jobs whose needs this worker can never meet are left behind ----------------------
def test_a_burst_worker_without_a_gpu_runs_the_rest_and_leaves_a_gpu_job(qb: Any) -> None:
    qb.run("enqueue", "--id", "gpu", "--needs", "gpu=1", "--cmd", "true")
    qb.run("enqueue", "--id", "a", "--cmd", "true")
    qb.run("enqueue", "--id", "b", "--cmd", "true")
    began = time.monotonic()
    result = qb.run("worker", "start", "--burst", timeout=10)
    assert time.monotonic() - began < 10
    assert qb.job("a")["state"] == "completed" and qb.job("b")["state"] == "completed"
    assert qb.job("gpu")["state"] == "pending"
    assert "stopped: burst; 1 job left that needs what this worker lacks" in result.stdout + result.stderr


def test_a_burst_worker_leaves_a_job_needing_more_than_a_pools_capacity(qb: Any) -> None:
    qb.run("resource", "set", "license", "--capacity", "2")
    qb.run("enqueue", "--id", "big", "--needs", "license=3", "--cmd", "true")
    qb.run("enqueue", "--id", "small", "--needs", "license=2", "--cmd", "true")
    qb.run("worker", "start", "--burst", "--resources", "license=5", timeout=10)  # the pool, not its own, counts
    assert qb.job("small")["state"] == "completed"
    assert qb.job("big")["state"] == "pending"


def test_a_burst_worker_with_one_gpu_runs_the_one_gpu_job_and_leaves_the_two_gpu_one(qb: Any) -> None:
    qb.run("enqueue", "--id", "gpu", "--needs", "gpu=1", "--cmd", "true")
    qb.run("enqueue", "--id", "gpus", "--needs", "gpu=2", "--cmd", "true")
    qb.run("worker", "start", "--burst", "--resources", "gpu=0", timeout=10)
    assert qb.job("gpu")["state"] == "completed"
    assert qb.job("gpus")["state"] == "pending"
