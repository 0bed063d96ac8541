"""The `claimed` event goes out once the job has started, so a slow event plugin never holds a job
up; it still comes before the attempt's result, exactly once, whatever the executor reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from process_helpers import SILENT_EXECUTOR, install_plugin

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

@pytest.mark.parametrize("slots", [[], ["--slots", "2"]], ids=["one slot", "slots"])
def test_a_slow_claimed_handler_does_not_hold_the_job_up(q: Any, tmp_path: Path, slots: list[str]) -> None:
    marker, log = tmp_path / "started", tmp_path / "events.log"
    install_plugin(tmp_path / "site", "waits", WAITS.format(marker=str(marker), log=str(log)))
    q.env["PYTHONPATH"] = str(tmp_path / "site")
    q.run("enqueue", "--id", "j1", "--cmd", f"touch {marker}")
    q.run("worker", "start", "--burst", *slots, timeout=60)
    assert log.read_text().splitlines() == ["claimed j1 running", "completed j1"]


def test_claimed_comes_first_from_an_executor_that_never_reports_its_spawn(q: Any, tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    install_plugin(tmp_path / "site", "waits", WAITS.format(marker=str(tmp_path), log=str(log)))
    install_plugin(tmp_path / "site", "silentexec", SILENT_EXECUTOR)
    q.env["PYTHONPATH"] = str(tmp_path / "site")
    q.run("config", "set", "executor", "silent")
    q.run("enqueue", "--id", "ok", "--cmd", "true")
    q.run("enqueue", "--id", "bad", "--cmd", "exit 3", "--max-retries", "0")
    q.run("worker", "start", "--burst", timeout=60)
    lines = log.read_text().splitlines()
    assert sorted(lines) == ["claimed bad running", "claimed ok running", "completed ok", "dead bad"]
    assert lines.index("claimed ok running") < lines.index("completed ok")
    assert lines.index("claimed bad running") < lines.index("dead bad")
