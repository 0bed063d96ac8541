"""`queuectl enqueue`: jobs from flags, a JSON object, or a file of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from queuectl_core.cli.common import _app

if TYPE_CHECKING:
    pass


# -- enqueue ------------------------------------------------------------------------------------
@click.command()
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
