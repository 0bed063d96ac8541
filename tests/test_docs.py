"""The docs keep up with the code: every hook, command, option and config key is documented."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path
from typing import Iterator

import click
import pytest

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


def _reference_helper():  # type: ignore[no-untyped-def]
    """docs/cli_reference.py, the module the docs build uses to load every command."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("queuectl_docs_cli_reference", DOCS / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helper = _reference_helper()
ROOT = _helper.populate()
COMMANDS: dict[tuple[str, ...], click.Command] = _helper.commands(ROOT)
PROSE = [*sorted(p for p in DOCS.rglob("*.md") if p.name != "reference.md"), DOCS.parent / "README.md",
         DOCS.parent / "bench" / "README.md", DOCS.parent / "bench" / "NOTES.md"]

# Mentions of what other branches of issue 20 are adding (spec section 14). The guide describes
# them already; each entry is allowed to be missing from the commands until it lands, and
# test_pending_mentions_are_still_missing fails once it exists, so whoever merges checks the
# guide's text against the real thing and then deletes the entry.
PENDING: set[tuple[str, ...]] = set()


def _options(command: click.Command) -> set[str]:
    ctx = click.Context(command, info_name=command.name)
    return {opt for param in command.get_params(ctx) if isinstance(param, click.Option)
            for opt in (*param.opts, *param.secondary_opts)}


ALL_OPTIONS = set().union(*(_options(c) for c in (ROOT, *COMMANDS.values())))


def _code(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, code, is_inline) for every fenced-block line and inline code span."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield number, line, False
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span, True


def _words(code: str) -> list[str]:
    """The words of one command line as a shell would split them, up to where it ends (a comment,
    a pipe into another program, `;`, `&&`, an unbalanced `)`)."""
    depth, end = 0, len(code)
    for i, ch in enumerate(code):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                end = i
                break
        elif ch == "#" and (i == 0 or code[i - 1].isspace()):
            end = i
            break
        elif ch in ";&" or (ch in "|/" and re.match(r"[|/]\s+[^\s-]", code[i:]) and i and code[i - 1] == " "):
            end = i  # `| jq`, and `/ queue resume` (alternatives written on one line)
            break
    try:
        words = shlex.split(code[:end])
    except ValueError:  # an unbalanced quote: a fragment of a line
        words = code[:end].split()
    words = [w.strip("[](),.…`'\"") for w in words]
    return [w for w in words if w and w != "-"]  # `-` is stdin


def _check(words: list[str]) -> list[str]:
    """What in one mention (`queuectl` and the words after it) the commands do not have."""
    path: tuple[str, ...] = ()
    command: click.Command = ROOT
    problems = []
    for word in words:
        if word == "--":  # the job's own command follows
            break
        if word.startswith("-") and not re.match(r"-\d", word):
            option = word.split("=", 1)[0]
            if option not in _options(command) and (*path, option) not in PENDING:
                problems.append(f"`queuectl {' '.join(path)}` has no option {option}")
        elif isinstance(command, click.Group):
            if (*path, word) in COMMANDS:
                path = (*path, word)
                command = COMMANDS[path]
            elif (*path, word) in PENDING:
                return problems
            elif re.fullmatch(r"[a-z][a-z-]*", word):
                problems.append(f"`queuectl {' '.join((*path, word))}` is not a command")
                return problems
            else:  # a placeholder or output, not a command name
                return problems
    return problems


def _mentions(path: Path) -> Iterator[tuple[int, str]]:
    """Each problem in the file's code: `queuectl ...` lines and spans, spans that start with a
    command's name (`list --tag`), and bare option spans (`--burst`)."""
    top = {p[0] for p in COMMANDS}
    for number, code, inline in _code(path.read_text()):
        if not inline:
            code = re.split(r"(?:^|\s)#(?:\s|$)", code, maxsplit=1)[0]  # a shell comment
        # `queuectl` where a shell would run it: first on the line (after a `$ ` prompt), or after
        # a path, `=`, `(`, a quote, `;`, `|` or `&&`.
        for match in re.finditer(r"(?:^\s*(?:\$\s+)?|[=/(;|&'\"]\s*)queuectl (?=\S)", code):
            for problem in _check(_words(code[match.end():])):
                yield number, problem
        if inline and not code.startswith("queuectl"):
            words = _words(code)
            if words and words[0] in top and any(w.startswith("-") for w in words):
                for problem in _check(words):
                    yield number, problem
            elif re.fullmatch(r"--[a-z][a-z-]*(?:[ =]\S+)?", code):
                option = re.split(r"[ =]", code)[0]
                if option not in ALL_OPTIONS and not any(p[-1] == option for p in PENDING):
                    yield number, f"no command has the option {option}"


