"""`queuectl wait`: block until the chosen jobs have finished, from any host, by reading storage."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from queuectl_core.cli.common import JobId, _app, _duration

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job

POLL_SECONDS = 0.3  # between reads of the storage: about three a second, whatever the number of jobs
GET_EACH_UP_TO = 100  # jobs still awaited that are read one by one; more: one read of the unfinished jobs
EXIT_TIMEOUT = 124  # as timeout(1)


@click.command()
@click.argument("job_ids", nargs=-1, type=JobId(), metavar="[JOB_ID]...")
@click.option("--tag", help="The jobs carrying this tag when wait starts, finished ones included.")
@click.option("--queue", help="The jobs in this queue when wait starts, finished ones included.")
@click.option("--all", "all_", is_flag=True, help="Every job not yet finished when wait starts.")
@click.option("--timeout", metavar="DURATION",
              help=f"Give up after this long (seconds, or 90s, 5m, 1h) and exit {EXIT_TIMEOUT}.")
@click.pass_context
def wait(ctx: click.Context, job_ids: tuple[str, ...], tag: str | None, queue: str | None, all_: bool,
         timeout: str | None) -> None:
    """Wait until jobs have finished: completed, dead (out of retries) or cancelled. A job that
    failed with a retry ahead has not finished.

    Choose the jobs one way: JOB_ID... (ids or unique prefixes of ids, finished ones included);
    --tag and/or --queue (the matching jobs that exist when wait starts, finished ones included;
    jobs enqueued later are not waited for); or --all (every job that has not finished when wait
    starts).

    Exit status: 0 when every one completed, 1 when any ended dead or cancelled, 124 when
    --timeout ran out first. On a terminal, one line on stderr shows the progress
    (12/40 finished, 1 dead, 3 running), redrawn in place; otherwise wait prints nothing.
    It reads the storage about three times a second, so it works from any host that reaches it.

    \b
      queuectl wait 1m986kfq                    # one job, by a prefix of its id
      queuectl wait --tag batch1 --timeout 2h && echo all done
      queuectl wait --all
    """
    from queuectl_core.errors import JobNotFoundError
    from queuectl_core.jobs import lifecycle

    if all_ and (job_ids or tag is not None or queue is not None):
        raise click.UsageError("give job ids, --tag/--queue, or --all: only one of them")
    if job_ids and (tag is not None or queue is not None):
        raise click.UsageError("give job ids or --tag/--queue, not both")
    if not (job_ids or all_ or tag is not None or queue is not None):
        raise click.UsageError("say which jobs: JOB_ID..., --tag T, --queue Q, or --all")
    limit = _duration("--timeout", timeout) if timeout is not None else None
    started = time.monotonic()
    storage = _app(ctx).storage
    tally = _Tally(lifecycle.FINISHED_STATES)
    if job_ids:
        for job_id in dict.fromkeys(job_ids):
            job = storage.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            tally.see(job)
    else:
        filters: dict[str, Any] = {"tag": tag, "queue": queue}
        for job in storage.list_jobs(states=lifecycle.UNFINISHED_STATES, **filters):
            tally.see(job)
        if not all_:
            # Listed after the unfinished ones: a job finishing in between is counted twice in
            # the progress line, never missed in the exit status.
            for state in lifecycle.FINISHED_STATES:
                tally.add(state, storage.count_jobs(state, **filters))
    line = _Line(sys.stderr)
    try:
        while True:
            line.show(tally.text())
            if not tally.awaited:
                break
            left = None if limit is None else limit - (time.monotonic() - started)
            if left is not None and left <= 0:
                line.show(tally.text() + f", timed out after {timeout}")
                line.end()
                ctx.exit(EXIT_TIMEOUT)
            time.sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))
            _poll(storage, tally, {"tag": tag, "queue": queue})
    except KeyboardInterrupt:
        line.end()
        ctx.exit(130)
    line.end()
    ctx.exit(1 if tally.failed else 0)


class _Tally:
    """What wait has seen: the jobs still awaited (their last state) and how the others ended."""

    def __init__(self, finished: tuple[Any, ...]) -> None:
        self.finished_states = frozenset(finished)
        self.awaited: dict[str, Any] = {}  # id -> its state at the last read
        self.ended: dict[str, int] = {}  # final state -> how many

    def see(self, job: Job) -> None:
        if job.state in self.finished_states:
            self.awaited.pop(job.id, None)
            self.add(job.state, 1)
        else:
            self.awaited[job.id] = job.state

    def gone(self, job_id: str) -> None:
        # Removed or purged while awaited: only a finished job can be, so it finished, in a
        # state nobody saw. It counts as finished and leaves the exit status alone.
        if self.awaited.pop(job_id, None) is not None:
            self.add("gone", 1)

    def add(self, state: Any, n: int) -> None:
        if n:
            self.ended[str(state)] = self.ended.get(str(state), 0) + n

    @property
    def failed(self) -> bool:
        return bool(self.ended.get("dead") or self.ended.get("cancelled"))

    def text(self) -> str:
        done = sum(self.ended.values())
        parts = [f"{done}/{done + len(self.awaited)} finished"]
        parts += [f"{self.ended[s]} {s}" for s in ("dead", "cancelled") if self.ended.get(s)]
        running = sum(1 for s in self.awaited.values() if str(s) == "processing")
        parts.append(f"{running} running")
        return ", ".join(parts)


def _poll(storage: Any, tally: _Tally, filters: dict[str, Any]) -> None:
    """One read of the awaited jobs: each by id while few, else the unfinished jobs of the
    selection at once (then each one no longer among them by id, once, to learn how it ended)."""
    from queuectl_core.jobs import lifecycle

    awaited = list(tally.awaited)
    if len(awaited) <= GET_EACH_UP_TO:
        left = awaited
    else:
        unfinished = {j.id: j for j in storage.list_jobs(states=lifecycle.UNFINISHED_STATES, **filters)}
        for job_id in awaited:
            if job_id in unfinished:
                tally.see(unfinished[job_id])
        left = [i for i in awaited if i not in unfinished]
    for job_id in left:
        job = storage.get(job_id)
        if job is None:
            tally.gone(job_id)
        else:
            tally.see(job)


class _Line:
    """One progress line on a terminal, redrawn in place; nothing when stderr is not one."""

    def __init__(self, stream: Any) -> None:
        try:
            self.enabled = bool(stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False
        self.stream = stream
        self.last = ""

    def show(self, text: str) -> None:
        if not self.enabled or text == self.last:
            return
        self.last = text
        self._write("\r\x1b[K" + text)

    def end(self) -> None:
        if self.enabled and self.last:
            self._write("\n")
            self.last = ""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False
