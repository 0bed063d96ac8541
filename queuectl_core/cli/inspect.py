"""Looking at the queue: `status`, `list`, `show`, `logs`."""

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

    app = _app(ctx)
    storage, here = app.storage, app.config["worker.host"]
    view = overview(storage, here)
    orphaned = _orphaned(storage, view.counts, here)
    from queuectl_core.storage.capabilities import with_fallbacks

    usage = with_fallbacks(storage).resource_usage()  # -- needs: pools and workers' resources in use
    if as_json:
        _print_json({**view.to_dict(), "orphaned": [j.id for j in orphaned], "resources": usage.to_dict()})
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
    for s in JobState:
        if s != JobState.PENDING:
            rows.append((str(s), counts[s], "retry scheduled" if s == JobState.FAILED and counts[s] else ""))
        if s == JobState.PROCESSING and orphaned:
            rows.append(("  orphaned", len(orphaned), "worker gone; " + taken_back(orphaned[0], view.now,
                                                                                   bool(view.workers))))
    for name, n, note in rows:
        label = display.paint(f"{name:<12}", (name.strip() if name.strip() != "orphaned" else "error") if n else "dim",
                              colour)
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
    from queuectl_core.cli.resources import usage_lines

    if usage.pools or usage.workers:  # -- needs
        click.echo()
        for line in usage_lines(usage):
            click.echo(line)
    click.echo()
    if not view.workers:
        click.echo(f"{'workers':<12}{0:>7}   " + display.paint("start one: queuectl worker start", "dim", colour))
        return
    hosts = len({w.hostname for w in view.workers})
    click.echo(f"{'workers':<12}{len(view.workers):>7}" + (f"   on {hosts} hosts" if hosts > 1 else ""))
    # Grouped by host (overview sorts them so): the host named on its first worker's line.
    cols = [display.Column("HOST", min_width=8, weight=1), display.Column("WORKER"),
            display.Column("UP", right=True), display.Column("JOB", min_width=10, weight=2),
            display.Column("FOR", right=True)]
    wrows, wcolours = [], []
    previous = None
    for w in view.workers:
        host, previous = ("" if w.hostname == previous else w.hostname), w.hostname
        up = display.duration((view.now - w.started_at).total_seconds())
        jobs: list[tuple[str, Any]] = list(w.jobs) or ([(w.current_job, w.current_job_since)] if w.current_job else [])
        if not jobs:
            wrows.append([host, w.id, up, "idle", ""])
            wcolours.append(["bold", "", "", "idle", ""])
        # A worker with --slots holds several: one line each, the newest first, up to a screenful.
        shown = jobs if len(jobs) <= _STATUS_JOBS_PER_WORKER else jobs[:_STATUS_JOBS_PER_WORKER - 1]
        for n, (job_id, since) in enumerate(shown):
            ran = display.duration((view.now - since).total_seconds()) if since else ""
            wrows.append(([host, w.id, up] if n == 0 else ["", "", ""]) + [job_id, ran])
            wcolours.append(["bold", "", "", "processing", ""])
        if len(shown) < len(jobs):
            wrows.append(["", "", "", f"+{len(jobs) - len(shown)} more", ""])
            wcolours.append(["", "", "", "dim", ""])
    for line in display.table(cols, wrows, colours=wcolours, colour=colour):
        click.echo(line)


def _orphaned(storage: Any, counts: dict[Any, int], here: str) -> list[Job]:
    """The processing jobs whose worker is known gone, soonest taken back first."""
    from queuectl_core.jobs.history import orphans
    from queuectl_core.jobs.models import JobState

    if not counts[JobState.PROCESSING]:
        return []
    running = storage.list_jobs(JobState.PROCESSING)
    gone, _ = orphans(storage, running, here)
    return sorted((j for j in running if j.id in gone), key=lambda j: (j.lease_expires_at or j.updated_at, j.id))


def taken_back(job: Job, now: Any, workers_live: bool) -> str:
    """When an orphaned job is taken back: once its lease has expired, by a live worker's housekeeping."""
    from queuectl_core.cli import display

    if not workers_live:
        return "taken back once a worker runs" + (
            f" (lease ends {display.relative(job.lease_expires_at, now)})"
            if job.lease_expires_at is not None and job.lease_expires_at > now else "")
    if job.lease_expires_at is not None and job.lease_expires_at > now:
        return f"taken back {display.relative(job.lease_expires_at, now)}"
    return "taken back at once"


