"""A plain worker records a finished job's result and claims the next job in one transaction
(``Storage.apply_and_claim``), as a ``--slots`` worker does: one commit a job instead of two. The
claim made there must be the one a separate claim would have made, and a worker must still stop
claiming when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from process_helpers import install_plugin

COUNTING = '''
from pathlib import Path

from queuectl_core.api import hookimpl
from queuectl_plugins.sqlite_storage import SQLiteStorage

COUNTED = {"claim", "apply", "apply_and_claim"}


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


def test_a_plain_worker_records_each_result_with_the_next_claim(q: Any, tmp_path: Path) -> None:
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
    # Each result written once, by one of the two; most of them with the next claim (a `worker
    # stop` check, every 0.2 s at most, takes its claim on its own).
    assert made.count("apply") + made.count("apply_and_claim") == 20, made
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
