"""A job's logs: where an executor keeps them (:class:`AttemptLogs`), and ``queuectl logs``, which
prints one attempt's output: the running one (followed with ``-f``), the last finished one, or an
earlier one.

A storage that keeps every attempt's output (the optional ``AttemptOutput`` capability) is read
first, from any host (:mod:`queuectl_core.control.storedlogs`); what follows is for the rest.
Where an attempt's output is written, what its files are called and how they are deleted is the
executor's business: core asks the configured executor through :class:`AttemptLogs`, an optional
capability. The last few KiB of an attempt are also stored with the job (``output_tail``), which
is what other hosts, and executors that keep no files, show.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, BinaryIO, Iterable, Protocol, runtime_checkable

import click

from queuectl_core.errors import JobNotFoundError, ValidationError

if TYPE_CHECKING:
    from queuectl_core.framework.app import App
    from queuectl_core.jobs.models import Job

LOG_WRITE_FAILED = "[queuectl: cannot write the log file "
FOLLOW_POLL_SECONDS = 0.2  # how often -f looks for new output
STATE_POLL_SECONDS = 0.5  # how often -f asks storage whether the attempt has ended


def _write_failure(tail: str) -> str:
    """The reason from the executor's note, e.g. 'No space left on device'."""
    note = tail[tail.rindex(LOG_WRITE_FAILED):].strip().rstrip("]")
    return note.rpartition(": ")[2] or "writing it failed"


@runtime_checkable
class AttemptLogs(Protocol):
    """An executor that writes each attempt's output to a file on the worker's host (optional).

    ``queuectl logs`` (``-f``, ``--attempt N``) reads those files through ``attempt_log``;
    ``remove``, ``dlq remove``, ``purge`` and the workers' retention delete them through
    ``discard_logs`` once the jobs are deleted. An executor without it keeps no files as far as core
    knows: ``logs`` shows the job's stored tail, and removing a job deletes only its row.
    """

    def attempt_log(self, job: Job, attempt: int) -> str | None:
        """The path of attempt ``attempt``'s (1 is the first) log of ``job`` on this host, or None
        if this executor keeps none for it. The file need not exist: the attempt may have printed
        nothing, not have started yet, or have run on another host."""

    def discard_logs(self, jobs: Iterable[tuple[str, str | None]]) -> int:
        """Delete every attempt's log of these jobs that is on this host; each job is given as
        ``(id, log_path)``, its ``log_path`` as last recorded (None if it never ran). Returns how
        many files were deleted; a file that cannot be deleted is skipped, never an error."""


def attempt_logs(executor: object) -> AttemptLogs | None:
    """``executor`` if it keeps log files (:class:`AttemptLogs`), else None."""
    return executor if isinstance(executor, AttemptLogs) else None


def discard_logs(executor: object, jobs: Iterable[tuple[str, str | None]]) -> int:
    """The executor's :meth:`AttemptLogs.discard_logs` for these jobs; 0 if it keeps no files."""
    logs = attempt_logs(executor)
    return logs.discard_logs(jobs) if logs is not None else 0


def _attempt_path(logs: AttemptLogs | None, job: Job, attempt: int) -> str | None:
    """Where attempt N's log is (or will be) on this host. Without the executor's word, the last
    attempt's recorded ``log_path`` is all core knows."""
    if logs is not None:
        return logs.attempt_log(job, attempt)
    return job.log_path if attempt == job.attempt_number else None


def _last_lines(data: bytes, n: int | None) -> bytes:
    if n is None:
        return data
    if n == 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:])


def _finished_output(job: Job, path: str) -> bytes:
    """A finished attempt's output: the file, or the stored tail when the file is not here or was
    cut short by a failing disk (the note saying so goes to stderr)."""
    tail = job.output_tail or ""
    write_failed = LOG_WRITE_FAILED in tail
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        if tail:
            if write_failed and isinstance(exc, FileNotFoundError):
                why = f"was never written ({_write_failure(tail)})"
            elif isinstance(exc, FileNotFoundError):
                why = "is not on this machine"
            else:
                why = f"cannot be read ({exc.strerror})"
            click.echo(f"(log file {path} {why}; showing the stored tail)", err=True)
            return tail.encode()
        if not isinstance(exc, FileNotFoundError):
            raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
        return b""  # the attempt printed nothing, so no file was ever made
    if write_failed:
        click.echo(f"(log file {path} is incomplete: {_write_failure(tail)}; "
                   f"the last {len(tail.encode())} bytes of output, as stored, follow)", err=True)
        data += b"\n[queuectl: the log file ends here; the stored tail follows]\n" + tail.encode()
    return data


def _worker_host(app: App, job: Job) -> str | None:
    for w in app.storage.live_workers():
        if w.id == job.worker_id:
            return w.hostname
    return None


