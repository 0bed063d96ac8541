"""Subprocess executor: each attempt runs ``sh -c COMMAND`` in its own session and process group,
its stdout and stderr handed to the worker as they come (``RunContext.on_chunk``), which stores them.

Where the storage keeps no output (or with ``subprocess.log_file = always``) they also go to one
bounded log file per attempt, this executor's own: ``ID.N.log`` in ``subprocess.log_dir`` on the
worker's host.
Core finds and deletes them only through the executor (``attempt_log`` and ``discard_logs``, the
optional ``queuectl_core.control.joblogs.AttemptLogs`` capability)."""

from __future__ import annotations

import errno
import os
import re
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from queuectl_core.framework.settings import LIBPQ_SECRET_ENV, make_private_dirs

if TYPE_CHECKING:
    from queuectl_core.interfaces import RunContext
    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.records import AttemptResult

    from .limits import Limiter

TAIL_FOR_STORAGE = 4096
_LOG_NAME = re.compile(r"(.+)\.(\d+)\.log\Z")


def log_name(job_id: str, attempt: int) -> str:
    return f"{job_id}.{attempt}.log"


class BoundedLog:
    """Keeps the first ``limit // 2`` bytes on disk as they come and the last ``limit // 2`` in
    memory, so neither the disk nor memory grows with a job that prints gigabytes. With no
    ``path`` (the storage keeps the output, ``subprocess.log_file = auto``) it writes no file and
    keeps only the last few KiB, for the job's stored tail.

    A failing disk (full, unwritable, gone) never fails the job: output then stays in memory only,
    and the stored tail says why the file is short."""

    def __init__(self, path: Path | None, limit: int) -> None:
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
        # O_NOFOLLOW: a symlink planted at the log path must not make the worker write through it
        # (the open fails, and the output stays in memory with the reason in the stored tail).
        # 0600, and tightened if the file existed: a job's output is its owner's alone.
        assert self.path is not None  # write() opens only a log that has a path
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # A symlink where this attempt's log goes: replace the link (never its target) with
            # the log; O_EXCL fails rather than follow one planted again in between.
            os.unlink(self.path)
            self.fd = os.open(self.path, flags | os.O_EXCL, 0o600)
        os.fchmod(self.fd, 0o600)

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self.recent = (self.recent + data)[-TAIL_FOR_STORAGE:]
        if self.path is None:
            return
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


def job_environment(base: Mapping[str, str], hidden: frozenset[str]) -> dict[str, str]:
    """What every job of this worker inherits: ``base`` without the ``hidden`` names
    (``Config.secret_env_vars``: a job is not meant to reach the queue's database as the worker
    does; a job that needs a secret is given it explicitly, with ``--env`` or in its command)."""
    return {k: v for k, v in base.items() if k not in hidden}


def private_dir(path: Path) -> None:
    """Create ``path`` 0700 whatever the umask, and tighten it if it exists: job logs hold
    commands' output, which is their owner's alone. Missing parents (the home, with the queue
    elsewhere) are made 0700 too; existing ones keep their mode."""
    make_private_dirs(path)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


