"""The plugin manager: entry points of the ``queuectl`` group, then the bundled defaults."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from queuectl_core import NAME, hookspecs
from queuectl_core.errors import QueuectlError
from queuectl_core.registry import Registry
from queuectl_core.settings import CORE_SETTINGS, Setting

# Bundled plugins, by entry-point name. Normally found through entry points like any other
# plugin; imported directly only when the package metadata is missing (a bare source tree).
DEFAULT_PLUGINS = (
    ("sqlite", "queuectl_plugins.sqlite_storage"),
    ("subprocess", "queuectl_plugins.subprocess_executor"),
    ("exponential", "queuectl_plugins.exponential_backoff"),
    ("stdout", "queuectl_plugins.stdout_notify"),
    ("postgres", "queuectl_plugins.postgres_storage"),
)

pm = pluggy.PluginManager(NAME)
pm.add_hookspecs(hookspecs)

_loaded = False
# Read once: emit() runs for every job event in a worker's hot path.
_tracing = bool(os.environ.get("QUEUECTL_TRACE_PLUGINS"))
_dists: dict[str, str] = {}  # plugin name -> distribution that provides it


def disabled_plugins() -> set[str]:
    raw = os.environ.get("QUEUECTL_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins() -> None:
    """Register every installed plugin once; QUEUECTL_DISABLE_PLUGINS blocks names."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    blocked = disabled_plugins()
    for name in blocked:
        pm.set_blocked(name)
    for name, value, dist in _entry_points(NAME):
        if name in blocked or pm.has_plugin(name):
            continue
        try:
            module_name, _, attr = value.partition(":")
            plugin: Any = importlib.import_module(module_name.strip())
            for part in filter(None, attr.strip().split(".")):
                plugin = getattr(plugin, part)
        except Exception as exc:  # a broken third-party plugin must not break the CLI
            print(f"queuectl: plugin {name!r} failed to load: {exc}", file=sys.stderr)
            continue
        pm.register(plugin, name=name)
        _dists[name] = dist
    for name, module_name in DEFAULT_PLUGINS:
        if name not in blocked and not pm.has_plugin(name):
            pm.register(importlib.import_module(module_name), name=name)


def _entry_points(group: str) -> list[tuple[str, str, str]]:
    """(name, "module:attr", distribution) for each entry point in ``group``.

    importlib.metadata reads every installed distribution's metadata and costs tens of
    milliseconds on each CLI start; this reads only ``entry_points.txt`` files, the first
    distribution of a name on sys.path winning, as importlib.metadata does.
    """
    found: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    header = f"[{group}]"
    for path in sys.path:
        try:
            entries = sorted(e.name for e in os.scandir(path or "."))
        except OSError:
            continue
        for entry in entries:
            if not entry.endswith((".dist-info", ".egg-info")):
                continue
            dist = entry.rsplit(".", 1)[0].split("-")[0]
            key = dist.lower().replace("-", "_").replace(".", "_")
            if key in seen:
                continue
            seen.add(key)
            try:
                with open(os.path.join(path or ".", entry, "entry_points.txt"), encoding="utf-8") as fh:
                    text = fh.read()
            except OSError:
                continue
            if header not in text:
                continue
            section = None
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line
                elif section == header and "=" in line and not line.startswith(("#", ";")):
                    name, _, value = line.partition("=")
                    found.append((name.strip(), value.strip(), dist))
    return found


def plugin_version(name: str) -> str | None:
    if name in _dists:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(_dists[name])
        except PackageNotFoundError:
            pass
    plugin = pm.get_plugin(name)
    version = getattr(plugin, "__version__", None)
    if version is None and getattr(plugin, "__name__", "").startswith("queuectl_plugins."):
        from queuectl_core import __version__

        version = __version__
    return version


def _trace(hook_name: str, plugin_name: str) -> None:
    if _tracing:
        print(f"queuectl trace: {hook_name} -> {plugin_name}", file=sys.stderr, flush=True)


def call_each(hook_name: str, **kwargs: Any) -> None:
    """Call every implementation of a hook on its own, in pluggy's order (last registered first,
    tryfirst/trylast honoured), passing what each one declares.

    ``register`` arguments become per-plugin callbacks so registries know who provided what.
    A plugin raising anything but a QueuectlError is reported as one line naming it.
    """
    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):
        args = {k: (v(impl.plugin_name) if k == "register" else v) for k, v in kwargs.items() if k in impl.argnames}
        _trace(hook_name, impl.plugin_name)
        try:
            impl.function(**args)
        except QueuectlError:
            raise
        except Exception as exc:
            raise QueuectlError(f"plugin {impl.plugin_name!r} failed in {hook_name}: {exc!r}") from None


@dataclass
class Registries:
    storages: Registry[Any] = field(default_factory=lambda: Registry("storage backend", "storage"))
    executors: Registry[Any] = field(default_factory=lambda: Registry("executor", "executor"))
    backoffs: Registry[Any] = field(default_factory=lambda: Registry("backoff policy", "backoff"))
    settings: dict[str, Setting] = field(default_factory=dict)

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

            from queuectl_core.settings import normalize_key

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


def emit(event: Any) -> None:
    """Broadcast an event to every notification plugin; one raising never stops the others."""
    for impl in reversed(pm.hook.queuectl_job_event.get_hookimpls()):
        _trace("queuectl_job_event", impl.plugin_name)
        try:
            impl.function(event=event)
        except Exception as exc:
            try:
                print(f"queuectl: plugin {impl.plugin_name!r} failed handling {event.kind}: {exc!r}",
                      file=sys.stderr, flush=True)
            except Exception:
                pass
