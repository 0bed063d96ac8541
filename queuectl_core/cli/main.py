"""The ``queuectl`` command line: the root group, whose commands live one module per concern and
are imported only when used (click's documented lazy loading), and the entry point."""

from __future__ import annotations

import gc
import importlib
import sys

import click

from queuectl_core import __version__
from queuectl_core.cli.common import QueuectlGroup
from queuectl_core.errors import QueuectlError

# command name -> "module:attribute"; `queuectl --help` imports them all, `queuectl enqueue` one.
COMMANDS = {
    "enqueue": "enqueue:enqueue",
    "worker": "worker:worker",
    "status": "inspect:status",
    "list": "inspect:list_",
    "show": "inspect:show",
    "logs": "inspect:logs",
    "wait": "wait:wait",
    "cancel": "control:cancel",
    "remove": "control:remove",
    "restart": "control:restart",
    "purge": "control:purge",
    "dlq": "control:dlq",
    "queue": "queues:queue_group",
    "schedule": "queues:schedule_group",
    "resource": "resources:resource_group",  # -- needs
    "config": "admin:config",
    "plugins": "admin:plugins",
}


class LazyGroup(QueuectlGroup):
    """The root group: a built-in command's module is imported when the command is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, attr = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(f"queuectl_core.cli.{module}"), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="queuectl")
def cli() -> None:
    """A background job queue for shell commands: enqueue, run with workers, retry with backoff,
    park what keeps failing in a dead letter queue.

    State lives in QUEUECTL_HOME (default: the per-user app directory).
    """



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
    # Start-up makes objects that live as long as the process (modules, classes, the plugin
    # manager): the cyclic garbage collector has nothing to find in them. So it does not run while
    # the plugins load, and what they made is then frozen out of its sight (gc.freeze), so that the
    # collections during the command and the last one at exit do not walk it again. Together about
    # 8 % of the instructions of a `queuectl enqueue` (32 M of 397 M, counted with `valgrind
    # --tool=callgrind`); a long-running worker's full collections skip it too.
    gc.disable()
    from queuectl_core.framework.plugins import call_each, load_plugins

    try:
        load_plugins()
        call_each("queuectl_register_commands", cli=cli)
    except QueuectlError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    finally:
        gc.freeze()
        gc.enable()
    try:
        cli(prog_name="queuectl")
    except KeyboardInterrupt:  # Ctrl+C while Python was still starting up: no traceback
        sys.exit(130)