class _Attempt:
    """One running attempt: its process group, the pipe carrying its output, and the loop that
    waits for its exit while renewing the lease, enforcing the timeout and honouring a stop."""

    def __init__(self, proc: Any, read_fd: int, log: BoundedLog, job: Job, ctx: RunContext,
                 kill_grace: float, started: float, limiter: Limiter | None = None, poll: float = 0.2) -> None:
        self.proc = proc
        self.pgid = proc.pid
        self.r = read_fd
        self.log = log
        self.ctx = ctx
        self.kill_grace = kill_grace
        self.timeout = job.timeout
        self.deadline = started + job.timeout if job.timeout else None
        self.next_tick = started + ctx.tick_interval
        self.error: str | None = None
        self.aborted = False
        self.pipe_open = True
        self.kill_at: float | None = None  # SIGKILL the group at this time if it is still alive
        self._reported: bytes | None = None  # the output last handed to ctx.on_output
        self.reaped = False
        self.usage: Any = None  # the leader's resource usage (os.wait4), once reaped
        # A process started from the worker keeps, as its own peak memory, the peak of the
        # worker's address space that exec replaced (Linux: exec_mmap keeps the larger): a peak
        # at or below the worker's own tells nothing about the job. See usage_of.
        self.rss_floor = _own_peak_rss()
        # Linux: a pidfd is readable when the process exits. Elsewhere, poll for the exit.
        self.pidfd = os.pidfd_open(proc.pid) if hasattr(os, "pidfd_open") else None
        os.set_blocking(read_fd, False)
        # -- limits: checked every `poll` seconds; the limit exceeded, once it is --
        self.limiter, self.poll = limiter, poll
        self.next_check = started + poll
        self.exceeded: str | None = None

    def drain(self) -> None:
        # At most 1 MiB per call, so a job writing faster than we read cannot starve the
        # heartbeat, the timeout or a second Ctrl+C.
        for _ in range(16):
            if not self.pipe_open:
                return
            try:
                data = os.read(self.r, 65536)
            except BlockingIOError:
                return
            if not data:
                self.pipe_open = False
                return
            self.log.write(data)
            self.ctx.on_chunk(data)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _terminate(self, now: float) -> None:
        import signal

        self.signal_group(signal.SIGTERM)
        self.kill_at = now + self.kill_grace

    def _wait_ready(self) -> list[int]:
        """Sleep until output, the exit, a wake-up, or the next thing due (tick, timeout, kill)."""
        import select

        now = time.monotonic()
        wake = self.next_tick
        if self.deadline is not None and self.error is None:
            wake = min(wake, self.deadline)
        if self.kill_at is not None:
            wake = min(wake, self.kill_at)
        if self.limiter is not None and self.exceeded is None:
            wake = min(wake, self.next_check)
        fds = [self.pidfd] if self.pidfd is not None else []
        if self.pidfd is None:
            wake = min(wake, now + 0.005)
        if self.pipe_open:
            fds.append(self.r)
        if self.ctx.wakeup_fd is not None:
            fds.append(self.ctx.wakeup_fd)
        # poll, not select: a worker with many slots holds descriptors beyond select's 1024.
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return [fd for fd, _ in poller.poll(max(0.0, wake - now) * 1000)]

    def _exited(self, ready: list[int]) -> bool:
        if self.pidfd is not None:
            return self.pidfd in ready
        return self._reap(os.WNOHANG)

    def _reap(self, options: int = 0) -> bool:
        """Reap the leader with wait4, the one call that also returns what it and every
        descendant it waited for used (Popen's wait would discard that); whether it is reaped."""
        if self.reaped:
            return True
        try:
            pid, status, usage = os.wait4(self.proc.pid, options)
        except ChildProcessError:  # reaped already, through Popen: its status is kept, not its usage
            self.proc.wait()
            self.reaped = True
            return True
        if pid == 0:
            return False  # WNOHANG, still running
        self.usage, self.reaped = usage, True
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
        return True

    def _on_time(self, ready: list[int]) -> None:
        """Renew the lease, time out, escalate to SIGKILL: whichever is due."""
        import signal

        now = time.monotonic()
        if self.ctx.wakeup_fd in ready or now >= self.next_tick:
            self.next_tick = now + self.ctx.tick_interval
            if self.log.path is not None and self.log.recent is not self._reported:
                self._reported = self.log.recent
                self.ctx.on_output(str(self.log.path), self.log.recent.decode("utf-8", "replace"))
            if self.ctx.tick() and self.kill_at is None:
                self.aborted = True
                self._terminate(now)
        if self.deadline is not None and self.error is None and now >= self.deadline:
            self.error = f"timed out after {self.timeout:g}s"
            self._terminate(now)
        if self.kill_at is not None and now >= self.kill_at:
            self.signal_group(signal.SIGKILL)
            self.kill_at = now + 3600  # nothing more to escalate to; wait for the exit

    def _check_limits(self) -> None:
        """Poll the limits when due; over one, the whole tree is killed at once (no grace: memory
        must be freed now, and CPU time is spent)."""
        import signal

        if self.limiter is None or self.exceeded is not None:
            return
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + self.poll
        exceeded = self.limiter.check()
        if exceeded is not None:
            self.exceeded = exceeded
            self.signal_group(signal.SIGKILL)
            self.limiter.kill()

    def supervise(self) -> int:
        """Run the attempt to its end and return its exit status; the group is reaped either way."""
        import signal

        try:
            while True:
                ready = self._wait_ready()
                if self.r in ready:
                    self.drain()
                if self._exited(ready):
                    break
                self._on_time(ready)
                self._check_limits()
            # The leader has exited but is not reaped, so its group id cannot be reused yet:
            # collect what is already in the pipe, then take down anything it left running.
            self.drain()
            self.signal_group(signal.SIGKILL)
            if self.limiter is not None:
                self.limiter.kill()  # and, in a cgroup, whatever left the group (a daemon)
            self._reap()
        except BaseException:
            # The executor itself failed (say, the log cannot be written): the worker records a
            # failed attempt, so the job must not run on unsupervised, nor be left unreaped.
            self.signal_group(signal.SIGKILL)
            if self.limiter is not None:
                self.limiter.kill()
            self._reap()
            raise
        finally:
            if self.pidfd is not None:
                os.close(self.pidfd)
            os.close(self.r)
            self.ctx.on_reaped(self.pgid)
        return int(self.proc.returncode)


