"""Config `worker.host`: the host each worker reports; `status`, `status --json` and the dashboard
group workers by it. Two homes share one queue (one SQLite file, or one PostgreSQL database), as
two machines would, each with its own `worker.host`."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import Q
from test_dashboard import Dash


@pytest.fixture(params=["sqlite", "postgres"])
def two_hosts(request: Any, q: Q, tmp_path: Path) -> Iterator[tuple[Q, Q]]:
    """Two homes on one queue: `q` reports host-a, the other host-b."""
    other = Q(tmp_path / "home-b")
    homes = (q, other)
    try:
        if request.param == "sqlite":
            for h in homes:
                h.config("sqlite.path", tmp_path / "shared.db")
            yield from _configured(homes)
        else:
            from queuectl_plugins.postgres_testing import temporary_postgres_database

            with temporary_postgres_database() as dsn:
                for h in homes:
                    h.config("storage", "postgres")
                    h.config("postgres.dsn", dsn)
                try:
                    yield from _configured(homes)
                finally:
                    for h in homes:
                        h.cleanup()  # workers gone before the database is dropped
    finally:
        other.cleanup()


def _configured(homes: tuple[Q, Q]) -> Iterator[tuple[Q, Q]]:
    for h, name in zip(homes, ("host-a", "host-b")):
        h.config("worker.host", name)
        h.config("poll_interval_ms", 50)
    yield homes


def test_default_is_the_machine_name_and_bad_values_are_refused(q: Q) -> None:
    assert q.run("config", "get", "worker.host").stdout.strip() == socket.gethostname()
    for bad in ("", " padded ", "tab\there", "x" * 256):
        proc = q.run("config", "set", "worker.host", bad, check=False)
        assert proc.returncode == 1 and proc.stderr.startswith("Error: ") and "worker.host" in proc.stderr, bad
    proc = q.run("status", env={"QUEUECTL_WORKER_HOST": ""}, check=False)
    assert proc.returncode == 1 and "QUEUECTL_WORKER_HOST" in proc.stderr


def test_workers_grouped_by_host_in_status_and_the_dashboard(two_hosts: tuple[Q, Q], tmp_path: Path) -> None:
    a, b = two_hosts
    a.start_worker("--count", "2", "--queue", "default")
    b.start_worker("--queue", "on-b")
    workers = a.wait_for(lambda: len(w := a.json("status")["workers"]) == 3 and w, what="three workers")
    assert [w["host"] for w in workers] == ["host-a", "host-a", "host-b"]
    assert [w["host"] for w in b.json("status")["workers"]] == ["host-a", "host-a", "host-b"]
    assert workers[0]["id"] < workers[1]["id"]  # by id within a host

    # A job runs on host-b's worker: its attempt says so.
    a.run("enqueue", "--id", "far", "--queue", "on-b", "--", "sleep", "30")
    a.wait_state("far", "processing")
    assert a.json("show", "far")["attempts"][0]["host"] == "host-b"

    text = a.run("status").stdout
    lines = text[text.index("workers"):].splitlines()
    assert re.fullmatch(r"workers\s+3\s+on 2 hosts", lines[0])
    assert lines[1].split() == ["HOST", "WORKER", "UP", "JOB", "FOR"]
    # The host named once, on its first worker's line; its other workers' lines leave it blank.
    assert lines[2].startswith("host-a ") and lines[3].startswith(" ") and lines[4].startswith("host-b ")
    assert "far" in lines[4] and lines[3].split()[0] == workers[1]["id"]

    d = Dash(b)  # the dashboard of the other home: the same workers, grouped the same way
    try:
        shown = d.get("/api/overview")["workers"]
        assert [(w["host"], w["id"]) for w in shown] == [(w["host"], w["id"]) for w in workers]
        assert shown[2]["job"]["id"] == "far"
    finally:
        d.close()
