"""Every hook exercised for real: a tiny plugin registered in-process, the CLI driven with CliRunner.

``test_plugin_hooks_have_tests`` fails when a hook in hookspecs.py has no ``test_hook_<name>`` here.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import click
import pytest
from click.testing import CliRunner, Result

from queuectl_core import hookimpl
from queuectl_core.cli.main import cli
from queuectl_core.framework import hookspecs
from queuectl_core.framework.plugins import call_each
from queuectl_core.framework.settings import Setting
from queuectl_core.jobs.records import AttemptResult
from queuectl_core.testing import register_plugin

ROOT = Path(__file__).resolve().parent.parent
# The bundled plugins are exactly the entry points pyproject.toml declares.
BUNDLED = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["queuectl"])
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("queuectl_"))


@pytest.fixture(autouse=True)
def _restore_signals() -> Iterator[None]:
    """An in-process worker installs SIGINT/SIGTERM handlers and a wake-up fd: put pytest's back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield
    for s, h in handlers.items():
        signal.signal(s, h)
    signal.set_wakeup_fd(wakeup)


def run(*args: str, input: str | None = None) -> Result:
    """``queuectl ARGS`` in this process (QUEUECTL_HOME is the per-test home from conftest)."""
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def ok(*args: str, input: str | None = None) -> Result:
    result = run(*args, input=input)
    assert result.exit_code == 0, f"queuectl {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result


def jobs() -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in json.loads(ok("list", "--json").stdout)}


@pytest.fixture
def fast() -> None:
    """Quick retries and idle checks for in-process workers."""
    ok("config", "set", "backoff_base", "0.01")
    ok("config", "set", "poll_interval_ms", "20")


# -- the meta test -------------------------------------------------------------------------------
def test_plugin_hooks_have_tests() -> None:
    """Every hook in hookspecs.py has a test_hook_<hook name> in this file."""
    assert HOOKS, "no hooks found in hookspecs.py"
    missing = [h for h in HOOKS if f"test_hook_{h}" not in globals()]
    assert not missing, f"hooks without a test_hook_<name> in tests/test_plugins.py: {missing}"


# -- queuectl_register_storages ------------------------------------------------------------------
class RecordingStorageProvider:
    """A storage named "recording": the SQLite backend in another file, recording each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.paths: list[Path] = []

    @hookimpl
    def queuectl_register_storages(self, register):
        def factory(config):
            from queuectl_plugins.sqlite_storage import SQLiteStorage

            path = Path(config.home) / "recording.db"
            self.paths.append(path)
            return _Recorder(SQLiteStorage(path), self.calls)

        register("recording", factory)


class _Recorder:
    def __init__(self, inner: Any, calls: list[str]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(name)
            return attr(*args, **kwargs)

        return call


def test_hook_queuectl_register_storages(fast) -> None:
    provider = RecordingStorageProvider()
    with register_plugin(provider, name="recording-plugin"):
        result = run("config", "set", "storage", "nope")
        assert result.exit_code == 1
        assert "unknown storage backend 'nope'" in result.stderr
        assert "recording" in result.stderr and "sqlite" in result.stderr  # the known names

        assert ok("config", "set", "storage", "recording").stdout == "storage = recording\n"
        assert ok("enqueue", "--id", "j1", "--cmd", "true").stdout == "j1\n"
        ok("worker", "start", "--burst")
        assert jobs()["j1"]["state"] == "completed"
        listed = json.loads(ok("plugins", "list", "--json").stdout)
        assert {p["name"]: p for p in listed}["recording-plugin"]["provides"]["storages"] == ["recording"]
    # A worker claims with `claim_many` where the storage has it (this one does), records a result
    # with `apply`, or with `apply_and_claim` when it takes the next job in the same transaction.
    assert {"enqueue", "register_worker"} <= set(provider.calls)
    assert {"claim", "claim_many"} & set(provider.calls)
    assert {"apply", "apply_and_claim"} & set(provider.calls)
    assert provider.paths and provider.paths[0].exists()
    assert not (Path(os.environ["QUEUECTL_HOME"]) / "queue.db").exists()  # sqlite was never used
    # With the plugin gone, its name no longer resolves: one clear line, no traceback.
    result = run("status")
    assert result.exit_code == 1 and "unknown storage backend 'recording'" in result.stderr


# -- queuectl_register_executors -----------------------------------------------------------------
class RecordingExecutor:
    """An executor named "recording" that runs nothing: it notes each job and fails "fail-*" ones."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, int]] = []

    def run(self, job, ctx) -> AttemptResult:
        self.ran.append((job.id, ctx.attempt))
        assert ctx.tick() is False  # renews the lease; nothing asked us to stop
        if job.id.startswith("fail"):
            return AttemptResult(exit_code=2, error="recorded failure")
        return AttemptResult(exit_code=0)