def _own_peak_rss() -> int:
    """This process's peak resident memory, in bytes."""
    import resource

    return _rss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _rss_bytes(maxrss: int) -> int:
    # ru_maxrss is in KiB on Linux and the BSDs, in bytes on macOS.
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def usage_of(usage: Any, rss_floor: int) -> tuple[float | None, int | None]:
    """(CPU seconds, peak resident bytes) from the leader's wait4 rusage: user + system time, and
    the largest peak of any one process, of the leader and every descendant it waited for. The
    peak is None when it is no larger than ``rss_floor`` (the worker's own peak when the job was
    started): the leader inherits that figure at exec, so a smaller job cannot be told from it."""
    if usage is None:
        return None, None
    rss = _rss_bytes(usage.ru_maxrss)
    return usage.ru_utime + usage.ru_stime, rss if rss > rss_floor else None


class SubprocessExecutor:
    def __init__(self, log_dir: Path, max_log_bytes: int, kill_grace: float, shell: str,
                 direct_exec: bool = True, hidden_env: frozenset[str] = LIBPQ_SECRET_ENV,
                 limits: str = "auto", limits_poll: float = 0.2, log_file: str = "auto") -> None:
        self.log_dir = log_dir
        self.log_file = log_file
        self.max_log_bytes = max_log_bytes
        self.kill_grace = kill_grace
        self.shell = shell
        self.direct_exec = direct_exec
        self.hidden_env = hidden_env
        self._made_dir = False
        self._base_env: dict[bytes, bytes] | None = None  # filtered once: the worker's env does not change
        from .limits import LimitEnforcer

        self.limits = LimitEnforcer(limits)  # -- limits: how memory and cpu_time are enforced --
        self.limits_poll = limits_poll

    def _prepare_log_dir(self) -> None:
        if not self._made_dir:
            try:
                private_dir(self.log_dir)
                self._made_dir = True
            except OSError:
                pass  # BoundedLog reports it; the job still runs, its output kept in memory

    def _env(self, job: Job, attempt: int) -> dict[bytes, bytes]:
        # As bytes: Popen encodes every str name and value of the environment for each job (~80
        # os.fsencode calls a job here), and the worker's own part never changes.
        if self._base_env is None:
            self._base_env = {os.fsencode(k): os.fsencode(v)
                              for k, v in job_environment(os.environ, self.hidden_env).items()}
        env = {**self._base_env, b"QUEUECTL_JOB_ID": os.fsencode(job.id), b"QUEUECTL_ATTEMPT": b"%d" % attempt}
        for k, v in job.env.items():
            env[os.fsencode(k)] = os.fsencode(v)
        return env

    def _spawn(self, command: str, out_fd: int, env: dict[bytes, bytes], cwd: str | None = None,
               preexec: Callable[[], None] | None = None) -> Any:
        """Start the command in its own session; raises OSError when not even the shell starts."""
        import subprocess

        shell_argv = [self.shell, "-c", command]
        # Only in place of the default shell: a chosen shell may be wanted for its start-up (BASH_ENV).
        direct = direct_argv(command) if self.direct_exec and self.shell == "/bin/sh" else None
        if direct is not None and cwd is not None and not direct[0].startswith("/"):
            direct = None  # a relative ./script is the job's directory's: leave it to the shell there
        options: dict[str, Any] = dict(stdin=subprocess.DEVNULL, stdout=out_fd, stderr=out_fd,
                                       start_new_session=True, env=env, cwd=cwd)
        if preexec is not None:
            options["preexec_fn"] = preexec  # joins the attempt's cgroup before exec
        if direct is not None:
            try:
                return subprocess.Popen(direct, **options)
            except OSError:
                pass  # a script without a #! line (ENOEXEC) and the like: sh knows what to do with it
        return subprocess.Popen(shell_argv, **options)

    def run(self, job: Job, ctx: RunContext) -> AttemptResult:
        from queuectl_core.jobs.records import AttemptResult

        # A file of its own only where nothing else keeps the output (or log_file = always):
        # writing each attempt's output twice, to the storage and to a file, cost a drain of
        # jobs printing 100 KB each 13-21 % of its speed (bench/NOTES.md).
        log_path: Path | None = None
        if self.log_file == "always" or not ctx.output_kept:
            self._prepare_log_dir()
            log_path = self.log_dir / log_name(job.id, ctx.attempt)
        log = BoundedLog(log_path, self.max_log_bytes)
        started = time.monotonic()
        if job.cwd is not None and not os.path.isdir(job.cwd):
            # Checked here, not left to Popen: its error would blame the shell, not the directory.
            return AttemptResult(exit_code=None, error=f"working directory {job.cwd} does not exist on this host",
                                 log_path=None, duration=0.0)
        limiter: Limiter | None = None
        if job.memory or job.cpu_time:
            try:
                limiter = self.limits.for_attempt(f"queuectl-{os.getpid()}-{job.id}-{ctx.attempt}",
                                                  job.memory, job.cpu_time)
            except OSError as exc:
                return AttemptResult(exit_code=None, error=f"cannot enforce its limits here: {exc.strerror or exc}",
                                     log_path=None, duration=0.0)
        try:
            return self._run_limited(job, ctx, log, log_path, started, limiter)
        finally:
            if limiter is not None:
                limiter.close()

    def _run_limited(self, job: Job, ctx: RunContext, log: BoundedLog, log_path: Path | None, started: float,
                     limiter: Limiter | None) -> AttemptResult:
        from queuectl_core.jobs.records import AttemptResult

        r, w = os.pipe()
        try:
            proc = self._spawn(job.command, w, self._env(job, ctx.attempt), job.cwd,
                               limiter.preexec() if limiter is not None else None)
        except OSError as exc:
            os.close(r)
            return AttemptResult(exit_code=None, error=f"cannot start {self.shell}: {exc.strerror or exc}",
                                 log_path=None, duration=time.monotonic() - started)
        finally:
            os.close(w)
        if limiter is not None:
            limiter.started(proc.pid)
        ctx.on_spawn(proc.pid)
        attempt = _Attempt(proc, r, log, job, ctx, self.kill_grace, started, limiter, self.limits_poll)
        try:
            returncode = attempt.supervise()
        finally:
            tail = log.close()
            if log.error:  # the output is kept by the storage all the same: say there why the file is not
                ctx.on_chunk(log.error.encode())
        error = attempt.error
        if error is None and not attempt.aborted:
            error = describe_exit(returncode)
        cpu_seconds, max_rss_bytes = usage_of(attempt.usage, attempt.rss_floor)
        exceeded = peak = None
        if limiter is not None and not attempt.aborted:
            verdict = limiter.verdict(returncode, cpu_seconds)
            exceeded, peak = verdict.exceeded, verdict.peak_memory
            if verdict.peak_is_tree:
                max_rss_bytes = peak  # the whole tree's, from the cgroup (memory.peak)
            elif peak is not None and peak > (max_rss_bytes or 0):
                max_rss_bytes = peak  # the tree's polled sum: a process killed unwaited-for is in no rusage
            if verdict.cpu_seconds is not None and verdict.cpu_seconds > (cpu_seconds or 0.0):
                cpu_seconds = verdict.cpu_seconds
        return AttemptResult(
            exit_code=returncode,
            error=error,
            log_path=str(log_path) if log_path is not None else None,
            output_tail=tail,
            duration=time.monotonic() - started,
            aborted=attempt.aborted,
            cpu_seconds=cpu_seconds,
            max_rss_bytes=max_rss_bytes,
            exceeded=exceeded,
            peak_memory=peak,
        )


    # -- the AttemptLogs capability: core's `logs`, `remove`, `purge` and retention ----------------
    def attempt_log(self, job: Job, attempt: int) -> str | None:
        # Beside the job's last recorded log, if it has one: log_dir may have changed since it ran.
        where = os.path.dirname(job.log_path) if job.log_path else str(self.log_dir)
        return os.path.join(where, log_name(job.id, attempt))

    def discard_logs(self, jobs: Iterable[tuple[str, str | None]]) -> int:
        # Every attempt's file, in the job's recorded directory and in log_dir: one directory
        # listing however many jobs (retention deletes them 10,000 at a time).
        by_dir: dict[str, set[str]] = {}
        for job_id, log_path in jobs:
            dirs = {str(self.log_dir)}
            if log_path:
                dirs.add(os.path.dirname(log_path))
            for where in dirs:
                by_dir.setdefault(where, set()).add(job_id)
        gone = 0
        for where, ids in by_dir.items():
            try:
                names = os.listdir(where)
            except OSError:
                continue
            for name in names:
                m = _LOG_NAME.match(name)
                if m and m.group(1) in ids:
                    try:
                        os.unlink(os.path.join(where, name))
                        gone += 1
                    except OSError:
                        pass
        return gone
