"""The whole ``queuectl`` command tree, for the generated CLI reference and the docs' drift test.

mkdocs loads this file as a hook (``hooks:`` in mkdocs.yml); tests/test_docs.py imports it by path.
The root group imports its built-in commands lazily and plugins add theirs at start-up, so a
documentation tool walking ``cli.commands`` would see only some of them: ``populate()`` loads the
plugins as ``queuectl`` does, then looks every command up so the group holds them all.
"""

from __future__ import annotations

import inspect
from typing import Any

import click


def populate() -> click.Group:
    """The root group with every built-in and plugin command (and their subcommands) loaded."""
    from queuectl_core.cli.main import cli
    from queuectl_core.framework.plugins import call_each, load_plugins

    load_plugins()
    call_each("queuectl_register_commands", cli=cli)
    commands(cli)  # looking a command up is what loads it
    return cli


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    """Every command under ``group`` by its path (``("dlq", "retry")``), subcommands included."""
    ctx = click.Context(group, info_name="queuectl")
    found: dict[tuple[str, ...], click.Command] = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None:
            found[(*prefix, name)] = command
            if isinstance(command, click.Group):
                found.update(commands(command, (*prefix, name)))
    return found


def as_markdown(help_text: str) -> str:
    """A click help text as Markdown: each paragraph click keeps as it is (``\\b``, examples) becomes
    a code block, so its lines stay lines on the page as they do in ``--help``."""
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    out = []
    for para in paragraphs:
        if para.startswith("\b\n"):
            out.append("```text\n" + inspect.cleandoc(para[2:]) + "\n```")
        else:
            out.append(para)
    return "\n\n".join(out)


def on_config(config: Any) -> Any:
    """mkdocs hook: fill the group before mkdocs-click renders docs/reference.md from it, with each
    command's examples as code blocks (in this build process only; ``--help`` is untouched)."""
    for command in commands(populate()).values():
        if command.help:
            # The one-line summary in a group's list of subcommands, as `--help` makes it (the
            # first sentence), rather than the first line of the text.
            command.short_help = command.short_help or command.get_short_help_str(limit=200)
            command.help = as_markdown(command.help)
    return config
