"""The ``queuectl`` command line."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from queuectl_core import __version__
from queuectl_core.errors import QueuectlError

if TYPE_CHECKING:
    from queuectl_core.framework.app import App
    from queuectl_core.jobs.models import Job

STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")
_MAX_INT = 2**31 - 1
_STATUS_JOBS_PER_WORKER = 5  # `status` lines per worker; past it, "+N more"


class JobId(click.ParamType):
    """A job id argument: text that cannot be an id (bad bytes, wrong characters) is refused here,
    before it reaches storage, which could not even encode some of it."""

    name = "job_id"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from queuectl_core.intake.jobspec import ID_RULE, is_job_id, short

        if not is_job_id(value):
            self.fail(f"{short(value)} is not a job id (ids are {ID_RULE})", param, ctx)
        return value

    def shell_complete(self, ctx: Any, param: Any, incomplete: str) -> list[Any]:
        """Job ids from the queue (newest first), for `queuectl completion`'s scripts."""
        from click.shell_completion import CompletionItem

        try:
            from queuectl_core.framework.app import App

            app = App()
            try:
                jobs = app.storage.list_jobs(None, 2000)
            finally:
                app.close()
        except Exception:  # completion must never print a traceback into the user's shell
            return []
        return [CompletionItem(j.id, help=f"{j.state}: {j.command[:40]}") for j in jobs if j.id.startswith(incomplete)]


class OneLineUsageError(click.UsageError):
    """A usage error shown as a single ``Error:`` line (click's default adds a usage block).

    The contract is one clear line on stderr for every error, so scripts can log it and users
    see the cause without scrolling; the help hint goes on the same line. Exit status stays 2.
    """

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {_cut_quotes(self.format_message())}{hint}", file=file or sys.stderr)


def _cut_quotes(message: str) -> str:
    """click quotes the bad value whole; a 5,000-digit argument must not become a 5 KB line."""
    if len(message) < 200:
        return message
    import re

    return re.sub(r"'([^']{60})[^']+'", r"'\1…'", message)


def _one_line(exc: click.UsageError) -> click.UsageError:
    # A bare group's help screen (NoArgsIsHelpError) is help, not an error: leave it alone.
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return OneLineUsageError(exc.format_message(), exc.ctx)