def show(app: App, job_id: str, *, follow: bool = False, attempt: int | None = None,
         tail_lines: int | None = None) -> int:
    """Print the output; returns the exit status (``-f``: 0 if the job completed, 1 otherwise)."""
    from queuectl_core.jobs.models import JobState

    storage = app.storage
    out = sys.stdout.buffer
    job = storage.get(job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    # Attempts are numbered for good (job.attempt_number: restart, dlq retry and a release never
    # reuse a number); job.attempts counts only those since the last (re)start.
    if attempt is not None and attempt > job.attempt_number:
        raise ValidationError(f"job {job_id!r} has run {job.attempt_number} attempt(s); there is no attempt {attempt}")
    logs = attempt_logs(configured_executor(app))
    if job.attempts == 0 and attempt is None and (follow or job.attempt_number == 0):
        # Nothing since it was (re)started: -f waits for its next attempt; without -f, an earlier
        # run's output is still shown (below) when there was one.
        if not follow:
            extra = "" if job.state != JobState.PENDING else "; `queuectl logs -f` waits for it to start"
            if job.waiting:  # say what it is held by
                extra = f"; it waits on {', '.join(storage.waits_on([job.id]).get(job.id, []))}" + extra
            raise ValidationError(f"job {job_id!r} has not run yet (it is {job.state}{extra})")
        if job.state in (JobState.PENDING, JobState.FAILED):  # not one that will never run
            click.echo(_waiting_line(app, job), err=True)
        job = _wait_for_start(app, job)
        if job.attempts == 0:
            return _closing(job_id, app.storage.get(job_id), 1)  # cancelled or removed before it ever ran
    n = attempt or job.attempt_number
    running = job.state == JobState.PROCESSING and n == job.attempt_number
    stored = _from_storage(app, job, n, running, follow, tail_lines, out)
    if stored is not None:
        return stored
    path = _attempt_path(logs, job, n)
    if not running:
        # Where the attempt's history says its output went (it may be another directory than now).
        recorded = next((a.log_path for a in storage.attempts(job.id) if a.attempt == n and a.log_path), None)
        path = recorded or path
        if n == job.attempt_number:
            data = _finished_output(job, job.log_path or path or "")
        else:
            try:
                with open(path or "", "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                raise ValidationError(f"no log of attempt {n} of {job_id!r} on this host (it printed nothing,"
                                      " ran on another host, or was removed)") from None
            except OSError as exc:
                raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
        out.write(_last_lines(data, tail_lines))
        out.flush()
        return _closing(job_id, job, n) if follow else 0
    return _running(app, job, n, path, follow, tail_lines, out)


def _from_storage(app: App, job: Job, n: int, running: bool, follow: bool, tail_lines: int | None,
                  out: BinaryIO) -> int | None:
    """The attempt's output as the storage keeps it, when it does (``AttemptOutput``); None to
    fall back on the executor's files and the stored tail."""
    from queuectl_core.control import storedlogs
    from queuectl_core.storage.capabilities import attempt_output

    store = attempt_output(app.storage)
    if store is None:
        return None
    if running:
        return storedlogs.running(app, store, job, n, follow, lambda data: _last_lines(data, tail_lines), out,
                                  _closing)
    data = storedlogs.finished(store, job, n)
    if data is None:
        return None
    out.write(_last_lines(data, tail_lines))
    out.flush()
    return _closing(job.id, job, n) if follow else 0


def configured_executor(app: App) -> object:
    """The configured executor, for the logs it keeps; None when it cannot be built here (a
    removed job's files then stay; ``logs`` shows the stored tail)."""
    from queuectl_core.errors import QueuectlError

    try:
        return app.executor
    except QueuectlError:
        return None


def _wait_for_start(app: App, job: Job) -> Job:
    from queuectl_core.jobs.lifecycle import FINISHED_STATES

    while True:
        time.sleep(STATE_POLL_SECONDS)
        now = app.storage.get(job.id)
        if now is None or now.attempts > 0 or now.state in FINISHED_STATES:
            return now if now is not None else job


def _new_part(shown: str, tail: str) -> str:
    """What of ``tail`` (the last few KiB, as of a heartbeat) comes after what was ``shown``."""
    if not shown:
        return tail
    anchor = shown[-256:]
    at = tail.rfind(anchor)
    if at >= 0:
        return tail[at + len(anchor):]
    return "\n[queuectl: some output was not seen here]\n" + tail


def _running(app: App, job: Job, n: int, path: str | None, follow: bool, tail_lines: int | None,
             out: BinaryIO) -> int:
    """The attempt in progress: what it printed so far, and with ``follow`` the rest as it comes.
    Here, from its log file; from another host, as of the worker's last heartbeat (stored tail)."""
    from queuectl_core.jobs.models import JobState

    fh = None
    first = True
    shown_remote = ""
    next_state = 0.0
    current: Job | None = job
    while True:
        if fh is None and path is not None:
            try:
                fh = open(path, "rb")  # noqa: SIM115 - kept open while following
            except OSError:
                fh = None
        remote = (fh is None and current is not None and current.attempt_number == n and bool(current.output_tail)
                  and current.log_path == path)
        if fh is not None:
            data = fh.read()
            if first:
                data = _last_lines(data, tail_lines)
            if data:
                out.write(data)
                out.flush()
        elif remote and current is not None:
            if not shown_remote:
                host = _worker_host(app, current) or "another host"
                click.echo(f"(attempt {n} is running on {host}: its output as of the last heartbeat"
                           f"{'; following' if follow else ''})", err=True)
            new = _new_part(shown_remote, current.output_tail or "")
            shown_remote = current.output_tail or ""
            data = new.encode()
            if data:
                out.write(_last_lines(data, tail_lines) if first else data)
                out.flush()
        first = False
        if not follow:
            break
        now = time.monotonic()
        if now >= next_state:
            next_state = now + STATE_POLL_SECONDS
            current = app.storage.get(job.id)
            if current is None or current.attempt_number != n or current.state != JobState.PROCESSING:
                # The attempt is over: its file is complete (written before the outcome was recorded).
                if fh is not None:
                    out.write(fh.read())
                    fh.close()
                elif current is not None and current.attempt_number == n:
                    final = _finished_output(current, current.log_path or path or "")
                    text = final.decode("utf-8", "replace")
                    out.write(_new_part(shown_remote, text).encode() if shown_remote else final)
                out.flush()
                return _closing(job.id, current, n)
        time.sleep(FOLLOW_POLL_SECONDS)
    if fh is not None:
        fh.close()
    return 0


def _waiting_line(app: App, job: Job) -> str:
    """What ``logs -f`` says, once, while the job has not started: why it has not."""
    from queuectl_core.cli import display

    if job.waiting:
        why = f"it waits on {', '.join(app.storage.waits_on([job.id]).get(job.id, []))}"
    elif job.run_at > app.storage.now():
        moment = app.storage.now()
        why = f"it runs {display.relative(job.run_at, moment)}, at {display.clock(job.run_at, moment)}"
    elif any(q.name == job.queue and q.paused for q in app.storage.queues()):
        why = f"its queue {job.queue} is paused: queuectl queue resume {job.queue}"
    elif not app.storage.live_workers():
        why = "no worker is running: queuectl worker start"
    else:
        why = f"it is {job.state}, waiting for a worker"
    return f"waiting for {job.id} to start ({why})"


def _closing(job_id: str, job: Job | None, n: int) -> int:
    """The one line ``logs -f`` ends with, on stderr, naming how attempt ``n`` ended; the exit
    status: 0 when the job completed, 1 otherwise (a retry ahead included)."""
    from queuectl_core.cli import display
    from queuectl_core.jobs.models import JobState
    from queuectl_core.jobs.timeutil import now

    if job is None:
        click.echo(f"{job_id} removed", err=True)
        return 1
    why = job.last_error or (f"exit {job.last_exit_code}" if job.last_exit_code is not None else "")
    why = f" ({display.one_line(why)})" if why else ""
    if job.attempt_number > n:  # the attempt failed and its retry has already started
        line = f"{job_id} attempt {n} failed; attempt {job.attempt_number} is running (queuectl logs -f {job_id})"
    elif job.state == JobState.COMPLETED:
        line = f"{job_id} completed in {display.duration(job.last_duration or 0.0)}"
    elif job.state == JobState.FAILED:
        moment = now()
        line = f"{job_id} failed{why}, " + (f"retry {display.relative(job.run_at, moment)}" if job.run_at > moment
                                             else "retry due now")
    elif job.state == JobState.DEAD:
        line = f"{job_id} dead{why}"
    elif job.state == JobState.CANCELLED:
        from queuectl_core.jobs.lifecycle import CANCELLED_REASON

        reason = (job.last_error or CANCELLED_REASON).removeprefix(CANCELLED_REASON).lstrip(": ")
        line = f"{job_id} cancelled" + (f" ({display.one_line(reason)})" if reason else "")
    else:  # pending again: its worker stopped before it finished, or it was restarted
        line = f"{job_id} {job.state} again{why}"
    click.echo(line, err=True)
    return 0 if job.state == JobState.COMPLETED and job.attempt_number == n else 1


__all__ = ["LOG_WRITE_FAILED", "AttemptLogs", "attempt_logs", "configured_executor", "discard_logs", "show"]
