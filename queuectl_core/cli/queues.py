"""`queuectl queue ...` and `queuectl schedule ...`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from queuectl_core.cli.common import _MAX_INT, QueuectlGroup, _app, _print_json

if TYPE_CHECKING:
    pass


# -- queues and schedules --------------------------------------------------------------
@click.group("queue", cls=QueuectlGroup)
def queue_group() -> None:
    """Queues: concurrency limits, pause and resume."""


@queue_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def queue_list(ctx: click.Context, as_json: bool) -> None:
    """Every queue with jobs or settings: its limit, whether paused, and its jobs per state."""
    from queuectl_core.control.scheduling import list_queues

    queues = list_queues(_app(ctx).storage)
    # -- limits: each queue's defaults; a queue with only defaults is listed too --
    from queuectl_core.control.limits import describe, queue_limits, with_default_queues

    defaults = queue_limits(_app(ctx).storage)
    queues = with_default_queues(queues, defaults)
    if as_json:
        _print_json([{**q.to_dict(), "memory": defaults[q.name].memory if q.name in defaults else None,
                      "cpu_time": defaults[q.name].cpu_time if q.name in defaults else None} for q in queues])
        return
    if not queues:
        click.echo("no queues")
        return
    from queuectl_core.cli import display

    colour = display.use_colour()
    states = ("pending", "processing", "failed", "completed", "dead", "cancelled")
    # Counts are short; the queue's name is what gives way (cut with …) on a narrow terminal.
    cols = [display.Column("QUEUE", min_width=8, weight=1), display.Column("LIMIT", right=True),
            display.Column("PAUSED", drop_first=1),
            *(display.Column(s.upper(), right=True, drop_first=d) for s, d in zip(states, (0, 0, 0, 3, 0, 2)))]
    if defaults:
        cols.append(display.Column("JOB LIMITS", drop_first=4))
    rows, colours = [], []
    for q in queues:
        rows.append([q.name, str(q.concurrency or "-"), "paused" if q.paused else "",
                     *(str(q.counts.get(s, 0)) for s in states)])
        colours.append(["", "", "dim", *(s if q.counts.get(s, 0) else "dim" for s in states)])
        if defaults:
            rows[-1].append(describe(defaults[q.name]) if q.name in defaults else "-")
            colours[-1].append("" if q.name in defaults else "dim")
    for line in display.table(cols, rows, colours=colours, colour=colour):
        click.echo(line)


@queue_group.command("set")
@click.argument("name")
@click.option("--concurrency", type=click.IntRange(0, _MAX_INT),
              help="At most this many of its jobs processing at once, across all workers and hosts; 0: unlimited.")
# -- limits: defaults for its jobs that set none --
@click.option("--memory", metavar="SIZE",
              help="Memory limit of its jobs that set none: SIZE, e.g. 512M, 2G (0: none).")
@click.option("--cpu-time", metavar="DURATION",
              help="CPU time limit of its jobs that set none: 90s, 10m (0: none).")
@click.pass_context
def queue_set(ctx: click.Context, name: str, concurrency: int | None, memory: str | None = None,
              cpu_time: str | None = None) -> None:
    """Set a queue's concurrency limit, and the limits its jobs get when they set none.

    Default limits apply to every attempt that starts after the change, including those of jobs
    already waiting; a job's own --memory or --cpu-time wins.
    """
    from queuectl_core.control.scheduling import set_concurrency

    if concurrency is None and memory is None and cpu_time is None:
        raise click.UsageError("give --concurrency, --memory or --cpu-time")
    limits = None
    if memory is not None or cpu_time is not None:
        from queuectl_core.control.limits import parse_queue_limits

        limits = parse_queue_limits(memory, cpu_time)  # checked before anything is written
    if limits is not None:  # first: a storage that keeps no queue defaults refuses before any write
        from queuectl_core.control.limits import describe, queue_limits, set_queue_limits

        set_queue_limits(_app(ctx).storage, name, limits)
    if concurrency is not None:
        set_concurrency(_app(ctx).storage, name, concurrency)
        click.echo(f"{name}: concurrency {concurrency or 'unlimited'}")
    if limits is not None:
        now = describe(queue_limits(_app(ctx).storage).get(name) or limits)
        click.echo(f"{name}: no default limits" if now == "no limits" else f"{name}: default {now}")


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


@click.group("schedule", cls=QueuectlGroup)
def schedule_group() -> None:
    """Recurring jobs: cron expressions or fixed intervals, run by every worker, each tick once."""


# The job options of `enqueue`, by the JSON key each sets (an error names the flag, as typed).
_SCHEDULE_FLAGS = {"max_retries": "--max-retries", "priority": "--priority", "timeout": "--timeout",
                   "queue": "--queue", "unique_key": "--unique-key", "retry_on": "--retry-on",
                   "no_retry_on": "--no-retry-on", "cwd": "--cwd", "env": "--env", "tags": "--tag"}


def _flag_names(message: str) -> str:
    import re

    return re.sub(r"'(" + "|".join(_SCHEDULE_FLAGS) + r")'", lambda m: _SCHEDULE_FLAGS[m.group(1)], message)


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
@click.option("--cwd", "cwd", type=click.Path(file_okay=False),
              help="Its jobs run in this directory (default: the one `schedule add` runs in).")
@click.option("--env", "env", multiple=True, metavar="KEY[=VALUE]",
              help="Set KEY for its jobs; KEY alone copies its value from this shell. Repeatable.")
@click.option("--tag", "tags", multiple=True, help="Label its jobs (list --tag finds them). Repeatable.")
@click.pass_context
def schedule_add(ctx: click.Context, name: str, cron: str | None, every: str | None, command: str, tz: str | None,
                 cwd: str | None, env: tuple[str, ...], tags: tuple[str, ...], **options: Any) -> None:
    """Add a schedule: each tick enqueues a job NAME@<tick time> with these options, the job
    options of `enqueue`. Its jobs run in the directory `schedule add` ran in (or --cwd).

    \b
      queuectl schedule add nightly --cron '30 1 * * *' --cmd ./backup.sh --tag backup
      queuectl schedule add poll --every 5m --cmd 'curl -fsS $URL' --env URL=https://example.org --queue io
    """
    from queuectl_core.control.scheduling import add_schedule, make_schedule
    from queuectl_core.errors import ValidationError
    from queuectl_core.intake.jobspec import flag_times, with_control_defaults
    from queuectl_core.jobs.timeutil import parse_duration

    job: dict[str, Any] = {"command": command, **{k: v for k, v in options.items() if v is not None}}
    if "timeout" in job:
        job.update(flag_times({"timeout": job["timeout"]}))
    seconds = None
    if every is not None:
        try:
            seconds = parse_duration(every)
        except ValueError as exc:
            raise ValidationError(f"--every: {exc}") from None
    [job] = with_control_defaults([job], cwd, env, tags)
    app = _app(ctx)
    try:
        schedule = make_schedule(name, job, cron=cron, every=seconds, tz=tz,
                                 default_max_retries=app.config["max_retries"])
    except ValidationError as exc:
        raise ValidationError(_flag_names(str(exc))) from None
    add_schedule(app.storage, schedule)
    click.echo(name)


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def schedule_list(ctx: click.Context, as_json: bool) -> None:
    """Every schedule, with its last and next tick."""
    from queuectl_core.control.scheduling import local_zone_name, schedule_rows

    rows = schedule_rows(_app(ctx).storage)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no schedules")
        return
    from queuectl_core.cli import display
    from queuectl_core.jobs.timeutil import format_duration, parse_time
    from queuectl_core.jobs.timeutil import now as clock_now

    colour = display.use_colour()
    now = clock_now()
    here = local_zone_name()

    def ago(text: str | None) -> str:
        return display.relative(parse_time(text), now) if text else "-"

    def at(text: str | None) -> str:
        return display.clock(parse_time(text), now) if text else ""

    # NEXT is relative, AT its local clock time: AT, QUEUE and LAST give way on a narrow terminal.
    cols = [display.Column("NAME", min_width=8, weight=1), display.Column("WHEN"),
            display.Column("QUEUE", drop_first=2), display.Column("LAST", right=True, drop_first=3),
            display.Column("NEXT", right=True), display.Column("AT", drop_first=1),
            display.Column("COMMAND", min_width=12, weight=3)]
    out, colours = [], []
    for r in rows:
        every = f"every {format_duration(r['every'])}" if r["every"] is not None else ""
        # The zone is said when it is not this machine's (every host reads the cron in it).
        spec = (f"cron {r['cron']}" + (f" ({r['tz']})" if r["tz"] != here else "")) if r["cron"] else every
        upcoming = None if r["paused"] else r["next_tick"]
        out.append([r["name"], spec, r["job"].get("queue") or "default", ago(r["last_tick"]),
                    "paused" if r["paused"] else ago(upcoming), at(upcoming), r["job"]["command"]])
        colours.append(["", "", "", "", "dim" if r["paused"] else "", "", ""])
    for line in display.table(cols, out, colours=colours, colour=colour):
        click.echo(line)


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