class QueuectlGroup(click.Group):
    """A group whose commands turn every QueuectlError into one ``Error:`` line and exit 1,
    and every usage error into one ``Error:`` line and exit 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        # The root group's own arguments are parsed here, outside any parent's invoke().
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QueuectlError as exc:
            raise click.ClickException(str(exc)) from None
        except click.UsageError as exc:  # subcommand parsing and our own UsageErrors
            raise _one_line(exc) from None
        except BrokenPipeError:
            _quiet_broken_pipe()

    def group(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", QueuectlGroup)
        return super().group(*args, **kwargs)


def _quiet_broken_pipe() -> NoReturn:
    import os

    # `queuectl list | head`: the reader left; exit quietly without a traceback on flush.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


def _app(ctx: click.Context) -> App:
    from queuectl_core.framework.app import App

    if ctx.obj is None:
        ctx.obj = App()
        ctx.call_on_close(ctx.obj.close)
    return ctx.obj


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(cls=QueuectlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="queuectl")
def cli() -> None:
    """A background job queue for shell commands: enqueue, run with workers, retry with backoff,
    park what keeps failing in a dead letter queue.

    State lives in QUEUECTL_HOME (default: the per-user app directory).
    """


# -- enqueue ------------------------------------------------------------------------------------
@cli.command()
@click.argument("job_json", required=False)
@click.option("--id", "job_id", help="Job id (default: generated, short and sortable).")
@click.option("--cmd", "command", help="The shell command to run.")
@click.option("--max-retries", type=int, help="Retries after the first attempt (default: config max_retries).")
@click.option("--priority", type=int, help="Higher runs first (default 0).")
@click.option("--delay", help="Run no sooner than this from now: seconds, or 90s, 5m, 1h30m, 7d.")
@click.option("--run-at",
              help="Run no sooner than this ISO 8601 time (e.g. 2026-01-10T10:35:00Z; no zone: local time).")
@click.option("--timeout", help="Kill the job's whole process group after this long (seconds, or 30s, 5m, 2h).")
# Bytes, decoded by us: a file that is not UTF-8 must be one error line, not a traceback.
@click.option("--file", "file_", type=click.File("rb"),
              help="Read jobs from a file: one JSON object, an array, or JSON Lines; '-' reads stdin.")
# -- scheduling --
@click.option("--queue", help="The queue to put it in (default: default).")
@click.option("--after", help="Run only once these jobs completed: ID[,ID...].")
@click.option("--unique-key", help="Refuse while a job with this key is pending, failed or processing.")
@click.option("--retry-on", help="Retry only these exit codes (e.g. 1,75); other exit codes go to the DLQ.")
@click.option("--no-retry-on", help="These exit codes go straight to the DLQ (e.g. 2,64).")
# -- where it runs, its environment, its tags (for every job given, JSON keys winning) ---------
@click.option("--cwd", "cwd", type=click.Path(file_okay=False), help="Run in this directory (default: the current one).")
@click.option("--env", "env", multiple=True, metavar="KEY[=VALUE]",
              help="Set KEY for the job; KEY alone copies its value from this shell. Repeatable.")
@click.option("--tag", "tags", multiple=True, help="Label the job (list --tag finds it). Repeatable.")
@click.pass_context
def enqueue(ctx: click.Context, job_json: str | None, job_id: str | None, command: str | None,
            max_retries: int | None, priority: int | None, delay: str | None, run_at: str | None,
            timeout: str | None, file_: Any, queue: str | None = None, after: str | None = None,
            unique_key: str | None = None, retry_on: str | None = None, no_retry_on: str | None = None,
            cwd: str | None = None, env: tuple[str, ...] = (), tags: tuple[str, ...] = ()) -> None:
    """Add jobs to the queue; prints the id of each. A job runs in the directory it was enqueued
    from (or --cwd), with the worker's environment plus its --env.

    \b
      queuectl enqueue --cmd 'echo hello'
      queuectl enqueue --cmd 'make test' --cwd ~/src/app --env CI=1 --env HOME --tag nightly
      queuectl enqueue '{"id": "job1", "command": "sleep 2"}'
      queuectl enqueue --file jobs.jsonl        # all or nothing
    """
    from queuectl_core.intake import jobspec
    from queuectl_core.intake.jobspec import (
        enqueue_with_fresh_ids,
        flag_job,
        flag_times,
        parse_job_argument,
        with_control_defaults,
    )

    given = flag_job(job_id=job_id, command=command, max_retries=max_retries, priority=priority, delay=delay,
                     run_at=run_at, timeout=timeout, queue=queue, unique_key=unique_key, retry_on=retry_on,
                     no_retry_on=no_retry_on, after=after)
    sources = sum(x is not None for x in (job_json, file_)) + (1 if given else 0)
    if sources == 0:
        raise click.UsageError("give --cmd, a JSON job argument, or --file")
    if sources > 1:
        raise click.UsageError("give only one of: flags (--cmd ...), a JSON job argument, or --file")
    if given and "command" not in given:
        raise click.UsageError("--cmd is required (or pass a JSON job, or --file)")
    if delay is not None and run_at is not None:
        raise click.UsageError("give --delay or --run-at, not both")
    if given:
        given.update(flag_times(given))
    if file_ is not None:
        # Streamed in batches, one transaction, bounded memory, progress on a terminal.
        from queuectl_core.intake.bulk import enqueue_file

        enqueue_file(_app(ctx), file_, file_.name, lambda objs: with_control_defaults(objs, cwd, env, tags))
        return
    if job_json is not None:
        objs = [parse_job_argument(job_json)]
    else:
        objs = [given]
    objs = with_control_defaults(objs, cwd, env, tags)
    app = _app(ctx)
    no_retry = jobspec.configured_no_retry(app.config["no_retry_exit_codes"])
    jobs = jobspec.validate_all(objs, app.config["max_retries"], no_retry)
    created = enqueue_with_fresh_ids(app.storage, jobs, {o.get("id") for o in objs if isinstance(o, dict)})
    from queuectl_core.framework.plugins import emit
    from queuectl_core.jobs.models import EventKind, JobEvent

    for job in created:
        emit(JobEvent(EventKind.ENQUEUED, job=job))
    click.echo("\n".join(job.id for job in created))


# -- workers ------------------------------------------------------------------------------------
@cli.group()
def worker() -> None:
    """Run and stop workers."""


@worker.command("start")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 512), help="Worker processes.")
@click.option("--burst", is_flag=True, help="Drain the queue (waiting for scheduled retries), then exit.")
@click.option("--queue", "queues", help="Claim only from these queues: Q[,Q...] (default: every queue).")
@click.option("--slots", type=click.IntRange(1, 4096),
              help="Jobs each worker process runs at once [default: worker_slots, 1].")
@click.pass_context
def worker_start(ctx: click.Context, count: int, burst: bool, queues: str | None = None,
                 slots: int | None = None) -> None:
    """Run workers in the foreground. Ctrl+C or SIGTERM: finish running jobs, then exit;
    a second one stops at once and releases the jobs.

    \b
      queuectl worker start                 # one process, one job at a time
      queuectl worker start --slots 8       # one process, up to 8 jobs at once
      queuectl worker start --count 2 --slots 4
    """
    # Hold Ctrl+C/SIGTERM (pending, not lost) until the workers' handlers exist: a stop request
    # during start-up is then honoured gracefully instead of aborting half-way. supervise() and
    # the worker unblock them when ready.
    from queuectl_core.worker.signals import held

    served = None
    if queues is not None:
        from queuectl_core.control.scheduling import check_queue_name

        served = [check_queue_name(name.strip()) for name in queues.split(",") if name.strip()]
        if not served:
            raise click.UsageError("--queue needs at least one queue name")
    with held():
        code = _start_workers(ctx, count, burst, served, slots)
    ctx.exit(code)


def _start_workers(ctx: click.Context, count: int, burst: bool, queues: list[str] | None = None,
                   slots: int | None = None) -> int:
    from queuectl_core.worker.supervisor import supervise

    app = _app(ctx)
    if slots is None:
        slots = int(app.config["worker_slots"])
    # Fail fast, with one line, on a bad provider name or an unreachable store, before forking.
    for registry in (app.registries.storages, app.registries.executors, app.registries.backoffs):
        registry.get(app.config[registry.config_key])
    app.storage  # noqa: B018 - opens (and migrates) the store
    app.executor  # noqa: B018
    app.backoff  # noqa: B018
    app.close()  # never carry an open database connection across fork()

    def run_one() -> int:
        from queuectl_core.framework.app import App
        from queuectl_core.worker import Worker

        worker_app = App()
        try:
            return Worker(worker_app, slots=slots, burst=burst, queues=queues).run()
        finally:
            worker_app.close()

    return supervise(count, run_one)


@worker.command("stop")
@click.option("--now", "now", is_flag=True,
              help="Stop at once, like a second Ctrl+C: running jobs are stopped and released for another worker.")
@click.pass_context
def worker_stop(ctx: click.Context, now: bool) -> None:
    """Ask every worker using this queue to finish its current job and exit (within about a second
    when idle); with --now, to stop its job at once and hand it back.

    \b
      queuectl worker stop
      queuectl worker stop --now
    """
    n = _app(ctx).storage.request_stop(now=now)
    click.echo(f"asked {n} worker(s) to stop{' now' if now else ''}" if n else "no live workers")


# -- inspecting ---------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """How many jobs are in each state (pending split into ready and scheduled), per queue, how
    long the oldest ready job has waited, and each live worker with the job it runs.

    \b
      queuectl status
      queuectl status --json | jq .counts
    """
    from queuectl_core.control.overview import overview

    view = overview(_app(ctx).storage)
    if as_json:
        _print_json(view.to_dict())
        return
    from queuectl_core.cli import display
    from queuectl_core.jobs.models import JobState

    colour = display.use_colour()
    counts = view.counts
    oldest = ""
    if view.oldest_ready is not None:
        oldest = f"oldest waiting {display.duration((view.now - view.oldest_ready).total_seconds())}"
    rows: list[tuple[str, int, str]] = [("pending", counts[JobState.PENDING], ""),
                                        ("  ready", view.ready, oldest if view.ready else ""),
                                        ("  scheduled", view.scheduled, "")]
    if view.waiting:
        rows.append(("  waiting", view.waiting, "on other jobs (--after)"))
    rows += [(str(s), counts[s], "retry scheduled" if s == JobState.FAILED and counts[s] else "")
             for s in JobState if s != JobState.PENDING]
    for name, n, note in rows:
        label = display.paint(f"{name:<12}", name.strip() if n else "dim", colour)
        click.echo(f"{label}{n:>7}" + (f"   {display.paint(note, 'dim', colour)}" if note else ""))
    if len(view.queues) > 1 or any(q["paused"] or q["concurrency"] for q in view.queues.values()):
        click.echo()
        cols = [display.Column("QUEUE"), display.Column("PENDING", right=True), display.Column("PROCESSING", right=True),
                display.Column("FAILED", right=True), display.Column("DEAD", right=True),
                display.Column("LIMIT", right=True), display.Column("", min_width=6)]
        qrows = [[name, str(q["pending"]), str(q["processing"]), str(q["failed"]), str(q["dead"]),
                  str(q["concurrency"] or "-"), "paused" if q["paused"] else ""] for name, q in sorted(view.queues.items())]
        for line in display.table(cols, qrows, colour=colour):
            click.echo(line)
    click.echo()
    if not view.workers:
        click.echo(f"{'workers':<12}{0:>7}   " + display.paint("start one: queuectl worker start", "dim", colour))
        return
    click.echo(f"{'workers':<12}{len(view.workers):>7}")
    cols = [display.Column("WORKER"), display.Column("HOST", min_width=8, weight=1, drop_first=1),
            display.Column("UP", right=True), display.Column("JOB", min_width=10, weight=2),
            display.Column("FOR", right=True)]
    wrows, wcolours = [], []
    for w in view.workers:
        up = display.duration((view.now - w.started_at).total_seconds())
        jobs: list[tuple[str, Any]] = list(w.jobs) or ([(w.current_job, w.current_job_since)] if w.current_job else [])
        if not jobs:
            wrows.append([w.id, w.hostname, up, "idle", ""])
            wcolours.append(["", "", "", "idle", ""])
        # A worker with --slots holds several: one line each, the newest first, up to a screenful.
        shown = jobs if len(jobs) <= _STATUS_JOBS_PER_WORKER else jobs[:_STATUS_JOBS_PER_WORKER - 1]
        for n, (job_id, since) in enumerate(shown):
            ran = display.duration((view.now - since).total_seconds()) if since else ""
            wrows.append(([w.id, w.hostname, up] if n == 0 else ["", "", ""]) + [job_id, ran])
            wcolours.append(["", "", "", "processing", ""])
        if len(shown) < len(jobs):
            wrows.append(["", "", "", f"+{len(jobs) - len(shown)} more", ""])
            wcolours.append(["", "", "", "dim", ""])
    for line in display.table(cols, wrows, colours=wcolours, colour=colour):
        click.echo(line)


def _when(job: Job, now: Any) -> str:
    """The one time that matters for a job in its state, relative to now."""
    from queuectl_core.cli import display
    from queuectl_core.jobs.models import JobState

    if job.state in (JobState.PENDING, JobState.FAILED):
        if job.run_at > now:
            return ("retry " if job.state == JobState.FAILED else "") + display.relative(job.run_at, now)
        return "ready " + display.relative(job.run_at, now) if job.state == JobState.FAILED else \
            display.relative(job.created_at, now)
    return display.relative(job.updated_at, now)


def _took(job: Job, now: Any) -> str:
    from queuectl_core.cli import display
    from queuectl_core.jobs.models import JobState

    if job.state == JobState.PROCESSING:
        return display.duration((now - job.updated_at).total_seconds()) + "…"
    return display.duration(job.last_duration)


def _job_table(jobs: list[Job], now: Any, with_error: bool = True, waits: dict[str, list[str]] | None = None) -> None:
    from queuectl_core.cli import display

    colour = display.use_colour()
    cols = [display.Column("ID"), display.Column("STATE"), display.Column("TRIES", right=True),
            display.Column("QUEUE", drop_first=3), display.Column("WHEN", right=True),
            display.Column("TOOK", right=True, drop_first=2),
            display.Column("COMMAND", min_width=14, weight=3), display.Column("LAST ERROR", min_width=16, weight=2,
                                                                            drop_first=1)]
    rows, colours = [], []
    for j in jobs:
        state = str(j.state) + ("*" if j.cancel_requested else "")
        last = (j.last_error or "") if with_error else ""
        if waits and j.id in waits:  # what a held job waits on
            last = f"waits on {', '.join(waits[j.id])}" + (f"; {last}" if last else "")
        rows.append([j.id, state, f"{j.attempts}/{j.max_retries + 1}", j.queue, _when(j, now), _took(j, now),
                     j.command, last])
        colours.append(["", str(j.state), "", "", "", "", "", "error"])
    for line in display.table(cols, rows, colours=colours, colour=colour):
        click.echo(line)


_DEFAULT_LIMIT = 50


@cli.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES),
              help="Only jobs in this state (repeatable).")
@click.option("--queue", help="Only jobs in this queue.")
@click.option("--tag", help="Only jobs with this tag.")
@click.option("--limit", type=click.IntRange(1, _MAX_INT),
              help=f"At most this many jobs (default {_DEFAULT_LIMIT}; --json: all).")
@click.option("--all", "all_", is_flag=True, help="Every matching job.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of jobs (every match unless --limit).")
@click.pass_context
def list_(ctx: click.Context, states: tuple[str, ...], queue: str | None, tag: str | None, limit: int | None,
          all_: bool, as_json: bool) -> None:
    """List jobs, newest first: the 50 newest unless --limit or --all.

    \b
      queuectl list
      queuectl list --state dead --state cancelled
      queuectl list --tag nightly --all
      queuectl list --json | jq -r '.[].id'
    """
    from queuectl_core.jobs.models import JobState

    filters: dict[str, Any] = {"states": [JobState(s) for s in states] or None, "tag": tag, "queue": queue}
    _show_jobs(ctx, filters, limit, all_, as_json, "no jobs" + (" match" if any((states, queue, tag)) else ""))


def _waits(storage: Any, jobs: list[Job]) -> dict[str, list[str]]:
    """For each listed job still held by `--after`, the ids it waits on."""
    held = [j.id for j in jobs if j.waiting]
    return storage.waits_on(held) if held else {}


def _show_jobs(ctx: click.Context, filters: dict[str, Any], limit: int | None, all_: bool, as_json: bool,
               empty: str) -> None:
    """`list` and `dlq list`: JSON (every match unless --limit), or a table of the newest 50 (or
    --limit N, or --all) with a footer saying how many more there are."""
    if all_ and limit is not None:
        raise click.UsageError("give --limit or --all, not both")
    storage = _app(ctx).storage
    if as_json:
        jobs = storage.list_jobs(None, limit, **filters)
        waits = _waits(storage, jobs)
        _print_json([{**j.to_dict(), "waits_on": waits.get(j.id, [])} for j in jobs])
        return
    shown = None if all_ else (limit or _DEFAULT_LIMIT)
    jobs = storage.list_jobs(None, shown, **filters)
    if not jobs:
        click.echo(empty)
        return
    _job_table(jobs, storage.now(), waits=_waits(storage, jobs))
    if shown is not None and len(jobs) == shown:
        more = storage.count_jobs(None, **filters) - len(jobs)
        if more > 0:
            from queuectl_core.cli import display

            click.echo(display.paint(f"… {more} more (older); --limit N or --all to see them", "dim",
                                     display.use_colour()))


@cli.command()
@click.argument("job_id", type=JobId())
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing output until the attempt ends; exit 0 if the job completed, else 1.")
@click.option("--attempt", type=click.IntRange(1, _MAX_INT), help="An earlier attempt (1 is the first).")
@click.option("--tail", "tail_lines", type=click.IntRange(0, _MAX_INT), help="Only the last N lines.")
@click.pass_context
def logs(ctx: click.Context, job_id: str, follow: bool, attempt: int | None, tail_lines: int | None) -> None:
    """Print the captured stdout and stderr of a job's current (running) or last attempt.

    \b
      queuectl logs job1
      queuectl logs -f job1               # follow the running attempt
      queuectl logs job1 --attempt 1 --tail 20
    """
    from queuectl_core.control import joblogs

    app = _app(ctx)
    code = joblogs.show(app, job_id, follow=follow, attempt=attempt, tail_lines=tail_lines)
    ctx.exit(code)


# -- control ------------------------------------------------------------------------------------
@cli.command()
@click.argument("job_ids", nargs=-1, required=True, type=JobId())
@click.pass_context
def cancel(ctx: click.Context, job_ids: tuple[str, ...]) -> None:
    """Stop jobs from running, now or ever: a waiting job is cancelled at once; a running one's
    process group is stopped by its worker (on any host) within about a second. All or nothing.

    \b
      queuectl cancel job1 job2
    """
    from queuectl_core.control.actions import cancel_many
    from queuectl_core.jobs.models import JobState

    for job in cancel_many(_app(ctx).storage, job_ids):
        if job.state == JobState.PROCESSING:
            click.echo(f"{job.id}: running; its worker is stopping it")
        else:
            click.echo(f"{job.id}: cancelled")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, type=JobId())
@click.pass_context
def remove(ctx: click.Context, job_ids: tuple[str, ...]) -> None:
    """Delete finished jobs (completed, dead, cancelled) and their logs. All or nothing.

    \b
      queuectl remove job1 job2
    """
    from queuectl_core.control.actions import remove as remove_jobs

    app = _app(ctx)
    for job in remove_jobs(app.storage, job_ids, executor=_executor(app)):
        click.echo(f"{job.id}: removed")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, type=JobId())
@click.option("--cmd", "command", help="Run this command instead from now on.")
@click.pass_context
def restart(ctx: click.Context, job_ids: tuple[str, ...], command: str | None) -> None:
    """Put finished jobs (completed, dead, cancelled) back to pending with attempts 0. All or nothing.

    \b
      queuectl restart job1
      queuectl restart job2 --cmd 'make test V=1'
    """
    from queuectl_core.control.actions import restart_many

    for job in restart_many(_app(ctx).storage, job_ids, _checked_cmd(command)):
        click.echo(job.id)


@cli.command()
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Finished longer ago than this: seconds, or 90s, 5m, 12h, 7d.")
@click.option("--state", "states", multiple=True, type=click.Choice(["completed", "dead", "cancelled"]),
              help="Only this state (repeatable; default: all three).")
@click.pass_context
def purge(ctx: click.Context, older_than: str, states: tuple[str, ...]) -> None:
    """Delete finished jobs older than a given age, and their logs; prints how many.

    \b
      queuectl purge --older-than 7d
      queuectl purge --older-than 1h --state dead
    """
    from queuectl_core.control import actions
    from queuectl_core.jobs.lifecycle import FINISHED_STATES
    from queuectl_core.jobs.models import JobState

    age = _duration("--older-than", older_than)
    app = _app(ctx)
    gone = actions.purge(app.storage, age, [JobState(s) for s in states] or FINISHED_STATES, executor=_executor(app))
    click.echo(f"purged {len(gone)} job(s)")


def _duration(flag: str, text: str) -> float:
    from queuectl_core.errors import ValidationError
    from queuectl_core.jobs.timeutil import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValidationError(f"{flag}: {exc}") from None


def _checked_cmd(command: str | None) -> str | None:
    from queuectl_core.errors import ValidationError
    from queuectl_core.intake.jobspec import utf8_text

    if command is None:
        return None
    if not command.strip() or "\x00" in command:
        raise ValidationError("--cmd must be a non-empty command without NUL bytes")
    return utf8_text("--cmd", command)


def _executor(app: App) -> object:
    """The configured executor, which deletes the logs of removed jobs (or None: see joblogs)."""
    from queuectl_core.control.joblogs import configured_executor

    return configured_executor(app)




# -- DLQ ----------------------------------------------------------------------------------------
@cli.group()
def dlq() -> None:
    """The dead letter queue: jobs that exhausted their retries."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(1, _MAX_INT),
              help=f"At most this many jobs (default {_DEFAULT_LIMIT}; --json: all).")