def job_object(job: Job, after: list[str] | None = None, orphaned: bool = False) -> dict[str, Any]:
    """A job as ``list --json`` and ``show --json`` print it: every field enqueue accepts under
    enqueue's key (``after``: what it still waits on), and the read-only rest."""
    return {**job.to_dict(), "after": after or [], "orphaned": orphaned}


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


def _memory(job: Job) -> str:
    """The last finished attempt's peak memory (none while the next one runs)."""
    from queuectl_core.cli import display
    from queuectl_core.jobs.models import JobState

    return "" if job.state == JobState.PROCESSING else display.size(job.last_max_rss_bytes)


def job_table(jobs: list[Job], now: Any, with_error: bool = True, waits: dict[str, list[str]] | None = None,
              orphaned: set[str] | None = None, workers_live: bool = True) -> None:
    from queuectl_core.cli import display

    colour = display.use_colour()
    # Priority and tags only when a listed job has them (the defaults say nothing).
    with_priority = any(j.priority for j in jobs)
    with_tags = any(j.tags for j in jobs)
    # The last attempt's peak memory, when one was measured (an executor may not measure it).
    with_memory = any(j.last_max_rss_bytes is not None for j in jobs)
    cols = [display.Column("ID"), display.Column("STATE"), display.Column("TRIES", right=True),
            display.Column("QUEUE", drop_first=3)]
    cols += [display.Column("PRI", right=True, drop_first=4)] if with_priority else []
    cols += [display.Column("WHEN", right=True), display.Column("TOOK", right=True, drop_first=2)]
    cols += [display.Column("MEM", right=True, drop_first=3)] if with_memory else []
    cols += [display.Column("COMMAND", min_width=14, weight=3)]
    cols += [display.Column("TAGS", min_width=6, weight=1, drop_first=5)] if with_tags else []
    cols += [display.Column("LAST ERROR", min_width=16, weight=2, drop_first=1)]
    rows, colours = [], []
    for j in jobs:
        state = str(j.state) + ("*" if j.cancel_requested else "")
        last = (j.last_error or "") if with_error else ""
        if waits and j.id in waits:  # what a held job waits on
            last = f"waits on {', '.join(waits[j.id])}" + (f"; {last}" if last else "")
        gone = orphaned is not None and j.id in orphaned
        if gone:  # its worker is gone: say so, and when it is taken back
            state, last = "orphaned", "worker gone; " + taken_back(j, now, workers_live)
        row = [j.id, state, f"{j.attempts}/{j.max_retries + 1}", j.queue]
        row += [str(j.priority) if j.priority else ""] if with_priority else []
        row += [_when(j, now), _took(j, now)]
        row += [_memory(j)] if with_memory else []
        row += [j.command]
        row += [",".join(j.tags)] if with_tags else []
        rows.append(row + [last])
        colours.append(["", "error" if gone else str(j.state)] + [""] * (len(row) - 2) + ["error"])
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
    from queuectl_core.jobs.history import orphans

    app = _app(ctx)
    storage, here = app.storage, app.config["worker.host"]
    if as_json:
        jobs = storage.list_jobs(None, limit, **filters)
        waits, (gone, _) = _waits(storage, jobs), orphans(storage, jobs, here)
        _print_json([job_object(j, waits.get(j.id), j.id in gone) for j in jobs])
        return
    shown = None if all_ else (limit or DEFAULT_LIMIT)
    jobs = storage.list_jobs(None, shown, **filters)
    if not jobs:
        click.echo(empty)
        return
    gone, workers_live = orphans(storage, jobs, here)
    job_table(jobs, storage.now(), waits=_waits(storage, jobs), orphaned=gone, workers_live=workers_live)
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


# -- one job ------------------------------------------------------------------------------------
@click.command()
@click.argument("job_id", type=JobId())
@click.option("--json", "as_json", is_flag=True,
              help='Print the job as one JSON object, with "attempts": every attempt, oldest first.')