def test_hook_queuectl_register_executors(fast) -> None:
    executor = RecordingExecutor()

    class Plugin:
        @hookimpl
        def queuectl_register_executors(self, register):
            register("recording", lambda config: executor)

    with register_plugin(Plugin(), name="recording-executor"):
        ok("config", "set", "executor", "recording")
        ok("enqueue", "--id", "a", "--cmd", "this never runs")
        ok("enqueue", "--id", "fail-b", "--cmd", "nor this", "--max-retries", "1")
        ok("worker", "start", "--burst")
    assert sorted(executor.ran) == [("a", 1), ("fail-b", 1), ("fail-b", 2)]
    state = jobs()
    assert state["a"]["state"] == "completed"
    assert state["fail-b"]["state"] == "dead"
    assert state["fail-b"]["last_error"] == "recorded failure"
    assert state["fail-b"]["last_exit_code"] == 2


# -- queuectl_register_backoff_policies ----------------------------------------------------------
def test_hook_queuectl_register_backoff_policies(fast) -> None:
    asked: list[int] = []
    failed_events: list[Any] = []

    class Fixed:
        def delay(self, attempt, job):
            asked.append(attempt)
            return 0.25 * attempt

    class Plugin:
        @hookimpl
        def queuectl_register_backoff_policies(self, register):
            register("fixed", lambda config: Fixed())

        @hookimpl
        def queuectl_job_event(self, event):
            if event.kind == "failed":
                failed_events.append(event.job)

    with register_plugin(Plugin(), name="fixed-backoff"):
        ok("config", "set", "backoff", "fixed")
        ok("enqueue", "--id", "flaky", "--cmd", "exit 1", "--max-retries", "2")
        ok("worker", "start", "--burst")
    assert asked == [1, 2]
    assert jobs()["flaky"]["state"] == "dead"
    # Storage sets run_at = now + delay and updated_at = now in one statement: the delay is exact.
    assert [j.run_at - j.updated_at for j in failed_events] == [timedelta(seconds=0.25), timedelta(seconds=0.5)]


# -- queuectl_register_settings ------------------------------------------------------------------
def test_hook_queuectl_register_settings() -> None:
    seen: list[Any] = []

    class Plugin:
        @hookimpl
        def queuectl_register_settings(self, register):
            register(Setting("greeter.volume", int, 3, "How loud.", minimum=0))
            register(Setting("greeter.token", str, "", "A secret.", secret=True))

        @hookimpl
        def queuectl_register_executors(self, register):
            def factory(config):
                seen.append(config["greeter.volume"])
                from queuectl_plugins.subprocess_executor import _make

                return _make(config)

            register("greeter", factory)

    with register_plugin(Plugin(), name="greeter"):
        assert ok("config", "set", "greeter.volume", "7").stdout == "greeter.volume = 7\n"
        bad = run("config", "set", "greeter.volume", "-1")
        assert bad.exit_code == 1 and bad.stderr.strip() == "Error: greeter.volume must be >= 0, got '-1'"
        bad = run("config", "set", "greeter.volume", "loud")
        assert bad.exit_code == 1 and "greeter.volume must be an integer" in bad.stderr
        assert ok("config", "set", "greeter.token", "hunter2").stdout == "greeter.token = ****\n"
        shown = json.loads(ok("config", "show", "--json").stdout)["settings"]
        assert shown["greeter.volume"] == {"value": 7, "default": 3, "source": "config.toml",
                                           "plugin": "greeter", "help": "How loud."}
        assert shown["greeter.token"]["value"] == "****"
        # The value reaches a provider's factory through the config it is given.
        ok("config", "set", "executor", "greeter")
        ok("enqueue", "--cmd", "true")
        ok("worker", "start", "--burst")
        assert seen and seen[-1] == 7
    config_toml = (Path(os.environ["QUEUECTL_HOME"]) / "config.toml").read_text()
    assert "[greeter]" in config_toml and "volume = 7" in config_toml
    # Unregistered, the key is unknown again (and the file keeps it harmlessly).
    bad = run("config", "set", "greeter.volume", "1")
    assert bad.exit_code == 1 and "unknown config key 'greeter.volume'" in bad.stderr


