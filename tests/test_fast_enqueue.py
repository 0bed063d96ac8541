"""The click-free `queuectl enqueue` (queuectl_core.fast_enqueue) stores what the click command
stores and fails as it fails, for every form it takes; what it does not take goes to click."""

from __future__ import annotations

import functools
import os
import select
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import QUEUECTL, Q

from queuectl_core.models import WorkerInfo
from queuectl_plugins.sqlite_storage import SQLiteStorage

# Each form runs in both homes, in this order (so "p1" exists for --after, and "p1" again clashes).
GOOD = [
    ["--cmd", "true"],
    ["--id", "p1", "--cmd", "echo a b", "--max-retries", "5", "--priority", "-3", "--timeout", "30s",
     "--queue", "q1", "--tag", "t1", "--tag", "t2", "--env", "A=1", "--env", "HOME", "--retry-on", "1,75"],
    ["--cmd=sleep 1", "--delay", "5m", "--unique-key", "k", "--no-retry-on", "2"],
    ["--cmd", "true", "--run-at", "2030-01-01T00:00:00Z", "--cwd", "/tmp", "--after", "p1"],
    ['{"command": "x", "priority": 2, "tags": ["a"], "env": {"B": "2"}}', "--tag", "t3"],
    ["--", '{"id": "j9", "command": "y", "run_at": "2031-05-01T10:00:00Z"}'],
]
BAD = [
    ["--cmd", ""],
    ["--cmd", "true", "--priority", "x"],
    ["echo hello"],
    ["{not json"],
    ["--cmd", "true", "--delay", "5m", "--run-at", "2030-01-01T00:00:00Z"],
    ["--cmd", "true", "--cwd", "/nonexistent-dir-for-queuectl"],
    ['{"command": "x", "bogus": 1}'],
    ["--cmd", "true", "--id", "p1"],
    ["--cmd", "true", "--tag", "bad tag"],
    ["--cmd", "true", "--env", "QUEUECTL_TEST_NOT_SET_ANYWHERE"],
    ["--cmd", "true", "--queue", "bad queue!"],
    ["--id", "za", "--cmd", "true", "--after", "nope"],
    ["--cmd", "true", "--delay", "soon"],
    ["--bogus", "x"],
    [],
    ["--cmd"],
    ["--cmd", "true", '{"command": "y"}'],
]
# What the fast path never imports: click and pluggy (the full start), and typing and threading
# (~3.5 ms of every enqueue together, measured with farm-bench against the same path importing them;
# docs/operations.md, "Start-up").
LEFT_OUT = {"click", "pluggy", "typing", "threading"}
# With only queuectl's own plugins: the settings schema and pathlib (~2.5 ms together; the config
# is the values the start-up index recorded: fast_enqueue._prepare).
LEFT_OUT |= {"queuectl_core.settings", "pathlib"}
if sys.version_info < (3, 12):  # deferred there (queuectl_core.deferred_import); 3.12's dataclasses use it
    LEFT_OUT.add("inspect")
