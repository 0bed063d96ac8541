"""Shared fixtures: every test gets its own QUEUECTL_HOME and drives real `queuectl` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# The shared helpers assert too: rewritten like the tests, whichever test module imports them first.
pytest.register_assert_rewrite("process_helpers")

QUEUECTL = [sys.executable, "-m", "queuectl_core"]


class Q:
    """Runs `queuectl` as a real process against one isolated QUEUECTL_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
        self.env["QUEUECTL_HOME"] = str(home)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*QUEUECTL, *args], input=input, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"queuectl {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def job(self, job_id: str) -> dict[str, Any]:
        jobs = {j["id"]: j for j in self.json("list")}
        return jobs[job_id]

    def counts(self) -> dict[str, int]:
        return self.json("status")["counts"]

    def config(self, key: str, value: Any) -> None:
        self.run("config", "set", key, str(value))

    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`queuectl worker start ARGS` in a new session, as a terminal's foreground job would be
        in its own process group: ``os.killpg(proc.pid, SIGINT)`` is Ctrl+C."""
        proc = subprocess.Popen([*QUEUECTL, "worker", "start", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**self.env, **(env or {})},
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05,
                 what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def wait_state(self, job_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait_for(lambda: (j := self.job(job_id))["state"] == state and j, timeout,
                             what=f"job {job_id} to be {state}")

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.communicate(timeout=10)
            except Exception:
                pass


@pytest.fixture
def q(tmp_path: Path) -> Any:
    home = tmp_path / "home"
    home.mkdir()
    helper = Q(home)
    helper.config("poll_interval_ms", 50)  # keep idle waits short in tests
    yield helper
    helper.cleanup()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process code never touches the real per-user directory."""
    monkeypatch.setenv("QUEUECTL_HOME", str(tmp_path / "inproc-home"))
    for key in list(os.environ):
        if key.startswith("QUEUECTL_") and key != "QUEUECTL_HOME":
            monkeypatch.delenv(key)


@pytest.fixture(params=["sqlite", "postgres"])
def qb(request: Any, q: Q) -> Iterator[Q]:
    """The `q` helper on each storage backend (PostgreSQL: a temporary database of its own)."""
    if request.param == "sqlite":
        yield q
        return
    from queuectl_plugins.postgres_testing import temporary_postgres_database

    with temporary_postgres_database() as dsn:
        q.config("storage", "postgres")
        q.config("postgres.dsn", dsn)
        try:
            yield q
        finally:
            q.cleanup()  # workers gone before the database is dropped


@pytest.fixture
def dash(q: Q) -> Iterator[Any]:
    """Start dashboards (test_dashboard.Dash: a `queuectl dashboard` process and an HTTP client) on
    this test's queue; each is stopped afterwards."""
    from test_dashboard import Dash

    running: list[Dash] = []

    def start(*args: str, **kw: Any) -> Dash:
        d = Dash(q, *args, **kw)
        running.append(d)
        return d

    yield start
    for d in running:
        d.close()
