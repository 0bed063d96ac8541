"""The docs keep up with the code: every hook, command, option and config key is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Iterator

import click
import pytest

from queuectl_core.cli.main import cli
from queuectl_core.framework import hookspecs
from queuectl_core.framework.plugins import pm, registries

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
    from queuectl_core.jobs.models import JobState

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


# -- the public plugin API (docs/plugins/api.md) ------------------------------------------------
def _api_doc() -> str:
    return (DOCS / "plugins" / "api.md").read_text()


def test_every_public_api_name_is_documented() -> None:
    from queuectl_core import api

    text = _api_doc()
    missing = [name for name in api.__all__ if f"`{name}`" not in text]
    assert not missing, f"docs/plugins/api.md does not document: {missing}"
    public = {n for n in vars(api) if not n.startswith("_") and n != "annotations"}
    assert public <= set(api.__all__), f"queuectl_core.api: names missing from __all__: {public - set(api.__all__)}"


def _model_params() -> list[tuple[str, str]]:
    import dataclasses

    from queuectl_core import api

    return [(cls.__name__, f.name) for cls in (api.Job, api.NewJob, api.AttemptResult, api.WorkerInfo,
                                               api.JobEvent, api.RunContext, api.Setting, api.QueueInfo, api.Schedule)
            for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("model, field", _model_params(), ids=[f"{m}.{f}" for m, f in _model_params()])
def test_every_model_field_is_documented(model: str, field: str) -> None:
    sections = _sections(_api_doc())
    assert model in sections, f"docs/plugins/api.md has no '## `{model}`' section"
    assert f"| `{field}` |" in sections[model], f"docs/plugins/api.md: {model}.{field} is not in its table"


@pytest.mark.parametrize("enum", ["JobState", "EventKind"])
def test_every_state_and_event_kind_is_documented(enum: str) -> None:
    from queuectl_core import api

    body = _sections(_api_doc())[enum]
    missing = [str(m) for m in getattr(api, enum) if f"`{m}`" not in body]
    assert not missing, f"docs/plugins/api.md, {enum}: {missing}"


def test_plugin_docs_import_only_the_public_api() -> None:
    """A plugin author never needs an internal module: the examples import queuectl_core.api."""
    for page in ("hooks.md", "api.md", "tutorial.md"):
        text = (DOCS / "plugins" / page).read_text()
        for line in re.findall(r"^\s*(?:from|import) queuectl_core\S*", text, flags=re.M):
            assert line.split()[1] in ("queuectl_core.api", "queuectl_core.cli.main", "queuectl_core.testing"), \
                f"docs/plugins/{page}: {line.strip()}"
    example = (DOCS / "plugins" / "example" / "queuectl_jsonl_events.py").read_text()
    assert re.findall(r"^(?:from|import) queuectl_core\S*", example, flags=re.M) == ["from queuectl_core.api"]


def test_the_tutorial_shows_the_example_as_it_is() -> None:
    """Each code block of tutorial.md is a verbatim part of docs/plugins/example."""
    example = DOCS / "plugins" / "example"
    files = "\n".join(p.read_text() for p in (example / "pyproject.toml", example / "queuectl_jsonl_events.py",
                                              example / "tests" / "test_jsonl_events.py"))
    blocks = re.findall(r"^```(?:python|toml)\n(.*?)^```", (DOCS / "plugins" / "tutorial.md").read_text(),
                        flags=re.M | re.S)
    assert len(blocks) >= 4
    for block in blocks:
        for part in filter(None, (p.strip() for p in block.split("\n\n"))):
            assert part in files, f"tutorial.md shows code that is not in docs/plugins/example:\n{part}"


def _protocol_methods(*protos: type) -> list[str]:
    """The methods of these protocols and of the protocols they are composed of."""
    return sorted({n for proto in protos for cls in proto.__mro__ if cls.__module__.startswith("queuectl_core")
                   for n, v in vars(cls).items() if callable(v) and not n.startswith("_")})


def _storage_methods() -> list[str]:
    from queuectl_core.interfaces import Storage
    from queuectl_core.storage.capabilities import CAPABILITIES

    return _protocol_methods(Storage, *CAPABILITIES)


@pytest.mark.parametrize("method", _storage_methods())
def test_every_storage_method_is_documented(method: str) -> None:
    """A third-party backend is written from api.md: every protocol method has its row there."""
    sections = _sections(_api_doc())
    assert "Storage" in sections, "docs/plugins/api.md has no '## `Storage`' section"
    assert f"| `{method}` |" in sections["Storage"], f"docs/plugins/api.md: Storage.{method} is not in its table"


def test_every_change_field_is_documented() -> None:
    import dataclasses

    from queuectl_core.api import Change

    sections = _sections(_api_doc())
    missing = [f.name for f in dataclasses.fields(Change) if f"| `{f.name}` |" not in sections.get("Change", "")]
    assert not missing, f"docs/plugins/api.md: Change fields not in its table: {missing}"


def test_the_executor_example_nices_the_whole_command(tmp_path: Path) -> None:
    """api.md's `Nice` executor, run as written: a compound command runs niced as a whole."""
    import types
    from datetime import UTC, datetime

    from queuectl_core.api import RunContext, get_executor
    from queuectl_core.jobs.models import Job, JobState
    from queuectl_core.testing import make_config, register_plugin

    section = _api_doc().split("### An executor wrapping subprocess", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    module = types.ModuleType("api_md_nice_example")
    exec(compile(code.group(1), "api.md", "exec"), module.__dict__)
    with register_plugin(module, name="api-md-nice-example"):
        executor = get_executor("nice", make_config(tmp_path))
        now = datetime.now(UTC)
        job = Job(id="nice1", command="true && nice", state=JobState.PROCESSING, attempts=1, max_retries=0,
                  priority=0, created_at=now, updated_at=now, run_at=now)
        result = executor.run(job, RunContext(attempt=1, tick_interval=1.0, tick=lambda: False))
    assert (result.exit_code, (result.output_tail or "").strip()) == (0, "10")