def test_a_config_key_registered_twice_names_both_plugins() -> None:
    class A:
        @hookimpl
        def queuectl_register_settings(self, register):
            register(Setting("shared.key", int, 1, "A."))

    class B:
        @hookimpl
        def queuectl_register_settings(self, register):
            register(Setting("Shared.Key", int, 2, "B."))  # keys are normalised

    with register_plugin(A(), name="alpha"), register_plugin(B(), name="beta"):
        result = run("config", "show")
    assert result.exit_code == 1
    assert result.stderr in ("Error: config key 'shared.key' is registered twice: by 'alpha' and 'beta'\n",
                             "Error: config key 'shared.key' is registered twice: by 'beta' and 'alpha'\n")


# -- queuectl_register_commands ------------------------------------------------------------------
def test_hook_queuectl_register_commands() -> None:
    class Plugin:
        @hookimpl
        def queuectl_register_commands(self, cli):
            @cli.command()
            @click.argument("name")
            def greet(name):
                """Say hello from a plugin."""
                click.echo(f"hello {name}")

    try:
        with register_plugin(Plugin(), name="greeter"):
            call_each("queuectl_register_commands", cli=cli)  # what queuectl's main() does at start-up
            help_text = ok("--help").stdout
            assert "greet" in help_text and "Say hello from a plugin." in help_text
            assert ok("greet", "world").stdout == "hello world\n"
    finally:
        cli.commands.pop("greet", None)
    assert "greet" not in ok("--help").stdout


