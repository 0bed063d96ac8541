"""queuectl-jsonl-events: append every queuectl job event to a JSON Lines file.

One line per event, for example::

    {"kind": "completed", "time": "2026-01-10T10:35:00.123Z", "worker_id": "worker-10293",
     "job": {"id": "job1", "command": "echo Hello", "state": "completed", ...},
     "exit_code": 0, "error": null, "message": null}

The file is ``events.jsonl`` in QUEUECTL_HOME unless ``jsonl_events.path`` says otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from queuectl_core.api import JobEvent, Setting, hookimpl

__version__ = "0.1.0"


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting("jsonl_events.path", str, lambda home: str(home / "events.jsonl"),
                     "The JSON Lines file every job event is appended to."))


@hookimpl
def queuectl_job_event(event: JobEvent) -> None:
    if event.config is None:  # emitted outside a configured queue: nowhere to write
        return
    record = {
        "kind": str(event.kind),
        "time": event.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "worker_id": event.worker_id,
        "job": event.job.to_dict() if event.job is not None else None,
        "exit_code": event.result.exit_code if event.result is not None else None,
        "error": event.result.error if event.result is not None else None,
        "message": event.message,
    }
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    path = Path(event.config["jsonl_events.path"]).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND and one write per line: lines from several worker processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
