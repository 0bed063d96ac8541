"""Changing jobs: `cancel`, `remove`, `restart`, `purge`, and the DLQ's `dlq list|retry|remove`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from queuectl_core.cli.common import _MAX_INT, JobId, QueuectlGroup, _app, _checked_cmd, _duration, _executor
from queuectl_core.cli.inspect import DEFAULT_LIMIT, show_jobs

if TYPE_CHECKING:
    pass


# -- control ------------------------------------------------------------------------------------
@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Finished longer ago than this: seconds, or 90s, 5m, 12h, 7d.")
@click.option("--state", "states", multiple=True, type=click.Choice(["completed", "dead", "cancelled"]),
              help="Only this state (repeatable; default: completed and cancelled, so dead jobs stay in the DLQ).")
@click.pass_context
def purge(ctx: click.Context, older_than: str, states: tuple[str, ...]) -> None:
    """Delete finished jobs older than a given age, and their logs; prints how many. Dead jobs
    (the DLQ) go only with --state dead.

    \b
      queuectl purge --older-than 7d
      queuectl purge --older-than 1h --state dead
    """
    from queuectl_core.control import actions
    from queuectl_core.jobs.lifecycle import DEFAULT_PURGE_STATES
    from queuectl_core.jobs.models import JobState

    age = _duration("--older-than", older_than)
    app = _app(ctx)
    gone = actions.purge(app.storage, age, [JobState(s) for s in states] or DEFAULT_PURGE_STATES,
                         executor=_executor(app))
    click.echo(f"purged {len(gone)} job(s)")
    if not states:
        dead = app.storage.counts().get(JobState.DEAD, 0)  # (the per-state tallies: one cheap read)
        if dead:
            click.echo(f"kept {dead} dead job(s) in the DLQ (purge --state dead, or dlq remove, deletes them)",
                       err=True)




# -- DLQ ----------------------------------------------------------------------------------------
@click.group(cls=QueuectlGroup)
def dlq() -> None:
    """The dead letter queue: jobs that exhausted their retries."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(1, _MAX_INT),
              help=f"At most this many jobs (default {DEFAULT_LIMIT}; --json: all).")
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

    show_jobs(ctx, {"states": [JobState.DEAD]}, limit, all_, as_json, "the DLQ is empty")


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
