"""Helpers shared by the tests that drive real worker processes: reading /proc, draining a
worker's output in the background, reading a pseudo-terminal, starting and stopping workers, enqueueing in bulk, and
installing a third party's plugin as pip would.

Not a test module: tests/ has no __init__.py, so pytest puts tests/ on sys.path and the test
files import this as ``from process_helpers import ...``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any


# -- pseudo-terminals ---------------------------------------------------------------------------
def read_until_closed(fd: int) -> bytes:
    """Everything written to a pty's other side until every writer closed it; ``fd`` is closed."""
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(fd)
    return seen


# -- /proc -------------------------------------------------------------------------------------
def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of a process, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"  # pid 1 here may never reap an orphaned zombie


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is in the group (zombies may linger: pid 1 here may not reap)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st[2] == pgid and st[0] != "Z":
                return True
    return False


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``pid``, zombies included."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st[1] == pid:
                found.append((int(entry), st[0]))
    return found


def pid_from(path: Path) -> int | None:
    """The pid a job wrote to ``path``, or None if it has not (yet)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


# -- worker processes --------------------------------------------------------------------------
class Output:
    """Reads a worker's stdout and stderr as they come, so a chatty worker never blocks on a full
    pipe and a test can wait for a log line (e.g. that a signal was handled)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s,), daemon=True)
                         for s in (proc.stdout, proc.stderr)]
        for t in self._threads:
            t.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def count(self, needle: str) -> int:
        return sum(needle in line for line in list(self.lines))

    def text(self) -> str:
        for t in self._threads:
            t.join(timeout=5)
        return "".join(self.lines)


def start(q: Any, *args: str) -> tuple[subprocess.Popen[str], Output]:
    """`queuectl worker start ARGS`, with its output drained in the background."""
    proc = q.start_worker(*args)
    return proc, Output(proc)


def stop(proc: subprocess.Popen[str], out: Output) -> None:
    """SIGTERM a worker (if still running) and assert it exits 0."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, out.text()


# -- jobs --------------------------------------------------------------------------------------
def enqueue_many(q: Any, ids: list[str], command: str) -> None:
    lines = "".join(json.dumps({"id": i, "command": command}) + "\n" for i in ids)
    out = q.run("enqueue", "--file", "-", input=lines).stdout
    assert out.split() == ids


def assert_each_ran_once(q: Any, runs: Path, ids: list[str]) -> None:
    executed = runs.read_text().split()
    assert len(executed) == len(ids), f"{len(executed)} executions for {len(ids)} jobs"
    assert sorted(executed) == sorted(ids)
    jobs = q.json("list")
    assert {j["id"]: (j["state"], j["attempts"]) for j in jobs} == {i: ("completed", 1) for i in ids}


# -- third parties' plugins --------------------------------------------------------------------
def install_plugin(site: Path, name: str, source: str) -> Path:
    """As pip installs a plugin: the module, then the dist-info with its entry point. ``site``
    (created if need be, and returned) goes on PYTHONPATH."""
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(source)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[queuectl]\n{name} = {name}\n")
    return site


# A third party's executor, registered as "silent", that never calls ctx.on_spawn (nor ctx.tick).
SILENT_EXECUTOR = '''
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


class TcpProxy:
    """A loopback TCP proxy the test can cut: a database outage without touching the shared server.

    It also counts round trips: ``turns`` is how many times the client has spoken after the server
    (reset with :meth:`count`); with ``cut_at`` set, every connection is cut as that turn starts,
    before its bytes reach the server."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        self._lock = threading.Lock()
        self._socks: list[Any] = []
        self.turns = 0
        self.cut_at: int | None = None
        self._server_spoke = True
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b, from_client in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, from_client), daemon=True).start()

    def _pump(self, src: Any, dst: Any, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if not self._note(from_client):
                    self.cut()
                    return
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def _note(self, from_client: bool) -> bool:
        """Count a turn when the client speaks after the server; False: cut here."""
        with self._lock:
            if from_client and self._server_spoke:
                self.turns += 1
                if self.cut_at is not None and self.turns >= self.cut_at:
                    return False
            self._server_spoke = not from_client
            return True

    def count(self) -> None:
        """Count round trips from now."""
        with self._lock:
            self.turns = 0
            self._server_spoke = True

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        import socket

        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        import socket

        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def close(self) -> None:
        self.cut()
