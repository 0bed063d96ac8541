"""A worker with several slots on third parties' plugins that do only the minimum: a storage with
only the Storage protocol's required methods (none of the optional capabilities: ``claim_many``,
``apply_batch``, ``apply_and_claim``, ``cancel_requests``), and an executor that never reports its
spawn. Core's fallbacks stand in for the capabilities, and every promise holds: jobs overlap, each is
recorded exactly once with its own log, a failed job is retried then buried, and a cancel stops only
its own job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from process_helpers import SILENT_EXECUTOR, install_plugin

MINIMAL = '''
from pathlib import Path

from queuectl_core.api import hookimpl
from queuectl_plugins.sqlite_storage import SQLiteStorage

OPTIONAL = {"claim_many", "apply_batch", "apply_and_claim", "cancel_requests", "enqueue_stream"}


class Minimal:
    """SQLite, seen through the Storage protocol's required methods only."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name in OPTIONAL:
            raise AttributeError(name)
        return getattr(self._inner, name)


@hookimpl
def queuectl_register_storages(register):
    register("minimal", lambda config: Minimal(SQLiteStorage(Path(config["sqlite.path"]))))
'''


def _enqueue_overlapping(q: Any, tmp_path: Path, echo: str = "") -> None:
    """Three 1-second jobs that each write when they started and ended (span0..2)."""
    for i in range(3):
        q.run("enqueue", "--id", f"j{i}", "--cmd",
              f"s=$(date +%s.%N); sleep 1; {echo}echo $s $(date +%s.%N) > {tmp_path}/span{i}")


def _burst_ends(proc: Any) -> None:
    try:
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ran_at_once_and_once(q: Any, tmp_path: Path) -> None:
    spans = [tuple(float(x) for x in (tmp_path / f"span{i}").read_text().split()) for i in range(3)]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # every one started before any ended
    for i in range(3):
        job = q.job(f"j{i}")
        assert (job["state"], job["attempts"]) == ("completed", 1), job


def test_several_slots_drain_a_storage_without_the_optional_capabilities(q: Any, tmp_path: Path) -> None:
    q.env["PYTHONPATH"] = str(install_plugin(tmp_path / "site", "minimalstore", MINIMAL))
    q.run("config", "set", "storage", "minimal")
    q.config("backoff_base", 0.1)
    _enqueue_overlapping(q, tmp_path, echo="echo out $QUEUECTL_JOB_ID; ")
    q.run("enqueue", "--id", "flaky", "--max-retries", "2", "--cmd", 'test "$QUEUECTL_ATTEMPT" -ge 2')
    q.run("enqueue", "--id", "bad", "--max-retries", "1", "--cmd", "exit 3")
    q.run("enqueue", "--id", "stuck", "--cmd", f"touch {tmp_path}/stuck.started; sleep 60")
    proc = q.start_worker("--slots", "4", "--burst")
    q.wait_for(lambda: (tmp_path / "stuck.started").exists() or proc.poll() is not None, timeout=60,
               what="the stuck job to start")
    q.run("cancel", "stuck")
    _burst_ends(proc)
    _ran_at_once_and_once(q, tmp_path)
    for i in range(3):
        assert q.run("logs", f"j{i}").stdout == f"out j{i}\n"
    states = {j["id"]: (j["state"], j["attempts"]) for j in q.json("list", "--all")}
    assert states["flaky"] == ("completed", 2), states
    assert states["bad"] == ("dead", 2), states
    assert states["stuck"] == ("cancelled", 1), states


def test_slots_run_with_an_executor_that_never_reports_its_spawn(q: Any, tmp_path: Path) -> None:
    # An idle --slots worker lets its first claimed job start before it uses storage again,
    # waiting for the executor's on_spawn; an executor that never calls it still gets every job
    # run at once and recorded exactly once.
    q.env["PYTHONPATH"] = str(install_plugin(tmp_path / "site", "silentexec", SILENT_EXECUTOR))
    q.run("config", "set", "executor", "silent")
    _enqueue_overlapping(q, tmp_path)
    q.run("enqueue", "--id", "bad", "--cmd", "exit 3", "--max-retries", "0")
    _burst_ends(q.start_worker("--slots", "4", "--burst"))
    _ran_at_once_and_once(q, tmp_path)
    bad = q.job("bad")
    assert (bad["state"], bad["attempts"], bad["last_exit_code"]) == ("dead", 1, 3), bad