@click.option("--all", "all_", is_flag=True, help="Every dead job.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of jobs (every one unless --limit).")
@click.pass_context
def dlq_list(ctx: click.Context, limit: int | None, all_: bool, as_json: bool) -> None:
    """List dead jobs with their last error, newest first: the 50 newest unless --limit or --all.

    \b
      queuectl dlq list
      queuectl dlq list --json | jq -r '.[].id'
    """
    from queuectl_core.jobs.models import JobState

    _show_jobs(ctx, {"states": [JobState.DEAD]}, limit, all_, as_json, "the DLQ is empty")


def _ids_or_all(job_ids: tuple[str, ...], all_: bool) -> list[str] | None:
    if all_ and job_ids:
        raise click.UsageError("give job ids or --all, not both")
    if not all_ and not job_ids:
        raise click.UsageError("give job ids, or --all")
    return None if all_ else list(job_ids)


@dlq.command("retry")
@click.argument("job_ids", nargs=-1, type=JobId())
@click.option("--all", "all_", is_flag=True, help="Every job in the DLQ.")
@click.option("--cmd", "command", help="Run this command instead from now on.")
@click.pass_context
def dlq_retry(ctx: click.Context, job_ids: tuple[str, ...], all_: bool, command: str | None) -> None:
    """Put dead jobs back in the queue with their attempts reset. All or nothing.

    \b
      queuectl dlq retry job1 job2
      queuectl dlq retry --all
      queuectl dlq retry job3 --cmd 'make test V=1'
    """
    from queuectl_core.control.actions import replay_many

    ids = _ids_or_all(job_ids, all_)
    jobs = replay_many(_app(ctx).storage, ids, _checked_cmd(command))
    if not jobs and all_:
        click.echo("the DLQ is empty", err=True)
    for job in jobs:
        click.echo(job.id)


