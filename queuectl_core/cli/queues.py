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


@click.group("schedule", cls=QueuectlGroup)
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