def test_plugin_commands_reach_the_real_cli_through_main(tmp_path: Path) -> None:
    """The installed `queuectl` (main()) calls the commands hook of every loaded plugin."""
    code = (
        "import sys, click\n"
        "from queuectl_core import hookimpl\n"
        "from queuectl_core.framework.plugins import pm, load_plugins\n"
        "class P:\n"
        "    @hookimpl\n"
        "    def queuectl_register_commands(self, cli):\n"
        "        cli.command('ping')(lambda: click.echo('pong'))\n"
        "load_plugins(); pm.register(P(), name='pinger')\n"
        "from queuectl_core.cli.main import main\n"
        "sys.argv = ['queuectl', 'ping']; main()\n"
    )
    env = {**os.environ, "QUEUECTL_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "pong\n", "")


# -- queuectl_job_event --------------------------------------------------------------------------
def test_hook_queuectl_register_notifiers(fast) -> None:
    told: list[Any] = []

    class Recorder:
        events = frozenset({"dead", "queue_empty"})
        max_age = 60.0

        def deliver(self, notification):
            told.append(notification)

    class Plugin:
        @hookimpl
        def queuectl_register_notifiers(self, register):
            register("recorder", lambda config: Recorder())
            register("unconfigured", lambda config: None)  # off
            register("broken", lambda config: 1 / 0)  # off, saying so; the others still run

    with register_plugin(Plugin(), name="recording-notifier"):
        ok("enqueue", "--id", "good", "--cmd", "true")
        ok("enqueue", "--id", "bad", "--cmd", "exit 3", "--max-retries", "0")
        result = ok("worker", "start", "--burst")
    assert sorted((n.event, n.job["id"], n.job["state"]) for n in told) == [("dead", "bad", "dead"),
                                                                            ("queue_empty", "bad", "dead")]
    told.sort(key=lambda n: n.event)
    doc = json.loads(told[0].body)
    assert doc["id"] == told[0].id and doc["event"] == "dead" and doc["job"]["last_exit_code"] == 3
    assert "notifier 'broken' (plugin 'recording-notifier') is off: its factory failed: ZeroDivisionError" \
        in result.stderr


def test_hook_queuectl_job_event(fast) -> None:
    events: list[Any] = []

    class Recorder:
        @hookimpl
        def queuectl_job_event(self, event):
            events.append(event)

    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        @hookimpl
        def queuectl_job_event(self, event):
            self.calls += 1
            raise RuntimeError("notification service is down")

    before, after = Broken(), Broken()
    # pluggy calls the last registered first: a raising plugin on either side of the recorder.
    with register_plugin(before, name="broken-before"), register_plugin(Recorder(), name="recorder"), \
            register_plugin(after, name="broken-after"):
        ok("enqueue", "--id", "good", "--cmd", "echo fine")
        ok("enqueue", "--id", "bad", "--cmd", "exit 3", "--max-retries", "1")
        result = ok("worker", "start", "--burst")
        ok("dlq", "retry", "bad")
    kinds = [str(e.kind) for e in events]
    assert kinds.count("enqueued") == 2
    for kind in ("worker_started", "claimed", "completed", "failed", "dead", "worker_stopped", "retried"):
        assert kind in kinds, kind
    assert kinds[2] == "worker_started" and kinds[-2] == "worker_stopped" and kinds[-1] == "retried"
    by_kind = {str(e.kind): e for e in events}
    assert by_kind["completed"].job.id == "good" and by_kind["completed"].result.exit_code == 0
    assert by_kind["failed"].job.id == "bad" and by_kind["failed"].job.attempts == 1
    assert by_kind["dead"].job.id == "bad" and by_kind["dead"].job.last_error == "exit 3"
    assert by_kind["retried"].job.state == "pending" and by_kind["retried"].job.attempts == 0
    assert by_kind["claimed"].worker_id == f"worker-{os.getpid()}"
    assert by_kind["enqueued"].worker_id is None
    # Both broken plugins saw every event, each failure was reported, and nothing stopped.
    assert before.calls == after.calls == len(events)
    assert "queuectl: plugin 'broken-before' failed handling completed: RuntimeError" in result.stderr
    assert "queuectl: plugin 'broken-after' failed handling claimed" in result.stderr
    state = jobs()
    assert state["good"]["state"] == "completed"
    assert state["bad"]["state"] == "pending"


# -- registries: two providers with one name -----------------------------------------------------
@pytest.mark.parametrize("hook, kind", [
    ("queuectl_register_storages", "storage backend"),
    ("queuectl_register_executors", "executor"),
    ("queuectl_register_backoff_policies", "backoff policy"),
])
def test_two_providers_with_one_name_is_an_error_naming_both(hook: str, kind: str) -> None:
    def plugin() -> Any:
        ns: dict[str, Any] = {}

        def impl(register):
            register("twin", lambda config: None)

        impl.__name__ = hook
        ns[hook] = hookimpl(impl)
        return type("P", (), {hook: staticmethod(ns[hook])})

    with register_plugin(plugin(), name="alpha"), register_plugin(plugin(), name="beta"):
        result = run("status")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr in (
        f"Error: two plugins provide the {kind} 'twin': {first!r} and {second!r}; "
        f"disable one with QUEUECTL_DISABLE_PLUGINS\n"
        for first, second in (("alpha", "beta"), ("beta", "alpha"))
    )


def test_a_plugin_cannot_take_a_bundled_name() -> None:
    class Impostor:
        @hookimpl
        def queuectl_register_storages(self, register):
            register("sqlite", lambda config: None)

    with register_plugin(Impostor(), name="impostor"):
        result = run("plugins", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: two plugins provide the storage backend 'sqlite': ")
    assert "'sqlite'" in result.stderr and "'impostor'" in result.stderr and result.stderr.count("\n") == 1


# -- discovery and QUEUECTL_DISABLE_PLUGINS (real processes: the environment is read once) -------
def test_bundled_plugins_are_entry_points() -> None:
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="queuectl")}
    assert {"sqlite", "subprocess", "exponential", "stdout"} <= BUNDLED <= set(eps)
    for name in BUNDLED:
        assert eps[name].startswith("queuectl_plugins."), eps[name]
        importlib.import_module(eps[name])