@click.pass_context
def show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Everything about one job: its state and why, command, options, where and when it runs or
    ran, and one row per attempt (kept across restart and dlq retry).

    \b
      queuectl show job1
      queuectl show --json job1 | jq '.attempts[-1]'
      queuectl show --json job1 | jq 'del(.id)' | queuectl enqueue --file -   # the same job again
    """
    from queuectl_core.errors import JobNotFoundError
    from queuectl_core.jobs import history

    app = _app(ctx)
    storage = app.storage
    job = storage.get(job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    d = history.details(storage, job, app.config["worker.host"])
    from queuectl_core.control.limits import job_limits
    from queuectl_core.control.needs import why_waiting

    limits = job_limits(storage, _app(ctx).config, job)  # -- limits: in force, and from where --
    waiting = why_waiting(storage, job)  # -- needs: what no worker or pool can give it now
    if as_json:
        _print_json({**job_object(job, d.after, d.orphaned), "limits": limits,
                     "attempts": [a.to_dict() for a in d.attempts], "waiting_reason": waiting})
        return
    from queuectl_core.storage.capabilities import attempt_output

    store = attempt_output(storage)  # the storage keeps each attempt's output: its sizes are known anywhere
    sizes = store.output_sizes(job.id) if store is not None else None
    for line in describe(job, d.attempts, d.after, d.orphaned, d.workers_live, d.now, limits, sizes=sizes,
                         waiting=waiting):
        click.echo(line)


def _limits_line(limits: dict[str, Any]) -> str:
    """``memory 100M (queue default), cpu time 10s (its own)``, or ``none``."""
    from queuectl_core.jobs.limits import format_size
    from queuectl_core.jobs.timeutil import format_duration

    whence = {"job": "its own", "queue": "queue default", "config": "config job.{}"}
    parts = []
    if limits["memory"]:
        parts.append(f"memory {format_size(limits['memory'])} ({whence[limits['from']['memory']].format('memory')})")
    if limits["cpu_time"]:
        parts.append(f"cpu time {format_duration(limits['cpu_time'])}"
                     f" ({whence[limits['from']['cpu_time']].format('cpu_time')})")
    return ", ".join(parts) or "none"


def _clock(when: Any, now: Any) -> str:
    """Local clock time (with the date when not today), and how long ago or ahead."""
    from queuectl_core.cli import display

    if when is None:
        return ""
    local, today = when.astimezone(), now.astimezone()
    shown = local.strftime("%H:%M:%S" if local.date() == today.date() else "%Y-%m-%d %H:%M:%S")
    return f"{shown} ({display.relative(when, now)})"


def _size(path: str | None) -> str:
    """An attempt's output size, from its log file when it is on this host."""
    import os

    if not path:
        return ""
    try:
        n = os.path.getsize(path)
    except OSError:
        return ""
    return _bytes(n)


def _bytes(n: int | None) -> str:
    """An output size as ``show`` prints it: ``6 B``, ``64.0 KiB``."""
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return ""


def why(job: Job, after: list[str], gone: bool, workers_live: bool, now: Any) -> str:
    """The job's state in words: what it waits for, what it does, or how it ended (``show``'s
    state line, and the dashboard's)."""
    from queuectl_core.cli import display
    from queuectl_core.jobs.models import JobState

    state = job.state
    if state == JobState.PENDING:
        if after:
            return f"pending: waits on {', '.join(after)}"
        if job.run_at > now:
            return f"pending: scheduled for {_clock(job.run_at, now)}"
        return f"pending: ready since {display.relative(job.run_at, now)}"
    if state == JobState.PROCESSING:
        running = (f"processing: attempt {job.attempt_number} running for "
                   f"{display.duration((now - job.updated_at).total_seconds())}")
        if job.cancel_requested:
            running += "; cancel requested"
        if gone:
            return f"orphaned: its worker is gone; {taken_back(job, now, workers_live)}"
        return running
    if state == JobState.FAILED:
        return f"failed: {job.last_error or 'attempt failed'}; retry {display.relative(job.run_at, now)}"
    if state == JobState.COMPLETED:
        took = f" in {display.duration(job.last_duration)}" if job.last_duration is not None else ""
        return f"completed {display.relative(job.updated_at, now)}{took}"
    if state == JobState.DEAD:
        return f"dead (in the DLQ): {job.last_error or 'out of retries'}"
    if job.last_error and job.last_error.startswith("cancelled"):
        return job.last_error
    return f"cancelled: {job.last_error}" if job.last_error else "cancelled"


def retry_rules(job: Job) -> str:
    """How often the job may run and on which exits it is retried (``show`` and the dashboard)."""
    retries = "1 retry" if job.max_retries == 1 else f"{job.max_retries} retries"
    rules = f"{retries} ({job.max_retries + 1} run{'s' if job.max_retries else ''} at most, {job.attempts} so far)"
    if job.retry_on is not None:
        rules += "; retried only on exit " + ",".join(map(str, job.retry_on))
    if job.no_retry_on is not None:
        rules += "; never retried on exit " + ",".join(map(str, job.no_retry_on))
    return rules


