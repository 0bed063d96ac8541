"""Subprocess executor: each attempt runs ``sh -c COMMAND`` in its own session and process group,
its stdout and stderr going to one bounded log file per attempt."""

from __future__ import annotations

import os
import re
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from queuectl_core import hookimpl
from queuectl_core.settings import Setting, check_path

if TYPE_CHECKING:
    from queuectl_core.interfaces import RunContext
    from queuectl_core.models import AttemptResult, Job
    from queuectl_core.settings import Config

TAIL_FOR_STORAGE = 4096


class BoundedLog:
    """Keeps the first ``limit // 2`` bytes on disk as they come and the last ``limit // 2`` in
    memory, so neither the disk nor memory grows with a job that prints gigabytes.

    A failing disk (full, unwritable, gone) never fails the job: output then stays in memory only,
    and the stored tail says why the file is short."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.written = 0
        self.total = 0
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.recent = b""  # the last TAIL_FOR_STORAGE bytes, whatever happened to the file
        self.fd: int | None = None
        self.error: str | None = None

    def _disk(self, fn: Callable[[], Any]) -> None:
        if self.error is None:
            try:
                fn()
            except OSError as exc:
                self.error = f"[queuectl: cannot write the log file {self.path}: {exc.strerror or exc}]\n"

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self.recent = (self.recent + data)[-TAIL_FOR_STORAGE:]
        room = self.head_limit - self.written
        if room > 0 and self.error is None:
            if self.fd is None:
                self._disk(self._open)
            head = data[:room]
            self._disk(lambda: os.write(self.fd, head))  # type: ignore[arg-type]
            if self.error is None:
                self.written += len(head)
                data = data[room:]
        if data:
            self.tail.append(data)
            self.tail_size += len(data)
            while self.tail and self.tail_size - len(self.tail[0]) >= self.tail_limit:
                self.tail_size -= len(self.tail.popleft())

    def close(self) -> str:
        """Finish the file; returns the last few KiB of output for storage."""
        tail = b"".join(self.tail)
        if len(tail) > self.tail_limit:
            tail = tail[-self.tail_limit:]
        if tail and self.fd is not None:
            omitted = self.total - self.written - len(tail)
            if omitted > 0:
                self._disk(lambda: os.write(self.fd, f"\n[queuectl: {omitted} bytes of output omitted]\n".encode()))  # type: ignore[arg-type]
            self._disk(lambda: os.write(self.fd, tail))  # type: ignore[arg-type]
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        text = self.recent.decode("utf-8", "replace")
        return text + self.error if self.error else text


def describe_exit(returncode: int) -> str | None:
    """A short, human-readable reason for a non-zero exit."""
    import signal

    if returncode == 0:
        return None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    if returncode == 127:
        return "exit 127: command not found"
    if returncode == 126:
        return "exit 126: command not executable"
    if returncode > 128:
        try:
            import signal as _s

            return f"exit {returncode} (shell reported {_s.Signals(returncode - 128).name})"
        except ValueError:
            pass
    return f"exit {returncode}"


# A command made only of these characters has no quoting, expansion, redirection, globbing or
# operators: `sh -c` would split it on spaces and exec the first word, exactly as we can ourselves.
_PLAIN = re.compile(r"[A-Za-z0-9_./,:+%@-]+( +[A-Za-z0-9_./,:+%@=-]+)*\Z")
# Words sh runs itself rather than from PATH (or that mean something else to it).
_SHELL_WORDS = frozenset(
    "! . : alias bg break builtin case cd command continue do done echo elif else esac eval exec exit export "
    "false fc fg fi for getopts hash if in jobs kill local printf pwd read readonly return set shift source "
    "test then times trap true type ulimit umask unalias unset until wait while".split()
)


_found: dict[str, str] = {}  # command name -> its path on PATH, for direct_argv


def direct_argv(command: str) -> list[str] | None:
    """The argv to exec without a shell, when the command needs none (saving a shell's start-up
    per job); None when it has any shell syntax or starts with a shell builtin or keyword."""
    import shutil

    if not _PLAIN.match(command):
        return None
    argv = command.split()
    if argv[0] in _SHELL_WORDS:
        # `true` and `false` are builtins, but their binaries behave identically.
        if argv[0] not in ("true", "false"):
            return None
    if "/" in argv[0]:
        path: str | None = argv[0]
        if not os.access(argv[0], os.X_OK) or os.path.isdir(argv[0]):
            path = None
    else:
        # A PATH search is a stat per directory, and a worker runs the same few commands over and
        # over. A binary removed since it was found fails at exec, which then falls back to sh.
        path = _found.get(argv[0]) or shutil.which(argv[0])
        if path is not None:
            _found[argv[0]] = path
    if path is None:
        return None  # let the shell say "not found" / "not executable" with its usual exit status
    return [path, *argv[1:]]


class SubprocessExecutor:
    def __init__(self, log_dir: Path, max_log_bytes: int, kill_grace: float, shell: str,
                 direct_exec: bool = True) -> None:
        self.log_dir = log_dir
        self.max_log_bytes = max_log_bytes
        self.kill_grace = kill_grace
        self.shell = shell
        self.direct_exec = direct_exec
        self._made_dir = False

    def run(self, job: Job, ctx: RunContext) -> AttemptResult:
        import select
        import signal
        import subprocess

        from queuectl_core.models import AttemptResult

        if not self._made_dir:
            try:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                self._made_dir = True
            except OSError:
                pass  # BoundedLog reports it; the job still runs, its output kept in memory
        log_path = self.log_dir / f"{job.id}.{ctx.attempt}.log"
        log = BoundedLog(log_path, self.max_log_bytes)
        started = time.monotonic()
        r, w = os.pipe()
        # The job inherits this process's environment plus its id and attempt. Setting them here and
        # passing env=None spares Popen re-encoding the whole environment for every job.
        os.environ["QUEUECTL_JOB_ID"] = job.id
        os.environ["QUEUECTL_ATTEMPT"] = str(ctx.attempt)
        shell_argv = [self.shell, "-c", job.command]
        # Only in place of the default shell: a chosen shell may be wanted for its start-up (BASH_ENV).
        direct = direct_argv(job.command) if self.direct_exec and self.shell == "/bin/sh" else None
        try:
            try:
                proc = subprocess.Popen(direct or shell_argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                                        start_new_session=True)
            except OSError:
                if direct is None:
                    raise
                # A script without a #! line (ENOEXEC) and the like: sh knows what to do with it.
                proc = subprocess.Popen(shell_argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                                        start_new_session=True)
        except OSError as exc:
            os.environ.pop("QUEUECTL_JOB_ID", None)
            os.close(r)
            os.close(w)
            return AttemptResult(exit_code=None, error=f"cannot start {self.shell}: {exc.strerror or exc}",
                                 log_path=None, duration=time.monotonic() - started)
        os.close(w)
        del os.environ["QUEUECTL_JOB_ID"], os.environ["QUEUECTL_ATTEMPT"]
        pgid = proc.pid
        ctx.on_spawn(pgid)
        # Linux: a pidfd is readable when the process exits. Elsewhere, poll for the exit.
        pidfd = os.pidfd_open(proc.pid) if hasattr(os, "pidfd_open") else None
        os.set_blocking(r, False)
        deadline = started + job.timeout if job.timeout else None
        next_tick = started + ctx.tick_interval
        error: str | None = None
        aborted = False
        pipe_open = True
        kill_at: float | None = None  # SIGKILL the group at this time if it is still alive

        def drain() -> bool:
            nonlocal pipe_open
            # At most 1 MiB per call, so a job writing faster than we read cannot starve the
            # heartbeat, the timeout or a second Ctrl+C.
            for _ in range(16):
                if not pipe_open:
                    break
                try:
                    data = os.read(r, 65536)
                except BlockingIOError:
                    return True
                if not data:
                    pipe_open = False
                    return False
                log.write(data)
            return False

        def signal_group(sig: int) -> None:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass

        try:
            while True:
                now = time.monotonic()
                wake = next_tick
                if deadline is not None and error is None:
                    wake = min(wake, deadline)
                if kill_at is not None:
                    wake = min(wake, kill_at)
                fds = [pidfd] if pidfd is not None else []
                if pidfd is None:
                    wake = min(wake, now + 0.005)
                if pipe_open:
                    fds.append(r)
                if ctx.wakeup_fd is not None:
                    fds.append(ctx.wakeup_fd)
                ready, _, _ = select.select(fds, [], [], max(0.0, wake - now))
                if r in ready:
                    drain()
                if (pidfd in ready) if pidfd is not None else proc.poll() is not None:
                    break
                now = time.monotonic()
                if ctx.wakeup_fd in ready or now >= next_tick:
                    next_tick = now + ctx.tick_interval
                    if ctx.tick() and kill_at is None:
                        aborted = True
                        signal_group(signal.SIGTERM)
                        kill_at = now + self.kill_grace
                if deadline is not None and error is None and now >= deadline:
                    error = f"timed out after {job.timeout:g}s"
                    signal_group(signal.SIGTERM)
                    kill_at = now + self.kill_grace
                if kill_at is not None and now >= kill_at:
                    signal_group(signal.SIGKILL)
                    kill_at = now + 3600  # nothing more to escalate to; wait for the exit
            # The leader has exited but is not reaped, so its group id cannot be reused yet:
            # collect what is already in the pipe, then take down anything it left running.
            drain()
            signal_group(signal.SIGKILL)
            proc.wait()
        except BaseException:
            # The executor itself failed (say, the log cannot be written): the worker records a
            # failed attempt, so the job must not run on unsupervised, nor be left unreaped.
            signal_group(signal.SIGKILL)
            proc.wait()
            raise
        finally:
            if pidfd is not None:
                os.close(pidfd)
            os.close(r)
            ctx.on_reaped(pgid)
            tail = log.close()
        returncode = proc.returncode
        if error is None and not aborted:
            error = describe_exit(returncode)
        return AttemptResult(
            exit_code=returncode,
            error=error,
            log_path=str(log_path),
            output_tail=tail,
            duration=time.monotonic() - started,
            aborted=aborted,
        )


def _make(config: Config) -> SubprocessExecutor:
    return SubprocessExecutor(Path(config["subprocess.log_dir"]).expanduser(), config["subprocess.max_log_bytes"],
                              config["subprocess.kill_grace_seconds"], config["subprocess.shell"],
                              config["subprocess.direct_exec"])


@hookimpl
def queuectl_register_executors(register: Callable[[str, Any], None]) -> None:
    register("subprocess", _make)


@hookimpl
def queuectl_register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting("subprocess.log_dir", str, lambda home: str(home / "logs"),
                     "Where each attempt's output is written (default: logs in QUEUECTL_HOME).", validate=check_path))
    register(Setting("subprocess.max_log_bytes", int, 4 * 1024 * 1024,
                     "Most bytes kept per attempt: the first and last halves; the middle is dropped.", minimum=1024))
    register(Setting("subprocess.kill_grace_seconds", float, 5.0,
                     "After SIGTERM (timeout or forced stop), how long before SIGKILL.", minimum=0))
    register(Setting("subprocess.shell", str, "/bin/sh", "The shell that runs each command as `SHELL -c COMMAND`."))
    register(Setting("subprocess.direct_exec", bool, True,
                     "Run a command with no shell syntax (plain words only) directly, without starting a shell."))
