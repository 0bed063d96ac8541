"""`queuectl worker start|stop`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from queuectl_core.cli.common import QueuectlGroup, _app

if TYPE_CHECKING:
    pass


# -- workers ------------------------------------------------------------------------------------
@click.group(cls=QueuectlGroup)
def worker() -> None:
    """Run and stop workers."""


@worker.command("start")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 512), help="Worker processes.")
@click.option("--burst", is_flag=True, help="Drain the queue (waiting for scheduled retries), then exit.")
@click.option("--queue", "queues", help="Claim only from these queues: Q[,Q...] (default: every queue).")
@click.option("--slots", type=click.IntRange(1, 4096),
              help="Jobs each worker process runs at once [default: worker_slots, 1].")
@click.option("--resources", "resources", multiple=True, metavar="NAME=N|NAME=ID,ID...",
              help="What this host gives jobs' --needs: a count (cpu=8) or instances (gpu=0,1). Repeatable"
                   " [default: worker.resources, else the GPUs nvidia-smi lists].")
@click.pass_context
def worker_start(ctx: click.Context, count: int, burst: bool, queues: str | None = None,
                 slots: int | None = None, resources: tuple[str, ...] = ()) -> None:
    """Run workers in the foreground. Ctrl+C or SIGTERM: finish running jobs, then exit;
    a second one stops at once and releases the jobs.

    \b
      queuectl worker start                 # one process, one job at a time
      queuectl worker start --slots 8       # one process, up to 8 jobs at once
      queuectl worker start --count 2 --slots 4
      queuectl worker start --slots 4 --resources gpu=0,1   # at most two gpu=1 jobs at once
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
        code = _start_workers(ctx, count, burst, served, slots, resources)
    ctx.exit(code)


def _start_workers(ctx: click.Context, count: int, burst: bool, queues: list[str] | None = None,
                   slots: int | None = None, resources: tuple[str, ...] = ()) -> int:
    from queuectl_core.worker.supervisor import supervise

    app = _app(ctx)
    from queuectl_core.errors import ValidationError
    from queuectl_core.worker.resources import declared_resources

    try:  # -- needs: declared (or detected) once, for every process of this host's start
        declared = declared_resources(resources, app.config["worker.resources"])
    except ValidationError as exc:
        raise click.UsageError(f"--resources: {exc}" if resources else f"worker.resources: {exc}") from None
    if declared and count > 1 and any(not _is_count(k, v) for k, v in declared.items()):
        raise click.UsageError("named instances (e.g. gpu=0,1) belong to one worker process: use --slots, not --count")
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
            return Worker(worker_app, slots=slots, burst=burst, queues=queues, resources=declared).run()
        finally:
            worker_app.close()

    return supervise(count, run_one)


def _is_count(name: str, spec: str) -> bool:
    from queuectl_core.jobs.needs import is_count

    return is_count(name, spec)


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
