"""``queuectl bench``: W1-W4 on a throw-away queue of the configured storage, each beside this
machine's floors. A bundled plugin: it adds its command through ``queuectl_register_commands``,
and imports its runner only when the command runs."""

from __future__ import annotations

import click

from queuectl_core import hookimpl


@hookimpl
def queuectl_register_commands(cli: click.Group) -> None:
    @cli.command("bench")
    @click.option("--enqueue-processes", default=30, show_default=True, type=click.IntRange(0, 100_000),
                  help="W1: `queuectl enqueue` processes, one job each, each beside the framework floor (0 skips).")
    @click.option("--file-jobs", default=100_000, show_default=True, type=click.IntRange(0, 10_000_000),
                  help="W2: JSON Lines in one `enqueue --file`, e.g. 1000000 for its memory bound (0 skips).")
    @click.option("--drain-jobs", default=1_000, show_default=True, type=click.IntRange(0, 10_000_000),
                  help="W3: `true` jobs drained by `worker start --burst` (0 skips).")
    @click.option("--workers", multiple=True, type=click.IntRange(1, 512),
                  help="W3: worker processes; repeat for several [default: 2 and 4].")
    @click.option("--slots", multiple=True, type=click.IntRange(2, 4096),
                  help="W3: one worker with --slots S; repeat for several [default: 2 and 4].")
    @click.option("--latency-samples", default=20, show_default=True, type=click.IntRange(0, 10_000),
                  help="W4: idle worker -> job start samples (0 skips).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def bench(enqueue_processes: int, file_jobs: int, drain_jobs: int, workers: tuple[int, ...],
              slots: tuple[int, ...], latency_samples: int, as_json: bool) -> None:
        """Measure this machine and backend: W1-W4 on a throw-away queue of the configured storage,
        each beside this machine's floors. Your own queue is never touched."""
        import json

        from queuectl_core.api import current_app

        from .runner import Bench, Sizes, format_report

        # Either one named alone measures just that: `--workers 2` runs no --slots drain.
        sizes = Sizes(enqueue_processes, file_jobs, drain_jobs, workers or (() if slots else (2, 4)),
                      slots or (() if workers else (2, 4)), latency_samples)
        progress = None if as_json else (lambda line: click.echo(line, err=True))
        result = Bench(current_app(), sizes, progress).run()
        if as_json:
            click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        else:
            click.echo("\n".join(format_report(result)))