# What differs between two enqueues of one form, run a moment apart in two homes.
VOLATILE = ("created_at", "updated_at")


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@functools.cache
def _at_start_up() -> frozenset[str]:
    """What this interpreter imports before any code runs (an editable install's finder imports
    pathlib, for one): no enqueue can leave that out."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=True)
    return frozenset(_imported(done.stderr))


def _unneeded(imported: set[str]) -> set[str]:
    return imported & LEFT_OUT - _at_start_up()


def _stored(q: Q, job_id: str) -> dict[str, Any]:
    job = q.job(job_id)
    out = {k: v for k, v in job.items() if k not in VOLATILE}
    if job["run_at"] == job["created_at"]:
        out["run_at"] = "at once"
    elif job["command"] == "sleep 1":
        out.pop("run_at")  # --delay 5m: from each run's own clock
    return out


def test_fast_and_full_enqueue_store_the_same_jobs_and_fail_alike(tmp_path: Path) -> None:
    fast, full = Q(tmp_path / "fast"), Q(tmp_path / "full")
    # A set QUEUECTL_DISABLE_PLUGINS (even empty, blocking nothing) always takes the full path.
    full.env["QUEUECTL_DISABLE_PLUGINS"] = ""
    fast.run("enqueue", "--id", "prime", "--cmd", "true")  # a full start writes the start-up index
    full.run("enqueue", "--id", "prime", "--cmd", "true")
    assert (fast.home / ".startup-index.json").exists()
    for args in GOOD:
        a = fast.run("enqueue", *args, env={"PYTHONPROFILEIMPORTTIME": "1"})
        imported = _imported(a.stderr)
        assert "queuectl_core.fast_enqueue" in imported and not _unneeded(imported), (args, _unneeded(imported))
        b = full.run("enqueue", *args)
        if args[:2] == ["--id", "p1"] or args[0] == "--":
            assert a.stdout == b.stdout
        a_job, b_job = _stored(fast, a.stdout.strip()), _stored(full, b.stdout.strip())
        a_job.pop("id"), b_job.pop("id")
        assert a_job == b_job, args
    before = [(j["id"], j["state"]) for j in fast.json("list")]
    for args in BAD:
        a = fast.run("enqueue", *args, check=False)
        b = full.run("enqueue", *args, check=False)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), args
        assert a.returncode != 0 and a.stderr.startswith("Error:") and a.stderr.count("\n") == 1, (args, a.stderr)
    assert [(j["id"], j["state"]) for j in fast.json("list")] == before  # bad input changed nothing


@pytest.mark.parametrize("change", ["config", "env"])
def test_a_changed_config_or_override_is_read_at_once(q: Q, change: str) -> None:
    """config.toml and QUEUECTL_* values reach the very next click-free enqueue; a bad override is
    refused with the full path's words."""
    q.run("enqueue", "--cmd", "true")
    if change == "config":
        q.config("max_retries", 7)
        env: dict[str, str] = {}
    else:
        env = {"QUEUECTL_MAX_RETRIES": "7"}
    job_id = q.run("enqueue", "--cmd", "true", env=env).stdout.strip()
    assert q.job(job_id)["max_retries"] == 7
    job_id = q.run("enqueue", "--cmd", "true", env=env).stdout.strip()  # from the index it rewrote
    assert q.job(job_id)["max_retries"] == 7
    bad = q.run("enqueue", "--cmd", "true", env={"QUEUECTL_MAX_RETRIES": "-1"}, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: environment variable QUEUECTL_MAX_RETRIES")


def test_an_enqueue_on_either_backend_imports_only_what_it_needs(qb: Q) -> None:
    """After a full start, `queuectl enqueue` on SQLite or PostgreSQL imports neither LEFT_OUT nor
    psycopg (~115 ms: PostgreSQL goes through the light libpq client, queuectl_plugins.postgres_lite)."""
    qb.run("enqueue", "--cmd", "true")
    a = qb.run("enqueue", "--cmd", "true", env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = _imported(a.stderr)
    assert "queuectl_core.fast_enqueue" in imported
    assert not _unneeded(imported) and "psycopg" not in imported, (_unneeded(imported), "psycopg" in imported)
    assert qb.counts().get("pending") == 2


def test_an_enqueue_wakes_the_idle_workers_on_its_host(q: Q) -> None:
    """A `queuectl enqueue` process nudges each idle SQLite worker on its host with one datagram
    (it need not wait for their poll); here the worker's side is an in-process storage."""
    q.run("enqueue", "--cmd", "true")  # creates the database; a full start writes the index
    worker = SQLiteStorage(q.home / "queue.db")
    try:
        now = datetime.now(UTC)
        worker.register_worker(WorkerInfo(id="w1", hostname=os.uname().nodename, pid=os.getpid(),
                                          started_at=now, last_seen=now))
        wake = worker._wake_sock
        assert wake is not None and select.select([wake], [], [], 0)[0] == []
        q.run("enqueue", "--cmd", "true")  # the click-free path
        assert select.select([wake], [], [], 10)[0] == [wake]
        assert wake.recv(64) == b"!"
    finally:
        worker.close()


def test_an_enqueue_ends_as_python_does_while_something_waits_for_the_end(q: Q, tmp_path: Path) -> None:
    """The click-free enqueue may end its process without the interpreter's teardown, but never
    while a profiler or an atexit handler (here a sitecustomize's) waits for that end."""
    site, profile, marker = tmp_path / "site", tmp_path / "enqueue.prof", tmp_path / "atexit-ran"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import atexit\natexit.register(lambda: open({str(marker)!r}, 'a').write('ran\\n'))\n")
    env = {**q.env, "PYTHONPATH": str(site), "PYTHONPROFILEIMPORTTIME": "1"}
    for _ in range(2):  # the first run writes the start-up index; the second takes the click-free path
        profile.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "queuectl_core",
                               "enqueue", "--cmd", "true"], env=env, capture_output=True, text=True, check=True)
    imported = _imported(proc.stderr)
    assert "queuectl_core.fast_enqueue" in imported and "click" not in imported
    assert profile.stat().st_size > 0
    assert marker.read_text() == "ran\nran\n"


def test_a_home_spelt_another_way_is_not_given_values_recorded_for_the_first(tmp_path: Path) -> None:
    """The index records the config's values for QUEUECTL_HOME as spelt when it was written (a
    default is a path inside it): the same directory named otherwise, here relative to another
    working directory, resolves them afresh, and the job lands in the one database."""
    home = tmp_path / "q"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    # The installed executable: `python -m` puts the working directory on sys.path, which the
    # start-up index is checked against.
    executable = str(Path(sys.executable).with_name("queuectl"))

    def enqueue(cwd: Path, spelt: str, job_id: str) -> set[str]:
        done = subprocess.run([executable, "enqueue", "--id", job_id, "--cmd", "true"],
                              cwd=cwd, env={**env, "QUEUECTL_HOME": spelt, "PYTHONPROFILEIMPORTTIME": "1"},
                              capture_output=True, text=True, timeout=60, check=True)
        assert done.stdout == f"{job_id}\n"
        return _imported(done.stderr)

    enqueue(tmp_path, "q", "a")  # a full start writes the index
    assert "queuectl_core.fast_enqueue" in enqueue(tmp_path, "q", "b")
    imported = enqueue(home, ".", "c")  # the same home, and still click-free
    assert "queuectl_core.fast_enqueue" in imported and "click" not in imported
    assert not (home / "q").exists()  # not q/q/queue.db: the recorded sqlite.path was relative
    assert sorted(j["id"] for j in Q(home).json("list")) == ["a", "b", "c"]