@dlq.command("remove")
@click.argument("job_ids", nargs=-1, type=JobId())
@click.option("--all", "all_", is_flag=True, help="Every job in the DLQ.")
@click.pass_context
def dlq_remove(ctx: click.Context, job_ids: tuple[str, ...], all_: bool) -> None:
    """Delete dead jobs and their logs. All or nothing.

    \b
      queuectl dlq remove job1
      queuectl dlq remove --all
    """
    from queuectl_core.control.actions import remove as remove_jobs
    from queuectl_core.jobs.models import JobState

    app = _app(ctx)
    ids = _ids_or_all(job_ids, all_)
    gone = remove_jobs(app.storage, ids, [JobState.DEAD], executor=_executor(app))
    if all_:
        click.echo(f"removed {len(gone)} job(s)")
    else:
        for job in gone:
            click.echo(f"{job.id}: removed")


# -- queues and schedules --------------------------------------------------------------
@cli.group("queue")
def queue_group() -> None:
    """Queues: concurrency limits, pause and resume."""


@queue_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def queue_list(ctx: click.Context, as_json: bool) -> None:
    """Every queue with jobs or settings: its limit, whether paused, and its jobs per state."""
    from queuectl_core.control.scheduling import list_queues

    queues = list_queues(_app(ctx).storage)
    if as_json:
        _print_json([q.to_dict() for q in queues])
        return
    if not queues:
        click.echo("no queues")
        return
    rows: list[tuple[str, ...]] = [("QUEUE", "CONCURRENCY", "PAUSED", "PENDING", "PROCESSING", "FAILED", "COMPLETED", "DEAD", "CANCELLED")]
    for q in queues:
        rows.append((q.name, str(q.concurrency or "unlimited"), "yes" if q.paused else "no",
                     *(str(q.counts.get(s, 0)) for s in ("pending", "processing", "failed", "completed", "dead",
                                                         "cancelled"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@queue_group.command("set")
@click.argument("name")
@click.option("--concurrency", required=True, type=click.IntRange(0, _MAX_INT),
              help="At most this many of its jobs processing at once, across all workers and hosts; 0: unlimited.")
@click.pass_context
def queue_set(ctx: click.Context, name: str, concurrency: int) -> None:
    """Set a queue's concurrency limit."""
    from queuectl_core.control.scheduling import set_concurrency

    set_concurrency(_app(ctx).storage, name, concurrency)
    click.echo(f"{name}: concurrency {concurrency or 'unlimited'}")


def _pause_command(paused: bool) -> Any:
    verb = "paused" if paused else "resumed"

    @click.argument("names", nargs=-1)
    @click.option("--all", "every", is_flag=True, help="Every queue that exists now.")
    @click.pass_context
    def command(ctx: click.Context, names: tuple[str, ...], every: bool) -> None:
        from queuectl_core.control.scheduling import set_paused

        done = set_paused(_app(ctx).storage, list(names), paused, every)
        click.echo(f"{verb}: {', '.join(done)}" if done else f"no queue to be {verb}")

    return command


queue_group.command("pause", help="Pause queues: their jobs are not claimed; running ones finish.")(
    _pause_command(True))
queue_group.command("resume", help="Resume paused queues.")(_pause_command(False))


@cli.group("schedule")
def schedule_group() -> None:
    """Recurring jobs: cron expressions or fixed intervals, run by every worker, each tick once."""


@schedule_group.command("add")
@click.argument("name")
@click.option("--cron", help='5-field cron expression, e.g. "*/5 * * * *" (read in --tz).')
@click.option("--every", help="An interval: seconds, or 30s, 5m, 1h30m (at least 1s).")
@click.option("--cmd", "command", required=True, help="The shell command each tick runs.")
@click.option("--tz", help="The time zone --cron is read in (IANA name; default: this machine's).")
@click.option("--max-retries", type=int, help="Retries after the first attempt (default: config max_retries).")
@click.option("--priority", type=int, help="Higher runs first (default 0).")
@click.option("--timeout", help="Kill the job's process group after this long (seconds, or 30s, 5m, 2h).")
@click.option("--queue", help="The queue its jobs go to (default: default).")
@click.option("--unique-key", help="Skip a tick while a job with this key is pending, failed or processing.")
@click.option("--retry-on", help="Retry only these exit codes (e.g. 1,75).")
@click.option("--no-retry-on", help="These exit codes go straight to the DLQ (e.g. 2,64).")
@click.pass_context
def schedule_add(ctx: click.Context, name: str, cron: str | None, every: str | None, command: str, tz: str | None,
                 **options: Any) -> None:
    """Add a schedule: each tick enqueues a job NAME@<tick time> with these options."""
    from queuectl_core.control.scheduling import add_schedule, make_schedule
    from queuectl_core.errors import ValidationError
    from queuectl_core.jobs.timeutil import parse_duration

    job: dict[str, Any] = {"command": command, **{k: v for k, v in options.items() if v is not None}}
    if "timeout" in job:
        from queuectl_core.intake.jobspec import flag_times

        job.update(flag_times({"timeout": job["timeout"]}))
    seconds = None
    if every is not None:
        try:
            seconds = parse_duration(every)
        except ValueError as exc:
            raise ValidationError(f"--every: {exc}") from None
    app = _app(ctx)
    schedule = make_schedule(name, job, cron=cron, every=seconds, tz=tz, default_max_retries=app.config["max_retries"])
    add_schedule(app.storage, schedule)
    click.echo(name)


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def schedule_list(ctx: click.Context, as_json: bool) -> None:
    """Every schedule, with its last and next tick."""
    from queuectl_core.control.scheduling import schedule_rows

    rows = schedule_rows(_app(ctx).storage)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no schedules")
        return
    table = [("NAME", "WHEN", "PAUSED", "LAST_TICK", "NEXT_TICK", "COMMAND")]
    for r in rows:
        when = f"cron {r['cron']} ({r['tz']})" if r["cron"] else f"every {r['every']:g}s"
        table.append((r["name"], when, "yes" if r["paused"] else "no", r["last_tick"] or "-", r["next_tick"] or "-",
                      r["job"]["command"]))
    widths = [max(len(t[i]) for t in table) for i in range(5)]
    for t in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(t, widths)) + "  " + t[5][:80])


@schedule_group.command("remove")
@click.argument("name")
@click.pass_context
def schedule_remove(ctx: click.Context, name: str) -> None:
    """Delete a schedule (jobs it already enqueued stay)."""
    from queuectl_core.control.scheduling import remove_schedule

    remove_schedule(_app(ctx).storage, name)
    click.echo(f"removed {name}")


@schedule_group.command("pause")
@click.argument("name")
@click.pass_context
def schedule_pause(ctx: click.Context, name: str) -> None:
    """Stop a schedule's ticks until resumed (ticks missed meanwhile are not enqueued)."""
    from queuectl_core.control.scheduling import set_schedule_paused

    set_schedule_paused(_app(ctx).storage, name, True)
    click.echo(f"paused {name}")


@schedule_group.command("resume")
@click.argument("name")
@click.pass_context
def schedule_resume(ctx: click.Context, name: str) -> None:
    """Resume a paused schedule."""
    from queuectl_core.control.scheduling import set_schedule_paused

    set_schedule_paused(_app(ctx).storage, name, False)
    click.echo(f"resumed {name}")


# -- config -------------------------------------------------------------------------------------
@cli.group()
def config() -> None:
    """Show and change settings (config.toml in QUEUECTL_HOME)."""


# ignore_unknown_options: `config set max_retries -1` must reach validation ("must be >= 0")
# rather than die as "no such option -1".
@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY to VALUE, validated; max-retries and max_retries are the same key."""
    from queuectl_core.framework.settings import write_file_values

    app = _app(ctx)
    setting = app.config.setting(key)
    coerced = setting.coerce(value)
    for registry in (app.registries.storages, app.registries.executors, app.registries.backoffs):
        if setting.key == registry.config_key:
            registry.get(coerced)
    values = dict(app.config.file_values)
    values[setting.key] = coerced
    write_file_values(app.home, values)
    click.echo(f"{setting.key} = {setting.shown(coerced)}")
    if setting.env_var in app.config.env:
        click.echo(f"note: {setting.env_var} is set and overrides this", err=True)


@config.command("get")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the value as JSON.")
@click.pass_context
def config_get(ctx: click.Context, key: str, as_json: bool) -> None:
    """Print the effective value of KEY (a secret is masked).

    \b
      queuectl config get max_retries
      queuectl config get retention.completed --json
    """
    cfg = _app(ctx).config
    setting = cfg.setting(key)
    value = setting.shown(cfg.get(setting.key))
    if as_json:
        _print_json(value)
    else:
        click.echo(str(value).lower() if isinstance(value, bool) else value)


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Every effective setting, its default, and where its value came from."""
    app = _app(ctx)
    cfg = app.config
    rows = []
    for key in cfg.keys():
        s = cfg.setting(key)
        rows.append({"key": key, "value": s.shown(cfg.get(key)), "default": s.shown(s.default_for(cfg.home)),
                     "source": cfg.source(key), "plugin": s.plugin, "help": s.help})
    if as_json:
        _print_json({"config_file": str(cfg.path), "settings": {r.pop("key"): r for r in rows}})
        return
    click.echo(f"# {cfg.path}")
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        extra = "" if r["source"] == "default" else f"  (default {r['default']!r}; from {r['source']})"
        click.echo(f"{r['key']:<{width}} = {r['value']!r}{extra}")


# -- plugins ------------------------------------------------------------------------------------
@cli.group()
def plugins() -> None:
    """Installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Each plugin, its version, the hooks it implements and what it provides."""
    from queuectl_core.framework.plugins import plugin_version, pm

    # Through App, like every other command: a corrupt config.toml is reported here too rather
    # than surfacing later in a worker. App opens no storage until asked, so this stays cheap.
    regs = _app(ctx).registries
    out: list[dict[str, Any]] = []
    blocked: list[str] = []
    for name, plugin in sorted(pm.list_name_plugin()):
        if plugin is None:  # pluggy keeps a blocked name (QUEUECTL_DISABLE_PLUGINS) mapped to None
            blocked.append(name)
            continue
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        out.append({
            "name": name,
            "module": getattr(plugin, "__name__", repr(plugin)),
            "version": plugin_version(name),
            "hooks": hooks,
            "provides": {
                "storages": regs.storages.by_plugin(name),
                "executors": regs.executors.by_plugin(name),
                "backoff_policies": regs.backoffs.by_plugin(name),
                "settings": regs.settings_by_plugin(name),
            },
        })
    if as_json:
        _print_json(out)
        return
    for p in out:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in p["provides"].items() if v)
        click.echo(f"{p['name']} {p['version'] or ''}".rstrip())
        click.echo(f"  hooks: {', '.join(p['hooks'])}")
        if provides:
            click.echo(f"  provides: {provides}")
    if blocked:
        click.echo(f"disabled by QUEUECTL_DISABLE_PLUGINS: {', '.join(blocked)}")


# -- shell completion -----------------------------------------------------------------------------
@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (commands, options and job ids).

    \b
      eval "$(queuectl completion bash)"          # in ~/.bashrc
      eval "$(queuectl completion zsh)"           # in ~/.zshrc
      queuectl completion fish > ~/.config/fish/completions/queuectl.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # click ships all three
    click.echo(cls(cli, {}, "queuectl", "_QUEUECTL_COMPLETE").source())


def main() -> None:
    """Entry point: load plugins (they may add commands), then run the CLI."""
    from queuectl_core.framework.plugins import call_each, load_plugins

    try:
        load_plugins()
        call_each("queuectl_register_commands", cli=cli)
    except QueuectlError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    try:
        cli(prog_name="queuectl")
    except KeyboardInterrupt:  # Ctrl+C while Python was still starting up: no traceback
        sys.exit(130)
