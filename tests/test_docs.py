"""The docs keep up with the code: every hook, command, option and config key is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Iterator

import click
import pytest

from queuectl_core import hookspecs
from queuectl_core.cli import cli
from queuectl_core.plugins import pm, registries

DOCS = Path(__file__).resolve().parent.parent / "docs"
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("queuectl_"))


def _sections(text: str) -> dict[str, str]:
    """Level-2 sections of a Markdown file, keyed by the first word of the heading."""
    out: dict[str, str] = {}
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = chunk.partition("\n")
        key = re.split(r"[\s(`]", heading.strip().strip("`"), maxsplit=1)[0]
        out[key] = body
    return out


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook: str) -> None:
    """docs/plugins/hooks.md has a section per hook, with its exact signature and an example."""
    sections = _sections((DOCS / "plugins" / "hooks.md").read_text())
    assert hook in sections, f"docs/plugins/hooks.md has no '## {hook}(...)' section"
    body = sections[hook]
    source = inspect.getsource(getattr(hookspecs, hook))
    source = source[source.index("def "):]
    signature = " ".join(source[:source.index(":\n")].split())  # "def hook(arg: Type) -> None"
    assert signature in body, f"{hook}: the signature `{signature}` is missing"
    assert "@hookimpl" in body, f"{hook}: no example (an @hookimpl code block)"
    assert "Called" in body, f"{hook}: say when it is called"


def test_hooks_md_documents_no_hook_that_does_not_exist() -> None:
    sections = _sections((DOCS / "plugins" / "hooks.md").read_text())
    stale = [name for name in sections if name.startswith("queuectl_") and name not in HOOKS]
    assert not stale, f"docs/plugins/hooks.md documents hooks that hookspecs.py lacks: {stale}"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


CORE_COMMANDS = sorted(_commands(cli))


@pytest.mark.parametrize("path, command", CORE_COMMANDS, ids=[" ".join(p) for p, _ in CORE_COMMANDS])
def test_every_command_and_option_is_in_usage_md(path: tuple[str, ...], command: click.Command) -> None:
    usage = (DOCS / "usage.md").read_text()
    assert f"queuectl {' '.join(path)}" in usage, f"docs/usage.md never shows `queuectl {' '.join(path)}`"
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("--") and opt != "--help":
                assert opt in usage, f"docs/usage.md does not mention {opt} of `queuectl {' '.join(path)}`"


def test_usage_md_lists_every_job_state() -> None:
    from queuectl_core.models import JobState

    usage = (DOCS / "usage.md").read_text()
    for state in JobState:
        assert f"`{state}`" in usage


def _documented_settings() -> list[str]:
    """Core keys and those of the plugins shipped in this package (queuectl_plugins.*)."""
    regs = registries()
    ours = {name for name, plugin in pm.list_name_plugin()
            if plugin is not None and getattr(plugin, "__name__", "").startswith("queuectl_plugins.")}
    return sorted(k for k, s in regs.settings.items() if s.plugin == "core" or s.plugin in ours)


@pytest.mark.parametrize("key", _documented_settings())
def test_every_config_key_is_in_configuration_md(key: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    assert f"`{key}`" in text, f"docs/configuration.md does not document `{key}`"
    env = registries().settings[key].env_var
    assert env in text, f"docs/configuration.md does not give {key}'s environment variable {env}"


def test_readme_keeps_the_ci_test_command() -> None:
    """.ci/run runs the README's second setup command; the two must not drift apart."""
    root = DOCS.parent
    ci = (root / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(ci) if "README's second setup command" in line)
    command = ci[marker + 1].strip()
    assert "pytest" in command
    assert command in (root / "README.md").read_text(), f"README.md must show `{command}` exactly"


@pytest.mark.parametrize("doc", ["usage.md", "configuration.md", "architecture.md", "operations.md",
                                 "plugins/hooks.md", "plugins/tutorial.md"])
def test_relative_links_resolve(doc: str) -> None:
    path = DOCS / doc
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{doc} links to missing {target}"
