"""`queuectl bench`: small sizes run quickly on both backends, print every figure, and leave the
user's queue (and the machine) as they were."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SMALL = ("--enqueue-processes", "2", "--file-jobs", "20", "--drain-jobs", "10", "--latency-samples", "2")

FIGURES = [
    r"floors: process start `python -c pass` [\d.]+ ms",
    r"`xargs -P2 sh -c true` [\d,]+ jobs/s",
    r"spawning a job directly p50 [\d.]+ ms back to back, [\d.]+ ms from idle \(20 ms, as W4\)",
    r"W1 one `queuectl enqueue --cmd true` process per job: [\d.]+ jobs/s \(median [\d.]+ ms over 2\); "
    r"framework floor [\d.]+ ms, interleaved: [\d.]+x the floor \(target <= 1.15x\)",
    r"W2 `enqueue --file`, 20 JSON Lines: [\d,]+ jobs/s .*peak RSS \d+ MiB\); [\d.]+ of the storage alone",
    r"W3 drain 10 `true`, 2 workers: [\d,]+ jobs/s \([\d.]+ of `xargs -P2 sh -c true`",
    r"W3 drain 10 `true`, 1 worker --slots 2: [\d,]+ jobs/s \([\d.]+ of `xargs -P2 sh -c true`",
    r"W4 idle worker -> job start, in-process enqueue: p50 [\d.]+ ms, p95 [\d.]+ ms, n=2 \(direct spawn from idle p50 [\d.]+ ms\)",
]


def _user_queue(q: Any) -> tuple[Any, Any]:
    return q.json("list"), q.json("status")["counts"]


def _bench(q: Any, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    proc = q.run("bench", *SMALL, *args, env={"TMPDIR": str(scratch), **(env or {})}, timeout=240)
    assert list(scratch.iterdir()) == [], "bench left its throw-away queues behind"
    return proc


def test_bench_sqlite_prints_every_figure_and_leaves_the_users_queue_alone(q: Any, tmp_path: Path) -> None:
    # The user's database is somewhere of their choosing, and named in the environment as well:
    # neither may reach the throw-away queue.
    db = tmp_path / "mine" / "queue.db"
    db.parent.mkdir()
    q.config("sqlite.path", db)
    q.run("enqueue", "--id", "mine", "--cmd", "echo mine")
    before = _user_queue(q)
    config_before = (q.home / "config.toml").read_bytes()

    out = _bench(q, tmp_path, "--workers", "2", "--slots", "2", env={"QUEUECTL_SQLITE_PATH": str(db)}).stdout
    for figure in FIGURES:
        assert re.search(figure, out), f"missing {figure!r} in:\n{out}"
    assert "storage sqlite" in out
    assert _user_queue(q) == before
    assert (q.home / "config.toml").read_bytes() == config_before
    assert sorted(p.name for p in db.parent.iterdir() if not p.name.startswith("queue.db")) == []


def test_bench_json_and_sizes(q: Any, tmp_path: Path) -> None:
    out = _bench(q, tmp_path, "--workers", "1", "--workers", "2", "--latency-samples", "0", "--json").stdout
    result = json.loads(out)
    assert result["storage"] == "sqlite"
    assert set(result) >= {"floors", "w1", "w2", "w3"} and "w4" not in result
    assert result["w1"]["processes"] == 2 and result["w1"]["jobs_per_s"] > 0
    assert result["w1"]["framework_floor_ms"] > 0 and result["w1"]["ratio"] > 0
    assert result["w2"]["jobs"] == 20
    assert [w["workers"] for w in result["w3"]] == [1, 2]
    assert set(result["floors"]["xargs_jobs_per_s"]) == {"1", "2"}
    assert q.json("list") == []


def test_bench_refuses_a_storage_it_cannot_make_throw_away(q: Any, tmp_path: Path) -> None:
    plugin = tmp_path / "plug"
    plugin.mkdir()
    (plugin / "memstore.py").write_text(
        "from queuectl_core import hookimpl\n"
        "@hookimpl\n"
        "def queuectl_register_storages(register):\n"
        "    register('mem', lambda config: None)\n")
    (plugin / "memstore-1.0.dist-info").mkdir()
    (plugin / "memstore-1.0.dist-info" / "entry_points.txt").write_text("[queuectl]\nmem = memstore\n")
    env = {"PYTHONPATH": str(plugin)}
    q.run("config", "set", "storage", "mem", env=env)
    proc = q.run("bench", *SMALL, env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: queuectl bench can make a throw-away queue only on the postgres, sqlite")
    assert proc.stdout == ""


@pytest.fixture
def pq(q: Any) -> Any:
    from queuectl_plugins.postgres_testing import temporary_postgres_database

    with temporary_postgres_database() as dsn:
        q.config("storage", "postgres")
        q.config("postgres.dsn", dsn)
        q.pg_dsn = dsn
        yield q


def _schemas(dsn: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' "
                            "AND nspname <> 'information_schema' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def test_bench_postgres_uses_a_temporary_schema(pq: Any, tmp_path: Path) -> None:
    pq.run("enqueue", "--id", "mine", "--cmd", "echo mine")
    before = _user_queue(pq)
    schemas = _schemas(pq.pg_dsn)
    assert "queuectl" in schemas

    out = _bench(pq, tmp_path, "--workers", "2", "--slots", "2").stdout
    for figure in FIGURES:
        assert re.search(figure, out), f"missing {figure!r} in:\n{out}"
    assert "storage postgres" in out
    assert _user_queue(pq) == before
    assert _schemas(pq.pg_dsn) == schemas


def test_recording_a_result_with_the_next_claim_writes_fewer_pages(tmp_path: Path) -> None:
    """bench/storage_cost.py runs, and shows what a worker's one commit a job saves on SQLite:
    fewer WAL pages than a claim and a result committed apart (exact counts, not timings)."""
    script = Path(__file__).resolve().parent.parent / "bench" / "storage_cost.py"
    proc = subprocess.run([sys.executable, str(script), "--jobs", "50"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"WAL pages written a job: ([\d.]+) with claim \+ apply \(two commits\), ([\d.]+) with"
                      r" apply_and_claim \(one commit\)", proc.stdout)
    assert found, proc.stdout
    apart, together = float(found[1]), float(found[2])
    assert together < 0.75 * apart, proc.stdout
    assert "jobs_state" in proc.stdout and "the rest" in proc.stdout


def test_the_framework_floor_inserts_one_row(tmp_path: Path) -> None:
    """bench/framework_floor.py, W1's floor, runs alone and does what it says: one row, one id."""
    import sqlite3

    script = Path(__file__).resolve().parent.parent / "bench" / "framework_floor.py"
    env = {**os.environ, "QUEUECTL_HOME": str(tmp_path)}
    for _ in range(2):
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(tmp_path / "floor.db") as db:
        assert db.execute("SELECT count(*) FROM floor_jobs").fetchone() == (2,)
