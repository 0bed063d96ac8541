"""A worker records a finished job's result and claims the next job in one transaction
(``Storage.apply_and_claim``), whatever its number of slots: one commit a job instead of two. The
claim made there must be the one a separate claim would have made, and a worker must still stop
claiming when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from process_helpers import install_plugin

from queuectl_plugins.postgres_testing import temporary_postgres_database

COUNTING = '''
from pathlib import Path

from queuectl_core.api import hookimpl
from queuectl_plugins.sqlite_storage import SQLiteStorage

COUNTED = {"claim", "claim_many", "apply", "apply_batch", "apply_and_claim"}


class Counting:
    """SQLite, noting each claim and each write of a result."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        found = getattr(self._inner, name)
        if name not in COUNTED:
            return found

        def call(*args, **kwargs):
            with open(CALLS, "a") as fh:
                fh.write(name + "\\n")
            return found(*args, **kwargs)

        return call


@hookimpl
def queuectl_register_storages(register):
    register("counting", lambda config: Counting(SQLiteStorage(Path(config["sqlite.path"]))))
'''


def test_a_one_slot_worker_records_each_result_with_the_next_claim(q: Any, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    q.env["PYTHONPATH"] = str(install_plugin(tmp_path / "site", "countingstore", f"CALLS = {str(calls)!r}\n" + COUNTING))
    q.run("config", "set", "storage", "counting")
    ran = tmp_path / "ran"
    lines = "".join(json.dumps({"id": f"j{n:02d}", "command": f"echo j{n:02d} >> {ran}"}) + "\n" for n in range(20))
    q.run("enqueue", "--file", "-", input=lines)
    assert q.start_worker("--burst").wait(timeout=60) == 0
    assert ran.read_text().split() == [f"j{n:02d}" for n in range(20)]  # each once, in order
    assert all((j["state"], j["attempts"]) == ("completed", 1) for j in q.json("list", "--all")), q.run("list").stdout
    made = calls.read_text().split()
    # Each result written once; most of them with the next claim (the worker never writes a
    # result and claims apart when it could do both at once).
    assert made.count("apply") + made.count("apply_batch") + made.count("apply_and_claim") == 20, made
    assert made.count("apply_and_claim") >= 10, made


def test_the_claim_made_with_a_result_is_the_one_a_claim_would_make(qb: Any, tmp_path: Path) -> None:
    """Priorities, and dependants released by the result just recorded, hold for that claim."""
    ran = tmp_path / "ran"
    q = qb

    def job(job_id: str, **extra: Any) -> str:
        return json.dumps({"id": job_id, "command": f"echo {job_id} >> {ran}", **extra}) + "\n"

    lines = (job("low", priority=-5) + job("parent", priority=5) + job("child", after=["parent"], priority=1)
             + job("mid") + job("high", priority=3))
    q.run("enqueue", "--file", "-", input=lines)
    assert q.start_worker("--burst").wait(timeout=60) == 0
    # `child` outranks `mid` and `low` once `parent` has completed, in the same transaction.
    assert ran.read_text().split() == ["parent", "high", "child", "mid", "low"]
    assert all((j["state"], j["attempts"]) == ("completed", 1) for j in q.json("list", "--all"))


LOSSY = '''
import time

from queuectl_core.api import StorageError, hookimpl
from queuectl_plugins.postgres_storage.store import PostgresStorage


class Lossy(PostgresStorage):
    """PostgreSQL whose first record-and-claim commits, then loses its reply (noticed 0.5 s later,
    so that the worker's next stop check is due by the retry), while `worker stop` arrives."""

    lost = False

    def _apply_and_claim(self, *args, **kwargs):
        out = super()._apply_and_claim(*args, **kwargs)
        if not Lossy.lost:
            Lossy.lost = True
            self.request_stop()
            time.sleep(0.5)
            raise StorageError("PostgreSQL unavailable: the reply was lost")
        return out


@hookimpl
def queuectl_register_storages(register):
    register("lossy", lambda config: Lossy(config["postgres.dsn"], config["postgres.schema"]))
'''


@pytest.mark.parametrize("slots", [1, 2])
def test_a_claim_whose_reply_was_lost_is_taken_up_not_stranded(q: Any, tmp_path: Path, slots: int) -> None:
    """Results and the next claim committed, the reply lost, and `worker stop` meanwhile: the
    retried write takes up the job it claimed and, as the worker has seen the stop by then, hands it
    back unstarted, rather than leaving it `processing` under a lease nobody renews, to be buried
    unrun when that lease expires. The jobs that were running finish. (A lost reply is
    PostgreSQL's: SQLite knows whether its commit happened.)"""
    with temporary_postgres_database() as dsn:
        q.config("postgres.dsn", dsn)
        q.env["PYTHONPATH"] = str(install_plugin(tmp_path / "site", "lossystore", LOSSY))
        q.run("config", "set", "storage", "lossy")
        q.config("max_retries", 0)
        for n in range(4):
            q.run("enqueue", "--id", f"j{n}", "--cmd", f"echo j{n} >> {tmp_path}/ran")
        proc = q.start_worker("--slots", str(slots))
        try:
            assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
            states = {j["id"]: (j["state"], j["attempts"]) for j in q.json("list", "--all")}
            said = proc.stdout.read() if proc.stdout else ""
        finally:
            q.cleanup()  # the worker gone before its database is dropped
    ran = [f"j{n}" for n in range(slots)]  # what the worker had running when the reply was lost
    assert states == {f"j{n}": ("completed", 1) if n < slots else ("pending", 0) for n in range(4)}, states
    assert sorted((tmp_path / "ran").read_text().split()) == ran
    assert f"released: j{slots} (not started: the worker is stopping; runnable again)" in said, said