def test_an_override_no_enqueue_reads_keeps_the_recorded_values(q: Q) -> None:
    """A QUEUECTL_* value for a key that neither core nor the storage nor a notifier reads (the
    dashboard's token, exported in a shell profile) does not cost the enqueue its recorded
    values; one for a key it reads does, and is obeyed."""
    token = {"QUEUECTL_DASHBOARD_TOKEN": "s3cret"}
    q.run("enqueue", "--cmd", "true", env=token)  # a full start validates it (the index keeps a digest)
    a = q.run("enqueue", "--cmd", "true", env={**token, "PYTHONPROFILEIMPORTTIME": "1"})
    imported = _imported(a.stderr)
    assert "queuectl_core.fast_enqueue" in imported and not _unneeded(imported), _unneeded(imported)
    retries = {"QUEUECTL_MAX_RETRIES": "6"}
    q.run("enqueue", "--cmd", "true", env=retries)
    b = q.run("enqueue", "--cmd", "true", env={**retries, "PYTHONPROFILEIMPORTTIME": "1"})
    assert "queuectl_core.fast_enqueue" in _imported(b.stderr) and "click" not in _imported(b.stderr)
    assert q.job(b.stdout.strip())["max_retries"] == 6


def test_an_sqlite_path_is_read_as_a_path(q: Q, tmp_path: Path) -> None:
    """sqlite.path is a path, on both ways in: a trailing slash names the file before it (as
    it always did), and a `~` that cannot be expanded when the enqueue runs (no HOME, no passwd
    entry) is refused with the full start's words, never created as a directory named `~`."""
    q.config("sqlite.path", f"{tmp_path}/data/queue.db/")
    q.run("enqueue", "--id", "full", "--cmd", "true")
    q.run("enqueue", "--id", "fast", "--cmd", "true")
    assert (tmp_path / "data" / "queue.db").is_file()
    assert sorted(j["id"] for j in q.json("list")) == ["fast", "full"]

    # A stand-in for a user without a passwd entry: getpwuid fails while the variable is set.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os, pwd\n"
                                           "if os.environ.get('QUEUECTL_TEST_NO_PASSWD'):\n"
                                           "    def _missing(uid): raise KeyError(uid)\n"
                                           "    pwd.getpwuid = _missing\n")
    user = tmp_path / "user"
    user.mkdir()
    env = {**q.env, "PYTHONPATH": str(site), "HOME": str(user)}
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def enqueue(job_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*QUEUECTL, "enqueue", "--id", job_id, "--cmd", "true"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    q.config("sqlite.path", "~/q.db")
    assert enqueue("home1", env).returncode == 0  # a full start: the index is written
    assert enqueue("home2", env).returncode == 0
    assert (user / "q.db").is_file()
    lost = {k: v for k, v in env.items() if k != "HOME"} | {"QUEUECTL_TEST_NO_PASSWD": "1"}
    refused = enqueue("nohome", lost)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("Error: ") and "sqlite.path" in refused.stderr and refused.stderr.count("\n") == 1
    assert not (cwd / "~").exists()


def test_an_edited_checkout_of_queuectl_is_noticed(q: Q, tmp_path: Path) -> None:
    """The index records core's defaults; a checkout of queuectl edited in place (an editable
    install: neither the version nor sys.path changes) has its new defaults read at once."""
    import queuectl_core

    site = tmp_path / "site"
    shutil.copytree(Path(queuectl_core.__file__).parent, site / "queuectl_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**q.env, "PYTHONPATH": str(site)}

    def enqueue() -> str:  # from tmp_path: `python -m` puts the working directory first on sys.path
        done = subprocess.run([*QUEUECTL, "enqueue", "--cmd", "true"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60, check=True, stdin=subprocess.DEVNULL)
        return q.job(done.stdout.strip())["max_retries"]

    assert [enqueue(), enqueue()] == [3, 3]  # a full start writes the index; then the click-free path
    settings = site / "queuectl_core" / "settings.py"
    text = settings.read_text()
    assert 'Setting("max_retries", int, 3,' in text
    settings.write_text(text.replace('Setting("max_retries", int, 3,', 'Setting("max_retries", int, 55,'))
    assert [enqueue(), enqueue()] == [55, 55]  # the full start that notices; the click-free path again
