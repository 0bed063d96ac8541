"""The `claimed` event goes out once the job has started, so a slow event plugin never holds a job
up; it still comes before the attempt's result, exactly once, whatever the executor reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Waits (at most 10 s) in its `claimed` handler for the job to have started.
WAITS = '''
import os
import time

from queuectl_core.api import hookimpl


@hookimpl
def queuectl_job_event(event):
    if event.kind not in ("claimed", "completed", "dead"):
        return
    seen = ""
    if event.kind == "claimed":
        deadline = time.monotonic() + 10
        while not os.path.exists({marker!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = " running" if os.path.exists({marker!r}) else " not running"
    with open({log!r}, "a") as fh:
        fh.write(f"{{event.kind}} {{event.job.id}}{{seen}}\\n")
'''

# A third party's executor that never calls ctx.on_spawn (nor ctx.tick).
SILENT = '''
import subprocess
import time

from queuectl_core.api import AttemptResult, hookimpl


class Silent:
    def run(self, job, ctx):
        start = time.monotonic()
        code = subprocess.run(["/bin/sh", "-c", job.command]).returncode
        return AttemptResult(exit_code=code, error=None if code == 0 else f"exit {code}",
                             duration=time.monotonic() - start)


@hookimpl
def queuectl_register_executors(register):
    register("silent", lambda config: Silent())
'''


def _install(site: Path, name: str, source: str) -> None:
    """As pip installs a plugin: the module, then the dist-info with its entry point."""
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(source)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[queuectl]\n{name} = {name}\n")


@pytest.mark.parametrize("slots", [[], ["--slots", "2"]], ids=["one slot", "slots"])
def test_a_slow_claimed_handler_does_not_hold_the_job_up(q: Any, tmp_path: Path, slots: list[str]) -> None:
    marker, log = tmp_path / "started", tmp_path / "events.log"
    _install(tmp_path / "site", "waits", WAITS.format(marker=str(marker), log=str(log)))
    q.env["PYTHONPATH"] = str(tmp_path / "site")
    q.run("enqueue", "--id", "j1", "--cmd", f"touch {marker}")
    q.run("worker", "start", "--burst", *slots, timeout=60)
    assert log.read_text().splitlines() == ["claimed j1 running", "completed j1"]


def test_claimed_comes_first_from_an_executor_that_never_reports_its_spawn(q: Any, tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    _install(tmp_path / "site", "waits", WAITS.format(marker=str(tmp_path), log=str(log)))
    _install(tmp_path / "site", "silentexec", SILENT)
    q.env["PYTHONPATH"] = str(tmp_path / "site")
    q.run("config", "set", "executor", "silent")
    q.run("enqueue", "--id", "ok", "--cmd", "true")
    q.run("enqueue", "--id", "bad", "--cmd", "exit 3", "--max-retries", "0")
    q.run("worker", "start", "--burst", timeout=60)
    lines = log.read_text().splitlines()
    assert sorted(lines) == ["claimed bad running", "claimed ok running", "completed ok", "dead bad"]
    assert lines.index("claimed ok running") < lines.index("completed ok")
    assert lines.index("claimed bad running") < lines.index("dead bad")