@pytest.mark.parametrize("path", PROSE, ids=[str(p.relative_to(DOCS.parent)) for p in PROSE])
def test_every_documented_command_and_option_exists(path: Path) -> None:
    """A command or option the prose shows in code (`queuectl dlq retry --all`) exists."""
    if not path.exists():
        pytest.skip(f"{path.name} does not exist")
    problems = [f"{path.relative_to(DOCS.parent)}:{n}: {p}" for n, p in _mentions(path)]
    assert not problems, "\n".join(problems)


def test_the_drift_check_catches_drift(tmp_path: Path) -> None:
    """The check itself: made-up commands and options are reported, real ones and job commands not."""
    doc = tmp_path / "x.md"
    doc.write_text("Run `queuectl enqueue --cmd 'a' --bogus 1` or `list --nope`, `--never`.\n"
                   "```sh\n$ queuectl frobnicate now\nqueuectl dlq retry --all | grep -v x\n"
                   "queuectl enqueue --queue q -- rsync -a --delete src dst   # --wrong in a comment\n```\n")
    problems = [p for _, p in _mentions(doc)]
    assert problems == ["`queuectl enqueue` has no option --bogus", "`queuectl list` has no option --nope",
                        "no command has the option --never", "`queuectl frobnicate` is not a command"]


def test_pending_mentions_are_still_missing() -> None:
    """Once a feature of PENDING lands, its entry goes: check the guide's text against it, then
    delete the entry so the drift test covers it like any other."""
    landed = []
    for entry in sorted(PENDING):
        if entry[-1].startswith("-"):
            if entry[:-1] in COMMANDS and entry[-1] in _options(COMMANDS[entry[:-1]]):
                landed.append(entry)
        elif entry in COMMANDS:
            landed.append(entry)
    assert not landed, (f"these exist now: {[' '.join(e) for e in landed]}; check what docs/usage.md "
                        "says about them, then remove them from PENDING in tests/test_docs.py")


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=[" ".join(p) for p in sorted(COMMANDS)])
def test_every_command_is_in_the_reference_and_the_prose(path: tuple[str, ...]) -> None:
    """The generated reference renders every command with every option, and some page of prose
    (the guide, operations, the dashboard page) says what it is for."""
    rendered = _rendered_reference()
    name = "queuectl " + " ".join(path)
    assert f'id="{name.replace(" ", "-")}"' in rendered, f"docs/reference.md does not render `{name}`"
    section = rendered.split(f'id="{name.replace(" ", "-")}"', 1)[1].split("<h", 1)[0]
    for option in _options(COMMANDS[path]):
        assert option in section, f"the reference's `{name}` lacks {option}"
    words = re.escape(" ".join(path))
    shown = any(re.search(rf"(?:^|queuectl ){words}(?![\w-])", code.strip().lstrip("$ "))
                for p in PROSE if p.exists() for _, code, _ in _code(p.read_text()))
    assert shown, f"no page of the docs shows `{name}` in use"


_RENDERED: list[str] = []


def _rendered_reference() -> str:
    """docs/reference.md rendered as the docs build renders it (mkdocs-click, from the commands)."""
    if not _RENDERED:
        markdown = pytest.importorskip("markdown")
        pytest.importorskip("mkdocs_click", reason="the docs extra: pip install '.[docs]'")
        text = (DOCS / "reference.md").read_text()
        _RENDERED.append(markdown.markdown(text, extensions=["attr_list", "fenced_code", "mkdocs-click"]))
    return _RENDERED[0]


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


def test_ci_builds_the_docs_with_warnings_as_errors() -> None:
    """.ci/run builds the site (and so the generated reference) strictly, after lint, before tests."""
    ci = (DOCS.parent / ".ci" / "run").read_text()
    assert "pip install -q '.[docs]'" in ci
    build = ci.index("mkdocs build --strict")
    assert ci.index("ruff check") < build < ci.index("python -m pytest")
    config = (DOCS.parent / "mkdocs.yml").read_text()
    assert "docs/cli_reference.py" in config and "mkdocs-click" in config


def test_readme_keeps_the_ci_test_command() -> None:
    """.ci/run runs the README's second setup command; the two must not drift apart."""
    root = DOCS.parent
    ci = (root / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(ci) if "README's second setup command" in line)
    command = ci[marker + 1].strip()
    assert "pytest" in command
    assert command in (root / "README.md").read_text(), f"README.md must show `{command}` exactly"


@pytest.mark.parametrize("path", PROSE, ids=[str(p.relative_to(DOCS.parent)) for p in PROSE])
def test_relative_links_resolve(path: Path) -> None:
    """The site build (`mkdocs build --strict`) checks docs/ links and anchors too; this also covers
    the README and bench/README.md, which are outside the site."""
    if not path.exists():
        pytest.skip(f"{path.name} does not exist")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


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