def describe(job: Job, attempts: list[Any], after: list[str], gone: bool, workers_live: bool, now: Any,
             limits: dict[str, Any] | None = None, sizes: dict[int, int] | None = None,
             waiting: str | None = None) -> list[str]:
    """``show``'s lines: one field a line (long values cut to the terminal), then the attempts."""
    from queuectl_core.cli import display
    from queuectl_core.jobs.models import JobState, masked_env

    colour = display.use_colour()
    fields: list[tuple[str, str]] = [
        ("id", job.id),
        ("state", why(job, after, gone, workers_live, now)),
        ("command", job.command),
        ("queue", job.queue),
        ("priority", str(job.priority)),
        ("tags", ", ".join(job.tags) or "-"),
        ("cwd", job.cwd or "- (the worker's)"),
        ("env", " ".join(f"{k}={v}" for k, v in masked_env(job.env).items()) or "-"),
        ("after", ", ".join(after) or "-"),
        ("unique key", job.unique_key or "-"),
        ("retries", retry_rules(job)),
        ("timeout", display.duration(job.timeout) if job.timeout is not None else "none"),
        ("created", _clock(job.created_at, now)),
    ]
    if limits is not None:  # -- limits --
        fields.insert(-1, ("limits", _limits_line(limits)))
    if job.needs:  # -- needs
        from queuectl_core.jobs.needs import format_needs

        fields.insert(2, ("needs", format_needs(job.needs)))
        if waiting:
            fields.insert(2, ("waiting", waiting))
    if job.state in (JobState.PENDING, JobState.FAILED):
        fields.append(("runs", _clock(job.run_at, now) if job.run_at > now else "when a worker is free"))
    elif job.state == JobState.PROCESSING:
        fields.append(("started", _clock(job.updated_at, now)))
        fields.append(("worker", f"{job.worker_id or '?'} on {job.host or '?'}"))
    elif attempts and attempts[-1].finished_at is not None:
        fields.append(("ran", _clock(attempts[-1].started_at or attempts[-1].finished_at, now)))
        fields.append(("ended", _clock(attempts[-1].finished_at, now)))
    width = display.width()
    label = max(len(k) for k, _ in fields) + 2
    lines = []
    import textwrap

    for key, value in fields:
        # Wrapped, not cut: show is where a long command or env is read whole.
        parts = textwrap.wrap(display.one_line(value), max(20, width - label), break_on_hyphens=False) or [""]
        for n, part in enumerate(parts):
            if key == "state":
                part = display.paint(part, "error" if gone else str(job.state), colour)
            lines.append((display.paint(key.ljust(label), "dim", colour) if n == 0 else " " * label) + part)
    lines.append("")
    if not attempts:
        lines.append(display.paint("no attempts yet", "dim", colour))
        return lines
    cols = [display.Column("#", right=True), display.Column("STARTED"), display.Column("TOOK", right=True),
            display.Column("CPU", right=True, drop_first=4), display.Column("MEM", right=True, drop_first=4),
            display.Column("EXIT", min_width=8, weight=1), display.Column("WORKER", drop_first=2),
            display.Column("HOST", min_width=6, weight=1, drop_first=1), display.Column("OUTPUT", right=True,
                                                                                        drop_first=3)]
    rows, colours = [], []
    for a in attempts:
        started = _clock(a.started_at, now).split(" (")[0] if a.started_at is not None else "?"
        if a.finished_at is None:
            took = display.duration((now - a.started_at).total_seconds()) + "…" if a.started_at else ""
            end, tint = ("orphaned" if gone else "running"), ("error" if gone else "processing")
        else:
            took = display.duration(a.duration) if a.duration is not None else ""
            if a.signal is not None:
                end = a.signal
            elif a.exit_code is not None:
                end = f"exit {a.exit_code}"
            else:
                end = ""
            if a.error and a.error.startswith(end):  # the reason already names it ("exit 127: command not found")
                end = a.error
            elif a.error:
                end = f"{end}: {a.error}" if end else a.error
            tint = "completed" if a.exit_code == 0 and not a.error else "error"
        cpu = display.duration(a.cpu_seconds) if a.cpu_seconds is not None else ""
        rows.append([str(a.attempt), started, took, cpu, display.size(a.max_rss_bytes), end, a.worker_id or "",
                     a.host or "", _bytes(sizes.get(a.attempt)) if sizes else _size(a.log_path)])
        colours.append(["", "", "", "", "", tint, "", "", ""])
    lines += display.table(cols, rows, colours=colours, colour=colour)
    return lines
