"""The plugin manager: entry points of the ``queuectl`` group, then the bundled defaults."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from importlib.metadata import Distribution, entry_points
from types import FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

import pluggy

from queuectl_core import NAME
from queuectl_core.errors import PluginError, QueuectlError
from queuectl_core.framework import hookspecs
from queuectl_core.framework.registry import Registry
from queuectl_core.framework.settings import CORE_SETTINGS, Setting

if TYPE_CHECKING:
    from pluggy import HookimplOpts

    from queuectl_core.framework.settings import Config
    from queuectl_core.interfaces import BackoffPolicy, Executor, Storage
    from queuectl_core.jobs.models import JobEvent

T = TypeVar("T")

# Bundled plugins, by entry-point name. Normally found through entry points like any other
# plugin; imported by name only when an entry point is missing (an install whose metadata is stale).
DEFAULT_PLUGINS = (
    ("sqlite", "queuectl_plugins.sqlite_storage"),
    ("subprocess", "queuectl_plugins.subprocess_executor"),
    ("exponential", "queuectl_plugins.exponential_backoff"),
    ("stdout", "queuectl_plugins.stdout_notify"),
    ("webhook", "queuectl_plugins.webhook_notify"),
    ("command", "queuectl_plugins.command_notify"),
    ("desktop", "queuectl_plugins.desktop_notify"),
    ("postgres", "queuectl_plugins.postgres_storage"),
    ("dashboard", "queuectl_plugins.dashboard"),
    ("bench", "queuectl_plugins.bench"),
)

# What pluggy can take a module's hook implementation from (see PluginManager.parse_hookimpl_opts).
_HOOKABLE = (FunctionType, MethodType, staticmethod, classmethod)


class PluginManager(pluggy.PluginManager):
    def register(self, plugin: object, name: str | None = None) -> str | None:
        """As pluggy's, except that registering a plugin again under the name it already has is
        a no-op: a test registering a plugin that is also installed (and so loaded through its
        entry point) must not fail with "Plugin name already registered"."""
        if name is not None and self.get_plugin(name) is plugin:
            return name
        return super().register(plugin, name)

    def parse_hookimpl_opts(self, plugin: object, name: str) -> HookimplOpts | None:
        """As pluggy's, with one shortcut. pluggy looks every name of a plugin up statically
        (``inspect.getattr_static``) to find its hook implementations; of a plain module only a
        function or a method can be one, so a module's other names (its imports, classes and
        constants: most of the 215 names of the seven bundled plugins) are passed over here
        without that lookup. Every other name, and every other kind of plugin, goes to pluggy
        (tests/test_plugins.py checks both find the same hooks). Saves ~0.7 ms of every start-up.
        """
        if type(plugin) is ModuleType and not isinstance(vars(plugin).get(name), _HOOKABLE):
            return None
        return super().parse_hookimpl_opts(plugin, name)


pm = PluginManager(NAME)
pm.add_hookspecs(hookspecs)

_loaded = False
# Read once: emit() runs for every job event in a worker's hot path.
_tracing = bool(os.environ.get("QUEUECTL_TRACE_PLUGINS"))
# plugin name -> the distribution that provides it (its metadata is parsed only when asked for:
# `plugins list` shows versions, every other command never needs them).
_dists: dict[str, Distribution] = {}
_names: list[str] = []  # plugins registered by load_plugins (entry points, then bundled)


def debug_traceback() -> None:
    """QUEUECTL_DEBUG=1 prints the traceback a plugin failure otherwise hides behind one line."""
    if os.environ.get("QUEUECTL_DEBUG"):
        import traceback

        traceback.print_exc()


def warn(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except Exception:
        pass


def broadcast(impls: Iterable[tuple[str, Callable[..., Any]]], event: JobEvent,
              trace: Callable[[str, str], None] | None = None) -> None:
    """Call each (plugin name, function) with ``event=event``, in the order given; a plugin
    raising is one warning line naming it, and the next one is still called."""
    for plugin_name, function in impls:
        if trace is not None:
            trace("queuectl_job_event", plugin_name)
        try:
            function(event=event)
        except Exception as exc:
            debug_traceback()
            warn(f"queuectl: plugin {plugin_name!r} failed handling {event.kind}: {exc!r}")


def disabled_plugins() -> set[str]:
    raw = os.environ.get("QUEUECTL_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins() -> None:
    """Register every installed plugin once; QUEUECTL_DISABLE_PLUGINS blocks names.

    A hook implementation whose name no hook has (``queuectl_job_evnt``) is an error here, at
    load, rather than a hook that is silently never called.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    blocked = disabled_plugins()
    for name in blocked:
        pm.set_blocked(name)
    for ep in entry_points(group=NAME):
        if ep.name in blocked or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break the CLI
            debug_traceback()
            print(f"queuectl: plugin {ep.name!r} failed to load: {exc}", file=sys.stderr)
            continue
        _register(plugin, ep.name)
        if ep.dist is not None:
            _dists[ep.name] = ep.dist
        _names.append(ep.name)
    for name, module_name in DEFAULT_PLUGINS:
        if name not in blocked and not pm.has_plugin(name):
            _register(_import_bundled(module_name), name)
            _names.append(name)
    check_pending()