def test_bundled_plugins_load_through_entry_points_without_the_fallback(tmp_path: Path) -> None:
    code = (
        "import json, queuectl_core.framework.plugins as p\n"
        "p.DEFAULT_PLUGINS = ()\n"
        "p.load_plugins()\n"
        "print(json.dumps({n: m.__name__ for n, m in p.pm.list_name_plugin()}))\n"
    )
    env = {**os.environ, "QUEUECTL_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert BUNDLED <= set(loaded)
    assert all(loaded[n].startswith("queuectl_plugins.") for n in BUNDLED)



def test_module_plugins_give_the_hooks_pluggy_itself_finds() -> None:
    """The plugin manager passes over a module's names that cannot be hooks without asking pluggy
    (start-up); what it registers is what pluggy's own lookup registers: the bundled plugins, and
    a module whose hooks are a function named by ``specname``, a bound method and a staticmethod."""
    import types

    import pluggy

    from queuectl_core.framework.plugins import PluginManager

    class Notifier:
        @hookimpl
        def queuectl_job_event(self, event: Any) -> None:
            pass

    odd = types.ModuleType("odd_plugin")
    odd.on_event = hookimpl(specname="queuectl_job_event")(lambda event: None)  # type: ignore[attr-defined]
    odd.queuectl_register_commands = staticmethod(hookimpl(lambda cli: None))  # type: ignore[attr-defined]
    odd.Notifier, odd.CONSTANT, odd.click = Notifier, 3, click  # type: ignore[attr-defined]
    bound = types.ModuleType("bound_plugin")
    bound.queuectl_job_event = Notifier().queuectl_job_event  # type: ignore[attr-defined]
    modules = [importlib.import_module(f"queuectl_plugins.{m}") for m in
               ("sqlite_storage", "subprocess_executor", "exponential_backoff", "stdout_notify", "postgres_storage",
                "dashboard", "bench")] + [odd, bound]

    def found(manager: pluggy.PluginManager) -> list[tuple[str, str, object]]:
        manager.add_hookspecs(hookspecs)
        for n, module in enumerate(modules):
            manager.register(module, name=f"m{n}")
        return sorted(((name, impl.plugin_name, impl.function) for name in HOOKS
                       for impl in getattr(manager.hook, name).get_hookimpls()), key=lambda t: t[:2])

    ours = found(PluginManager("queuectl"))
    assert ours == found(pluggy.PluginManager("queuectl"))
    assert ("queuectl_job_event", "m7", odd.on_event) in ours and any(p == "m8" for _, p, _ in ours)
def test_plugins_list_json(q) -> None:
    listed = {p["name"]: p for p in q.json("plugins", "list")}
    assert BUNDLED <= set(listed)
    assert listed["sqlite"]["provides"]["storages"] == ["sqlite"]
    assert listed["subprocess"]["provides"]["executors"] == ["subprocess"]
    assert listed["exponential"]["provides"]["backoff_policies"] == ["exponential"]
    assert listed["stdout"]["hooks"] == ["queuectl_job_event"]
    assert all(listed[n]["version"] for n in BUNDLED)
    assert "sqlite.path" in listed["sqlite"]["provides"]["settings"]


def test_disable_plugins_hides_worker_lines(q) -> None:
    q.run("enqueue", "--id", "quiet", "--cmd", "echo hi")
    quiet = q.run("worker", "start", "--burst", env={"QUEUECTL_DISABLE_PLUGINS": "stdout"})
    assert "[worker-" not in quiet.stdout
    assert q.job("quiet")["state"] == "completed"
    q.run("enqueue", "--id", "loud", "--cmd", "echo hi")
    loud = q.run("worker", "start", "--burst")
    assert "Picked job: loud | cmd: echo hi" in loud.stdout
    assert "completed: loud" in loud.stdout


def test_disable_plugins_omits_them_from_plugins_list(q) -> None:
    env = {"QUEUECTL_DISABLE_PLUGINS": "stdout,exponential"}
    names = {p["name"] for p in json.loads(q.run("plugins", "list", "--json", env=env).stdout)}
    assert names >= {"sqlite", "subprocess"}
    assert not names & {"stdout", "exponential"}
    text = q.run("plugins", "list", env=env).stdout
    assert not [line for line in text.splitlines() if line.split(" ")[0] in ("stdout", "exponential")]


def test_disabling_a_needed_provider_is_one_clear_line(q) -> None:
    proc = q.run("status", check=False, env={"QUEUECTL_DISABLE_PLUGINS": " sqlite , stdout"})
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: unknown storage backend 'sqlite'")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# -- the tutorial's example plugin ---------------------------------------------------------------
def test_example_plugin_from_the_tutorial(fast, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/plugins/example/ is a real plugin package: load its module and use it."""
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "plugins" / "example"))
    module = importlib.import_module("queuectl_jsonl_events")
    out = tmp_path / "events.jsonl"
    with register_plugin(module, name="jsonl_events"):
        ok("config", "set", "jsonl_events.path", str(out))
        ok("enqueue", "--id", "one", "--cmd", "echo one")
        ok("enqueue", "--id", "two", "--cmd", "exit 1", "--max-retries", "0")
        ok("worker", "start", "--burst")
        ok("dlq", "retry", "two")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [line["kind"] for line in lines]
    assert kinds[:2] == ["enqueued", "enqueued"]
    assert {"worker_started", "claimed", "completed", "dead", "worker_stopped"} <= set(kinds)
    assert kinds[-1] == "retried"
    completed = next(line for line in lines if line["kind"] == "completed")
    assert completed["job"]["id"] == "one" and completed["exit_code"] == 0
    assert completed["worker_id"] == f"worker-{os.getpid()}"
    assert completed["time"].endswith("Z")
    dead = next(line for line in lines if line["kind"] == "dead")
    assert dead["job"]["last_error"] == "exit 1"


# -- the public API: provider look-up, events with config, the current app ----------------------
def test_a_plugin_wraps_the_subprocess_executor_and_reads_config_from_events(fast, tmp_path: Path) -> None:
    """Everything from queuectl_core.api: an executor putting `nice -n 10` in front of every job,
    a notifier reading its own key from the event, a command using the configured storage."""
    from dataclasses import replace

    from queuectl_core import api

    seen: list[Any] = []

    class Nice:
        @hookimpl
        def queuectl_register_settings(self, register):
            register(api.Setting("nice.level", int, 10, "Niceness of every job.", minimum=0, maximum=19))

        @hookimpl
        def queuectl_register_executors(self, register):
            def factory(config: api.Config) -> api.Executor:
                inner = api.get_executor("subprocess", config)
                level = config["nice.level"]

                class NiceExecutor:
                    def run(self, job: api.Job, ctx: api.RunContext) -> api.AttemptResult:
                        return inner.run(replace(job, command=f"nice -n {level} {job.command}"), ctx)

                return NiceExecutor()

            register("nice", factory)

        @hookimpl
        def queuectl_job_event(self, event: api.JobEvent) -> None:
            if event.kind == api.EventKind.COMPLETED:
                seen.append(event.config["nice.level"] if event.config else None)

        @hookimpl
        def queuectl_register_commands(self, cli):
            @cli.command("nice-count")
            def nice_count():
                click.echo(api.current_app().storage.counts()[api.JobState.COMPLETED])

    out = tmp_path / "nice"
    try:
        with register_plugin(Nice(), name="nice"):
            call_each("queuectl_register_commands", cli=cli)
            ok("config", "set", "executor", "nice")
            ok("config", "set", "nice.level", "7")
            ok("enqueue", "--id", "n", "--cmd", f"{sys.executable} -c 'import os; print(os.nice(0))' > {out}")
            ok("worker", "start", "--burst")
            assert jobs()["n"]["state"] == "completed"
            assert out.read_text().strip() == str(os.nice(0) + 7)
            assert seen == [7]
            assert ok("nice-count").stdout == "1\n"
    finally:
        cli.commands.pop("nice-count", None)


def _installed_plugin(tmp_path: Path, name: str, source: str) -> dict[str, str]:
    """A plugin as pip would install it: a module and a dist-info with its entry point, on the
    path of the `queuectl` processes the test starts."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text("from queuectl_core.api import hookimpl, Setting\nimport click\n" + source)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "entry_points.txt").write_text(f"[queuectl]\n{name} = {name}\n")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    return {"PYTHONPATH": str(site)}


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_a_misspelt_hook_is_an_error_at_load(q, tmp_path: Path) -> None:
    env = _installed_plugin(tmp_path, "typo", "@hookimpl\ndef queuectl_job_evnt(event):\n    pass\n")
    line = _one_error_line(q.run("status", check=False, env=env))
    assert "'typo'" in line and "queuectl_job_evnt" in line and "QUEUECTL_DISABLE_PLUGINS" in line
    q.run("status", env={**env, "QUEUECTL_DISABLE_PLUGINS": "typo"})


def test_a_failing_register_hook_is_one_line_naming_plugin_hook_and_the_way_out(q, tmp_path: Path) -> None:
    env = _installed_plugin(tmp_path, "badreg",
                            "@hookimpl\ndef queuectl_register_settings(register):\n    raise RuntimeError('boom')\n")
    line = _one_error_line(q.run("status", check=False, env=env))
    assert line.startswith("Error: plugin 'badreg' failed in queuectl_register_settings: RuntimeError('boom')")
    assert line.rstrip().endswith("(disable it with QUEUECTL_DISABLE_PLUGINS=badreg)")
    debug = q.run("status", check=False, env={**env, "QUEUECTL_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "boom" in debug.stderr
    q.run("status", env={**env, "QUEUECTL_DISABLE_PLUGINS": "badreg"})


def test_a_failing_factory_is_one_line_naming_plugin_and_hook(q, tmp_path: Path) -> None:
    env = _installed_plugin(tmp_path, "badfactory", (
        "def make(config):\n    raise OSError('no disk')\n"
        "@hookimpl\ndef queuectl_register_storages(register):\n    register('brittle', make)\n"))
    line = _one_error_line(q.run("status", check=False, env={**env, "QUEUECTL_STORAGE": "brittle"}))
    assert "plugin 'badfactory' failed in queuectl_register_storages" in line and "no disk" in line


def test_a_failing_plugin_command_is_one_line_naming_the_plugin(q, tmp_path: Path) -> None:
    env = _installed_plugin(tmp_path, "badcmd", (
        "@hookimpl\ndef queuectl_register_commands(cli):\n"
        "    @cli.command('explode')\n    def explode():\n        raise KeyError('x')\n"))
    line = _one_error_line(q.run("explode", check=False, env=env))
    assert "plugin 'badcmd' failed in its command 'explode'" in line and "KeyError" in line


def test_wrapper_implementations_run_around_the_others(fast) -> None:
    calls: list[str] = []

    class Wrap:
        @hookimpl(wrapper=True)
        def queuectl_register_settings(self, register):
            calls.append("settings before")
            result = yield
            calls.append("settings after")
            return result

        @hookimpl(hookwrapper=True)
        def queuectl_job_event(self, event):
            calls.append(f"old-style before {event.kind}")
            yield

    with register_plugin(Wrap(), name="wrap"):
        ok("enqueue", "--id", "w", "--cmd", "true")
    assert "settings before" in calls and "settings after" in calls
    assert "old-style before enqueued" in calls
