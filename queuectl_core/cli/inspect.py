"""Looking at the queue: `status`, `list`, `logs`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from queuectl_core.cli.common import _MAX_INT, _STATUS_JOBS_PER_WORKER, STATES, JobId, _app, _print_json

if TYPE_CHECKING:
    from queuectl_core.jobs.models import Job


# -- inspecting ---------------------------------------------------------------------------------
@click.command()
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
        cols = [display.Column("QUEUE", min_width=8, weight=1), display.Column("PENDING", right=True), display.Column("PROCESSING", right=True),
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


def job_table(jobs: list[Job], now: Any, with_error: bool = True, waits: dict[str, list[str]] | None = None) -> None:
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


DEFAULT_LIMIT = 50


@click.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES),
              help="Only jobs in this state (repeatable).")
@click.option("--queue", help="Only jobs in this queue.")
@click.option("--tag", help="Only jobs with this tag.")
@click.option("--limit", type=click.IntRange(1, _MAX_INT),
              help=f"At most this many jobs (default {DEFAULT_LIMIT}; --json: all).")
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
    show_jobs(ctx, filters, limit, all_, as_json, "no jobs" + (" match" if any((states, queue, tag)) else ""))


def _waits(storage: Any, jobs: list[Job]) -> dict[str, list[str]]:
    """For each listed job still held by `--after`, the ids it waits on."""
    held = [j.id for j in jobs if j.waiting]
    return storage.waits_on(held) if held else {}


def show_jobs(ctx: click.Context, filters: dict[str, Any], limit: int | None, all_: bool, as_json: bool,
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
    shown = None if all_ else (limit or DEFAULT_LIMIT)
    jobs = storage.list_jobs(None, shown, **filters)
    if not jobs:
        click.echo(empty)
        return
    job_table(jobs, storage.now(), waits=_waits(storage, jobs))
    if shown is not None and len(jobs) == shown:
        more = storage.count_jobs(None, **filters) - len(jobs)
        if more > 0:
            from queuectl_core.cli import display

            click.echo(display.paint(f"… {more} more (older); --limit N or --all to see them", "dim",
                                     display.use_colour()))


@click.command()
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