def loaded_plugins() -> list[str]:
    """The names load_plugins registered (a plugin registered in-process is not among them)."""
    return [name for name in _names if pm.has_plugin(name)]


def _register(plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except ValueError as exc:
        # The same module under a second entry-point name (an editable install beside a
        # regular one, or a plugin listed twice): register it once.
        if pm.is_registered(plugin):
            return
        raise PluginError(f"plugin {name!r} cannot be registered: {exc}") from None
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} is invalid: {exc}; disable it with "
                          f"QUEUECTL_DISABLE_PLUGINS={name}") from None


def check_pending() -> None:
    """Fail on a hook implementation that matches no hook (a misspelt ``queuectl_*`` name)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name!r}: {exc} (see docs/plugins/hooks.md for the hook names; "
                          f"disable it with QUEUECTL_DISABLE_PLUGINS={name})") from None


def _import_bundled(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise PluginError(f"the bundled plugin {module_name!r} cannot be imported; "
                          f"install queuectl (pip install -e .)") from None


def plugin_version(name: str) -> str | None:
    if name in _dists:
        return _dists[name].version
    plugin = pm.get_plugin(name)
    found: str | None = getattr(plugin, "__version__", None)
    if found is None and getattr(plugin, "__name__", "").startswith("queuectl_plugins."):
        from queuectl_core import __version__

        found = __version__
    return found


def _trace(hook_name: str, plugin_name: str) -> None:
    if _tracing:
        print(f"queuectl trace: {hook_name} -> {plugin_name}", file=sys.stderr, flush=True)


def is_wrapper(impl: Any) -> bool:
    return bool(impl.hookwrapper or getattr(impl, "wrapper", False))


_is_wrapper = is_wrapper


def _failed(plugin: str, hook_name: str, exc: BaseException, hint: str = "") -> PluginError:
    debug_traceback()
    return PluginError(f"plugin {plugin!r} failed in {hook_name}: {exc!r}{hint.format(plugin=plugin)}")


@contextmanager
def _wrappers(hook_name: str, impls: list[Any], args_for: Callable[[Any], dict[str, Any]],
              hint: str = "") -> Iterator[None]:
    """Run ``wrapper=True`` / ``hookwrapper=True`` implementations around the plain ones, as
    pluggy would: their code before ``yield`` first, the rest after. Core calls plain
    implementations one by one (to pass each its own ``register`` and isolate failures), which
    pluggy's own call would not allow."""
    started: list[tuple[Any, Any]] = []
    for impl in impls:
        _trace(hook_name, impl.plugin_name)
        try:
            gen = impl.function(**args_for(impl))
            next(gen)
        except Exception as exc:
            raise _failed(impl.plugin_name, hook_name, exc, hint) from None
        started.append((impl, gen))
    try:
        yield
    except BaseException:
        for _, gen in reversed(started):
            gen.close()
        raise
    for impl, gen in reversed(started):
        try:
            gen.send(pluggy.Result(None, None) if impl.hookwrapper else None)
        except StopIteration:
            continue
        except Exception as exc:
            raise _failed(impl.plugin_name, hook_name, exc, hint) from None
        gen.close()


def call_each(hook_name: str, **kwargs: Any) -> None:
    """Call every implementation of a hook on its own, in pluggy's order (last registered first,
    tryfirst/trylast honoured, wrappers around the rest), passing what each one declares.

    ``register`` arguments become per-plugin callbacks so registries know who provided what.
    A plugin raising anything but a QueuectlError is reported as one line naming it and the hook,
    and for ``register`` hooks how to disable it.
    """
    hook = getattr(pm.hook, hook_name)
    impls = list(reversed(hook.get_hookimpls()))
    # Every command runs the register hooks: the way out has to be in the line itself.
    hint = " (disable it with QUEUECTL_DISABLE_PLUGINS={plugin})" if hook_name.startswith("queuectl_register_") else ""

    def args_for(impl: Any) -> dict[str, Any]:
        return {k: (v(impl.plugin_name) if k == "register" else v) for k, v in kwargs.items() if k in impl.argnames}

    with _wrappers(hook_name, [i for i in impls if _is_wrapper(i)], args_for, hint):
        for impl in impls:
            if _is_wrapper(impl):
                continue
            _trace(hook_name, impl.plugin_name)
            cli = kwargs.get("cli")
            before = set(getattr(cli, "commands", {}))
            try:
                impl.function(**args_for(impl))
            except QueuectlError:
                raise
            except Exception as exc:
                raise _failed(impl.plugin_name, hook_name, exc, hint) from None
            if cli is not None:
                for name in set(cli.commands) - before:
                    _guard_command(cli.commands[name], impl.plugin_name)


