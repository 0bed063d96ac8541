"""Limits with real processes, on SQLite and PostgreSQL: a job over its memory limit or CPU time is
stopped (its whole tree) and fails with the reason in words, retried as any failure; the job's own
limits, its queue's defaults and the config's, and where `show` says each came from; bad values
refused whole; the upgrade from the schema before limits."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

PY = shlex.quote(sys.executable)
MIB = 1024 * 1024


def allocate(mib: int, then: str = "import time; time.sleep(60)") -> str:
    """A Python process holding ``mib`` MiB really touched (resident), then sleeping."""
    return PY + " -c " + shlex.quote(f"b = b'x' * ({mib} * 1024 * 1024)\n{then}")


BUSY = PY + " -c " + shlex.quote("while True: pass")
# A shell forking two children of 80 MiB each: each under 120M, together over it.
TWO_CHILDREN = f"{allocate(80)} & {allocate(80)} & wait"
MEMORY_REASON = re.compile(r"exceeded memory limit (\d+M) \(peak (\d+(?:\.\d)?)M\)\Z")


def attempts(q: Any, job_id: str) -> list[dict[str, Any]]:
    return q.json("show", job_id)["attempts"]  # type: ignore[no-any-return]


def _cgroup_available() -> bool:
    from queuectl_plugins.subprocess_executor.limits import LimitEnforcer

    return LimitEnforcer("cgroup").mechanism() != "procfs"


def test_over_its_limits_a_job_is_stopped_with_the_reason_and_retried_as_any_failure(qb: Any) -> None:
    q = qb
    jobs = [{"id": "mem", "command": allocate(300), "memory": 100 * MIB, "max_retries": 1},
            {"id": "cpu", "command": BUSY, "cpu_time": 1, "max_retries": 0},
            {"id": "sleeper", "command": "sleep 3", "cpu_time": 1, "max_retries": 0},
            {"id": "group", "command": TWO_CHILDREN, "memory": 120 * MIB, "max_retries": 0},
            {"id": "roomy", "command": allocate(50, "pass"), "memory": 1024**3, "cpu_time": 60, "max_retries": 0}]
    q.run("enqueue", "--file", "-", input=json.dumps(jobs))
    worker = q.run("worker", "start", "--burst", "--slots", "3", timeout=180)

    mem = q.json("show", "mem")
    assert (mem["state"], len(mem["attempts"])) == ("dead", 2)  # retried once, then dead
    for attempt in mem["attempts"]:
        m = MEMORY_REASON.match(attempt["error"])
        assert m is not None and m.group(1) == "100M", attempt["error"]
        assert float(m.group(2)) > 100 and attempt["signal"] == "SIGKILL"
        assert attempt["duration"] < 30  # stopped, not left to sleep out its minute
    assert MEMORY_REASON.match(mem["last_error"])
    # The worker's log lines are its `failed` and `dead` events, each with the reason.
    assert re.search(r"failed 1/2: mem \(exceeded memory limit 100M \(peak \d+", worker.stdout), worker.stdout
    assert re.search(r"DLQ: mem \(exceeded memory limit 100M \(peak \d+", worker.stdout), worker.stdout

    listed = {j["id"]: j for j in q.json("list")}
    cpu = listed["cpu"]
    assert (cpu["state"], cpu["last_error"]) == ("dead", "exceeded cpu time 1s") and cpu["last_duration"] < 30
    assert "DLQ: cpu (exceeded cpu time 1s)" in worker.stdout
    sleeper = listed["sleeper"]
    assert sleeper["state"] == "completed" and sleeper["last_duration"] >= 2.9  # sleeping costs no CPU time
    group = listed["group"]
    assert MEMORY_REASON.match(group["last_error"]) and group["last_error"].startswith("exceeded memory limit 120M")
    assert listed["roomy"]["state"] == "completed"

    # `list`: LAST ERROR says it.
    lines = q.run("list", env={"COLUMNS": "200"}).stdout.splitlines()
    assert "exceeded cpu time 1s" in next(line for line in lines if line.startswith("cpu "))
    assert "exceeded memory limit 120M" in next(line for line in lines if line.startswith("group "))


@pytest.mark.parametrize("mechanism", ["procfs", "cgroup"])
def test_each_mechanism_limits_the_whole_tree(q: Any, mechanism: str) -> None:
    """The group of processes, not one: two children of 80 MiB under 120M; CPU time spent by a
    child; with cgroup v2, also a daemon that left the process group (setsid)."""
    if mechanism == "cgroup" and not _cgroup_available():
        pytest.skip("no cgroup v2 hierarchy this user may create cgroups in")
    q.config("subprocess.limits", mechanism)
    q.run("enqueue", "--id", "group", "--memory", "120M", "--max-retries", "0", "--cmd", TWO_CHILDREN)
    q.run("enqueue", "--id", "child-cpu", "--cpu-time", "1s", "--max-retries", "0", "--cmd", f"{BUSY}; true")
    if mechanism == "cgroup":
        q.run("enqueue", "--id", "daemon", "--memory", "100M", "--max-retries", "0",
              "--cmd", f"setsid {allocate(300, 'import time; time.sleep(60)  # daemon-of-test-limits')} & sleep 60")
    q.run("worker", "start", "--burst", "--slots", "3", timeout=180)
    assert attempts(q, "group")[0]["error"].startswith("exceeded memory limit 120M (peak ")
    assert attempts(q, "child-cpu")[0]["error"] == "exceeded cpu time 1s"
    if mechanism == "cgroup":
        [daemon] = attempts(q, "daemon")
        assert daemon["error"].startswith("exceeded memory limit 100M (peak ") and daemon["duration"] < 30
        # Nothing of the job left running: the daemon was in the attempt's cgroup.
        import subprocess

        left = subprocess.run(["pgrep", "-f", "daemon-of-test-limits"], capture_output=True, text=True)
        assert left.stdout.strip() == "", left.stdout


def test_defaults_from_the_queue_and_the_config_the_jobs_own_winning(qb: Any) -> None:
    q = qb
    with open(q.home / "config.toml", "a") as f:
        f.write('\n[job]\nmemory = "2G"\ncpu_time = "10m"\n')
    assert q.run("queue", "set", "small", "--memory", "100M").stdout.strip() == "small: default memory 100M"
    q.run("enqueue", "--id", "own", "--queue", "small", "--memory", "1G", "--cmd", allocate(300, "pass"))
    q.run("enqueue", "--file", "-", input=json.dumps([
        {"id": "queued", "queue": "small", "max_retries": 0, "command": allocate(300)},
        {"id": "later", "queue": "later", "max_retries": 0, "command": BUSY},
        {"id": "unlimited", "queue": "small", "memory": 0, "cpu_time": 0, "command": "true"}]))

    own = q.json("show", "own")
    assert (own["memory"], own["cpu_time"]) == (1024**3, None)  # the job's own, as it would be enqueued again
    assert own["limits"] == {"memory": 1024**3, "cpu_time": 600.0, "from": {"memory": "job", "cpu_time": "config"}}
    text = q.run("show", "queued").stdout
    line = r"^limits +memory 100M \(queue default\), cpu time 10m \(config job\.cpu_time\)$"
    assert re.search(line, text, re.M), text

    # A queue default set after a job was enqueued applies to its attempt: defaults resolve as it starts.
    assert "later: default cpu time 1s" in q.run("queue", "set", "later", "--cpu-time", "1s").stdout
    queues = {x["name"]: x for x in q.json("queue", "list")}
    assert (queues["small"]["memory"], queues["later"]["cpu_time"], queues["later"]["memory"]) == (100 * MIB, 1.0, None)
    q.run("worker", "start", "--burst", "--slots", "4", timeout=180)
    listed = {j["id"]: j for j in q.json("list")}
    assert listed["own"]["state"] == "completed"
    assert listed["queued"]["last_error"].startswith("exceeded memory limit 100M (peak ")
    assert listed["later"]["last_error"] == "exceeded cpu time 1s"
    # A job's 0 means no limit, whatever the defaults.
    assert listed["unlimited"]["state"] == "completed"
    assert q.json("show", "unlimited")["limits"] == {"memory": None, "cpu_time": None, "from": {}}


def test_limits_from_json_files_and_the_python_api(qb: Any) -> None:
    q = qb
    jobs = [{"id": "a", "command": "true", "memory": 512 * MIB, "cpu_time": 90},
            {"id": "b", "command": "true", "memory": "1.5G"}, {"id": "c", "command": "true"}]
    q.run("enqueue", "--file", "-", input="\n".join(map(json.dumps, jobs)))
    shown = {j: q.json("show", j) for j in "abc"}
    assert (shown["a"]["memory"], shown["a"]["cpu_time"]) == (512 * MIB, 90.0)
    assert (shown["b"]["memory"], shown["b"]["cpu_time"]) == (1536 * MIB, None)
    assert (shown["c"]["memory"], shown["c"]["cpu_time"]) == (None, None)
    # A printed job is enqueued again with its own limits (show --json's `limits` is read-only).
    again = {k: v for k, v in shown["a"].items() if k != "id"}
    [copy] = q.run("enqueue", "--file", "-", input=json.dumps(again)).stdout.split()
    assert (q.job(copy)["memory"], q.job(copy)["cpu_time"]) == (512 * MIB, 90.0)
    # `enqueue --each` gives every line's job the flags' limits.
    q.run("enqueue", "--each", "--memory", "64M", "--", "echo", "{}", input="x\ny\n")
    each = [j for j in q.json("list") if j["command"].startswith("echo")]
    assert len(each) == 2 and {j["memory"] for j in each} == {64 * MIB}

    script = ("from datetime import timedelta\nfrom queuectl import Queue\n"
              "with Queue() as queue:\n"
              "    job = queue.enqueue('true', id='api', memory='256M', cpu_time=timedelta(minutes=2))\n"
              "    print(job.memory, job.cpu_time, queue.get('api').memory)\n")
    import subprocess

    out = subprocess.run([sys.executable, "-c", script], env=q.env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(256 * MIB), "120.0", str(256 * MIB)]


BAD = [
    (("enqueue", "--memory", "12X", "--", "true"), "--memory: not a size: '12X'"),
    (("enqueue", "--memory", "-5M", "--", "true"), "--memory: not a size"),
    (("enqueue", "--cpu-time", "soon", "--", "true"), "--cpu-time: not a duration"),
    (("enqueue", '{"command": "true", "memory": "lots"}'), "'memory': not a size"),
    (("enqueue", '{"command": "true", "memory": -1}'), "'memory' must be a number of bytes"),
    (("enqueue", '{"command": "true", "cpu_time": true}'), "'cpu_time' must be a number of seconds"),
    (("queue", "set", "q1", "--concurrency", "2", "--memory", "1Q"), "--memory: not a size"),
    (("queue", "set", "q1", "--cpu-time", "forever"), "--cpu-time: not a duration"),
    (("config", "set", "job.memory", "much"), "not a size"),
    (("queue", "set", "q1", "--memory", "1M", "--concurrency", "-1"), "--concurrency"),
]


def test_bad_values_are_one_line_and_change_nothing(q: Any) -> None:
    for args, message in BAD:
        proc = q.run(*args, check=False)
        assert proc.returncode != 0 and proc.stdout == "", args
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert q.json("list") == [] and q.json("queue", "list") == []
    assert q.run("config", "get", "job.memory").stdout.strip() in ("", '""')


def test_sizes_and_where_limits_come_from() -> None:
    from queuectl_core.jobs.limits import Limits, effective, format_size, parse_size

    assert [parse_size(t) for t in ("1048576", "512K", "100M", "1.5G", "2T", "100MiB", "64mb")] == [
        MIB, 512 * 1024, 100 * MIB, 1536 * MIB, 2 * 1024**4, 100 * MIB, 64 * MIB]
    for bad in ("", "M", "1.5.5G", "-1M", "1e3M", "10P"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert [format_size(n) for n in (256 * MIB, 1536 * MIB, 301 * MIB + 5, 512)] == ["256M", "1.5G", "301M", "512B"]
    job, queue, config = Limits(None, 5.0), Limits(100, 1.0), Limits(200, 2.0)
    assert effective(job, queue, config) == (Limits(100, 5.0), {"memory": "queue", "cpu_time": "job"})
    assert effective(Limits(0, None), None, config) == (Limits(None, 2.0), {"cpu_time": "config"})


# -- the upgrade from the schema just before limits ----------------------------------------------
def _limits_migration(migrations: tuple[str, ...]) -> int:
    """The number of the limits migration (wherever the merge put it)."""
    return next(n for n, m in enumerate(migrations, 1) if "ADD COLUMN memory" in m)


def _check_upgraded(storage: Any) -> None:
    from queuectl_core.jobs.limits import Limits
    from queuectl_core.jobs.models import NewJob

    old = storage.get("old")
    assert old is not None and (old.memory, old.cpu_time) == (None, None)
    assert storage.queue_limits() == {}
    storage.set_queue_limits("default", memory=100 * MIB)
    storage.set_queue_limits("default", cpu_time=3.0)  # the other value kept
    assert storage.queue_limits() == {"default": Limits(100 * MIB, 3.0)}
    [new] = storage.enqueue([NewJob("new", "true", 0, memory=5 * MIB, cpu_time=1.5)])
    assert (new.memory, new.cpu_time) == (5 * MIB, 1.5)
    stored = storage.get("new")
    assert (stored.memory, stored.cpu_time) == (5 * MIB, 1.5)
    storage.set_queue_limits("default", memory=0, cpu_time=0)
    assert storage.queue_limits() == {}


def test_sqlite_upgrade_to_limits(tmp_path: Path) -> None:
    from test_migrations import sqlite_schema_at

    from queuectl_plugins.sqlite_storage import MIGRATIONS, SQLiteStorage

    db = tmp_path / "queue.db"
    conn = sqlite_schema_at(db, _limits_migration(MIGRATIONS) - 1)
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                 " run_at, queue) VALUES ('old', 'true', 'pending', 0, 3, 0, 1, 1, 1, 'default')")
    conn.close()
    storage = SQLiteStorage(db)
    try:
        _check_upgraded(storage)
    finally:
        storage.close()


def test_postgres_upgrade_to_limits() -> None:
    import psycopg

    from queuectl_plugins.postgres_storage.store import MIGRATIONS, PostgresStorage
    from queuectl_plugins.postgres_testing import postgres_schema_at, temporary_postgres_database

    with temporary_postgres_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            postgres_schema_at(conn, _limits_migration(MIGRATIONS) - 1)
            conn.execute("INSERT INTO queuectl.jobs (id, command, state, max_retries)"
                         " VALUES ('old', 'true', 'pending', 3)")
        storage = PostgresStorage(dsn)
        try:
            _check_upgraded(storage)
        finally:
            storage.close()


def test_memory_storage_keeps_limits() -> None:
    from queuectl_core.testing.memory import MemoryStorage

    storage = MemoryStorage()
    from queuectl_core.jobs.models import NewJob

    storage.enqueue([NewJob("old", "true", 0)])
    _check_upgraded(storage)


def test_a_peak_just_over_the_limit_never_reads_as_the_limit() -> None:
    from queuectl_core.jobs.limits import _peak_size

    # A polled peak a few KiB over 100M used to read "exceeded memory limit 100M (peak 100M)".
    assert _peak_size(100 * MIB + 5000, 100 * MIB) == "100.1M"
    assert _peak_size(164 * MIB, 100 * MIB) == "164M"
    assert _peak_size(90 * MIB, 100 * MIB) == "90M"


def _limited_batch(n: int) -> list[Any]:
    """Jobs whose limits and needs vary within one batch: every third has a memory limit, every
    fifth a CPU time and a GPU, the rest nothing."""
    from queuectl_core.jobs.models import NewJob

    return [NewJob(f"j{i}", "true", 0, memory=(i + 1) * 1024 * 1024 if i % 3 == 0 else None,
                   cpu_time=1.5 if i % 5 == 0 else None, needs={"gpu": 1} if i % 5 == 0 else None)
            for i in range(n)]


def _check_limited(storage: Any, n: int) -> None:
    for i in (0, 1, 3, 5, 15, n - 1):
        job = storage.get(f"j{i}")
        assert job.memory == ((i + 1) * 1024 * 1024 if i % 3 == 0 else None), i
        assert job.cpu_time == (1.5 if i % 5 == 0 else None) and job.needs == ({"gpu": 1} if i % 5 == 0 else {}), i


def test_limits_and_needs_are_written_by_the_insert_with_no_update_after_it(tmp_path: Path) -> None:
    """A bulk load of jobs with limits and needs is one INSERT, not an UPDATE a job after it (on
    PostgreSQL each such UPDATE left a dead row version and dead index entries)."""
    from queuectl_plugins.postgres_storage.store import _COPY_FROM, PostgresStorage
    from queuectl_plugins.postgres_testing import temporary_postgres_database
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    storage = SQLiteStorage(tmp_path / "q.db")
    try:
        from queuectl_core.jobs.models import NewJob

        storage.enqueue([NewJob("first", "true", 0)])  # the file and its schema exist; now count a batch's statements
        statements: list[str] = []
        storage.conn.set_trace_callback(statements.append)
        storage.enqueue(_limited_batch(300))
        assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE JOBS")], statements
        _check_limited(storage, 300)
    finally:
        storage.close()
    with temporary_postgres_database() as dsn:
        pg = PostgresStorage(dsn)
        try:
            pg.enqueue(_limited_batch(20))  # one statement of arrays
            _check_limited(pg, 20)
            from queuectl_core.jobs.models import JobState

            pg.delete([f"j{i}" for i in range(20)], [JobState.PENDING])
            pg.enqueue(_limited_batch(_COPY_FROM + 5))  # a large batch: COPY
            _check_limited(pg, _COPY_FROM + 5)
        finally:
            pg.close()
