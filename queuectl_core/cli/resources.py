"""`queuectl resource set|list|remove`: pools shared by every host, and each live worker's
resources, with what is in use."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from queuectl_core.cli.common import QueuectlGroup, _app, _print_json

if TYPE_CHECKING:
    from queuectl_core.jobs.needs import ResourceUsage


@click.group("resource", cls=QueuectlGroup)
def resource_group() -> None:
    """Pools of resources shared by every host, and what workers have.

    A job's --needs NAME=N is met by the pool NAME when there is one, otherwise by the resources
    the worker running it declared (worker start --resources).
    """


def _name(value: str) -> str:
    from queuectl_core.jobs.needs import NAME_RULE, is_name

    if not is_name(value):
        raise click.BadParameter(f"{value!r} is not a resource name ({NAME_RULE})")
    return value


@resource_group.command("set")
@click.argument("name")
@click.option("--capacity", required=True, type=click.IntRange(1, 1_000_000),
              help="At most this many units in use at once, across every worker and host.")
@click.pass_context
def resource_set(ctx: click.Context, name: str, capacity: int) -> None:
    """Create a pool, or change its capacity: at most N units of NAME in use at once.

    \b
      queuectl resource set license --capacity 3
    """
    from queuectl_core.storage.capabilities import with_fallbacks

    with_fallbacks(_app(ctx).storage).set_pool(_name(name), capacity)
    click.echo(f"pool {name}: capacity {capacity}")


@resource_group.command("remove")
@click.argument("name")
@click.pass_context
def resource_remove(ctx: click.Context, name: str) -> None:
    """Remove a pool: NAME is then met by workers' own resources.

    \b
      queuectl resource remove license
    """
    from queuectl_core.errors import ValidationError
    from queuectl_core.storage.capabilities import with_fallbacks

    if not with_fallbacks(_app(ctx).storage).remove_pool(name):
        raise ValidationError(f"no pool named {name!r} (queuectl resource list shows them)")
    click.echo(f"pool {name} removed")


@resource_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def resource_list(ctx: click.Context, as_json: bool) -> None:
    """Every pool with its units in use, and every live worker's resources with what its jobs hold.

    \b
      queuectl resource list
      queuectl resource list --json | jq '.pools'
    """
    from queuectl_core.storage.capabilities import with_fallbacks

    usage = with_fallbacks(_app(ctx).storage).resource_usage()
    if as_json:
        _print_json(usage.to_dict())
        return
    lines = usage_lines(usage)
    click.echo("\n".join(lines) if lines else "no pools, and no live worker declares resources"
               " (queuectl resource set NAME --capacity N; queuectl worker start --resources gpu=0,1)")


def usage_lines(usage: ResourceUsage) -> list[str]:
    """A table of pools and workers' resources, with units in use (``resource list``, ``status``)."""
    from queuectl_core.cli import display

    rows = [["pool", p.name, "every host", f"{p.in_use}/{p.capacity}", ""] for p in usage.pools]
    for w in usage.workers:
        for name, spec in sorted(w.declared.items()):
            rows.append(["worker", name, f"{w.host} {w.worker_id}", f"{w.in_use.get(name, 0)}/{w.units(name)}",
                         spec if "," in spec or not spec.isdigit() or name == "gpu" else ""])
    if not rows:
        return []
    cols = [display.Column("KIND"), display.Column("RESOURCE"), display.Column("WHERE", min_width=8, weight=1),
            display.Column("IN USE", right=True), display.Column("INSTANCES", min_width=4, weight=1)]
    return display.table(cols, rows, colour=display.use_colour())