def _guard_command(command: Any, plugin: str) -> None:
    """A plugin's command raising is one ``Error:`` line naming the plugin, not a traceback."""
    import click

    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _guard_command(sub, plugin)
    callback = command.callback
    if callback is None or getattr(callback, "_queuectl_guarded", False):
        return

    @functools.wraps(callback)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except (QueuectlError, click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            raise _failed(plugin, f"its command {command.name!r} (queuectl_register_commands)", exc) from None

    guarded._queuectl_guarded = True  # type: ignore[attr-defined]
    command.callback = guarded


class Registries:
    """Everything the plugins registered: storages, executors, backoff policies and config keys.
    (A plain class: as a dataclass it cost every command ~0.25 ms to create at import.)"""

    def __init__(self) -> None:
        self.storages: Registry[Any] = Registry("storage backend", "storage")
        self.executors: Registry[Any] = Registry("executor", "executor")
        self.backoffs: Registry[Any] = Registry("backoff policy", "backoff")
        self.settings: dict[str, Setting] = {}

    def settings_by_plugin(self, plugin: str) -> list[str]:
        return sorted(k for k, s in self.settings.items() if s.plugin == plugin)


_registries: Registries | None = None


def registries() -> Registries:
    """Everything the plugins registered, collected once per process."""
    global _registries
    if _registries is not None:
        return _registries
    load_plugins()
    regs = Registries()
    for s in CORE_SETTINGS:
        regs.settings[s.key] = s

    def add_setting(plugin: str):
        def register(setting: Setting) -> None:
            from dataclasses import replace

            from queuectl_core.framework.settings import normalize_key

            key = normalize_key(setting.key)
            if key in regs.settings:
                raise QueuectlError(
                    f"config key {key!r} is registered twice: by {regs.settings[key].plugin!r} and {plugin!r}"
                )
            regs.settings[key] = replace(setting, key=key, plugin=plugin)

        return register

    def adder(registry: Registry[Any]):
        return lambda plugin: lambda name, factory: registry.register(name, factory, plugin=plugin)

    call_each("queuectl_register_settings", register=add_setting)
    call_each("queuectl_register_storages", register=adder(regs.storages))
    call_each("queuectl_register_executors", register=adder(regs.executors))
    call_each("queuectl_register_backoff_policies", register=adder(regs.backoffs))
    _registries = regs
    return regs


def reset() -> None:
    """Forget collected registries (tests register and unregister plugins in-process)."""
    global _registries
    _registries = None


_config: Config | None = None


def set_config(config: Config) -> None:
    """The configuration of this process's queue; every emitted event carries it."""
    global _config
    _config = config


def make_provider(registry: Registry[T], name: str, config: Config) -> T:
    """Build the provider ``name`` of a registry with ``config``; a factory raising is one line
    naming its plugin and the hook it was registered in."""
    provider = registry.get(name)
    try:
        return provider.factory(config)
    except QueuectlError:
        raise
    except Exception as exc:
        hook = {"storage": "queuectl_register_storages", "executor": "queuectl_register_executors",
                "backoff": "queuectl_register_backoff_policies"}[registry.config_key]
        raise _failed(provider.plugin, f"{hook} (the factory of {registry.kind} {name!r})", exc) from None


def get_storage(name: str, config: Config) -> Storage:
    return make_provider(registries().storages, name, config)


def get_executor(name: str, config: Config) -> Executor:
    return make_provider(registries().executors, name, config)


def get_backoff(name: str, config: Config) -> BackoffPolicy:
    return make_provider(registries().backoffs, name, config)


def emit(event: JobEvent) -> None:
    """Broadcast an event to every notification plugin; one raising never stops the others.

    The event gets this process's config (``event.config``) when its emitter did not set one.
    """
    emit_many((event,))


def emit_many(events: Iterable[JobEvent]) -> None:
    """:func:`emit` for each event, with the implementations looked up once (``enqueue --file``
    emits one event per job: 100,000 jobs, ~0.5 s less)."""
    impls = list(reversed(pm.hook.queuectl_job_event.get_hookimpls()))
    wrappers = [i for i in impls if _is_wrapper(i)]
    plain = [(i.plugin_name, i.function) for i in impls if not _is_wrapper(i)]
    for event in events:
        if event.config is None and _config is not None:
            event = replace(event, config=_config)
        if not wrappers:
            broadcast(plain, event, _trace)
            continue
        try:
            with _wrappers("queuectl_job_event", wrappers, lambda impl: {"event": event}):
                broadcast(plain, event, _trace)
        except PluginError as exc:
            warn(f"queuectl: {exc}")
