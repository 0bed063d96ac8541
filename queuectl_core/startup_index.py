"""The start-up index: what a full `queuectl` start found, so the next `queuectl enqueue` need not
find it again (queuectl_core.fast_enqueue).

A full start imports click and pluggy, reads every installed distribution's entry points, imports
and registers every plugin, calls every ``queuectl_register_*`` hook and parses config.toml with
tomllib: ~80 ms of a ~135 ms `queuectl enqueue` on a 2-vCPU machine (``python -X importtime``).
After a successful full `enqueue`, this module writes ``.startup-index.json`` in QUEUECTL_HOME
(0600, replaced atomically) recording:

- which plugins are registered, which storage each storage name is built by, which functions
  implement ``queuectl_register_settings`` and, in pluggy's call order, ``queuectl_job_event``;
- config.toml's values (already validated against every plugin's settings);
- every key's value as config.toml and the defaults give it, and QUEUECTL_HOME as this process
  spells it (``values``: a default may be a path inside it);
- keyed QUEUECTL_* values that were validated (as keyed digests, never the values themselves);
- what it is valid for: the Python version, ``sys.path`` and the modification time of each of its
  directories (pip adds, renames or removes a ``*.dist-info`` directory there on every install,
  upgrade and removal, which changes the directory's mtime), the size and mtime of each plugin's
  module file (a plugin edited in place), and config.toml's inode, size, mode, mtime and ctime.

``load`` returns None whenever any of that differs, and the caller then takes the full path,
which writes a fresh index.
"""

from __future__ import annotations

import json
import os
import sys

from queuectl_core.homedir import home_text

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see queuectl_core/__init__.py)

if TYPE_CHECKING:
    from os import PathLike
    from typing import Any

    from queuectl_core.app import App

INDEX_FILE = ".startup-index.json"
FORMAT = 1
# Not settings: they change how plugins are loaded or traced, so their presence means a full start.
PLUGIN_ENV = ("QUEUECTL_DISABLE_PLUGINS", "QUEUECTL_TRACE_PLUGINS")


def _path_stamps() -> list[list[Any]]:
    out: list[list[Any]] = []
    for entry in sys.path:
        try:
            out.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            out.append([entry, None])
    return out


def _file_stamp(path: str) -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns]


def env_digest(salt: bytes, name: str, value: str) -> str:
    """A keyed digest of one QUEUECTL_* value (it may be a DSN with a password: never stored)."""
    from hashlib import blake2b  # a builtin module: no OpenSSL load

    return blake2b(f"{name}={value}".encode("utf-8", "surrogateescape"), key=salt, digest_size=16).hexdigest()


def ref(obj: Any) -> str | None:
    """``module:qualname`` that finds ``obj`` again by import, or None if nothing would."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return f"{module}:{qualname}" if found is obj else None


def import_module(name: str) -> Any:
    """``importlib.import_module(name)`` for an absolute name, without importing ``importlib``
    (with ``warnings``, ~2 % of the click-free enqueue: farm-bench, docs/operations.md)."""
    __import__(name)
    return sys.modules[name]


def resolve(text: str) -> Any:
    """The object a ``ref`` names (importing its module)."""
    module, _, qualname = text.partition(":")
    found: Any = import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def save(app: App, enqueue_is_core: bool) -> None:
    """Record this full start for the next `queuectl enqueue`; quietly nothing when it cannot be
    recorded faithfully (plugins registered in-process, blocked plugins, a wrapper hook, a value
    JSON cannot hold). Never fails the command that calls it."""
    try:
        index = _collect(app, enqueue_is_core)
    except Exception:
        index = None
    if index is None:  # an index already there stays: load() checks it still holds
        return
    path = app.home / INDEX_FILE
    tmp = app.home / f".{INDEX_FILE}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(index, fh)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _collect(app: App, enqueue_is_core: bool) -> dict[str, Any] | None:
    from queuectl_core import __version__, plugins, settings

    if not enqueue_is_core or any(name in os.environ for name in PLUGIN_ENV):
        return None
    pm = plugins.pm
    entries = plugins.loaded_plugins()
    if {pm.get_name(p) for p in pm.get_plugins()} != set(entries):
        return None  # a plugin registered in-process (a test): no entry point finds it again
    modules = []
    for name in entries:
        plugin = pm.get_plugin(name)
        module = sys.modules.get(getattr(plugin, "__module__", None) or "") if not hasattr(plugin, "__file__") else plugin
        file = getattr(module, "__file__", None)
        if file is None:
            return None
        modules.append([file, _file_stamp(file)])
    # The recorded values hold core's defaults (CORE_SETTINGS): an edited checkout of queuectl
    # itself (an editable install, where neither the version nor sys.path changes) is noticed.
    modules.append([settings.__file__, _file_stamp(str(settings.__file__))])

    def impls(hook_name: str) -> list[dict[str, Any]] | None:
        out = []
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # call order
            function = ref(impl.function)
            if function is None or plugins.is_wrapper(impl):
                return None
            out.append({"plugin": impl.plugin_name, "function": function, "argnames": list(impl.argnames)})
        return out

    settings_hooks, event_hooks = impls("queuectl_register_settings"), impls("queuectl_job_event")
    if settings_hooks is None or event_hooks is None:
        return None
    storages = {}
    for name in app.registries.storages.names():
        provider = app.registries.storages.get(name)
        factory = ref(provider.factory)
        if factory is not None:
            storages[name] = {"plugin": provider.plugin, "factory": factory}
    salt_hex = os.urandom(16).hex()
    setting_env = {s.env_var: key for key, s in app.registries.settings.items()}
    env_ok = [env_digest(bytes.fromhex(salt_hex), var, os.environ[var]) for var in setting_env if var in os.environ]
    json.dumps(app.config.file_values)  # TypeError (a TOML date): nothing is recorded
    return {
        "format": FORMAT, "version": __version__, "python": sys.version,
        "sys_path": _path_stamps(), "modules": modules,
        "config": _file_stamp(str(app.config.path)), "file_values": app.config.file_values,
        "setting_env": setting_env, "salt": salt_hex, "env_ok": env_ok,
        "storages": storages, "settings_hooks": settings_hooks, "job_event": event_hooks,
        "values": _values(app),
    }


def _values(app: App) -> dict[str, Any] | None:
    """Every key's value as config.toml and the defaults give it (no QUEUECTL_* variable), and
    the home directory as this process spells it (``home``: a default may be a path inside it);
    None if a value is not plain JSON, or the app's home is not this process's. The fast path
    takes them only when queuectl's own plugins alone read the config, no QUEUECTL_* value is set
    and the home is spelt the same (queuectl_core.fast_enqueue._prepare): it then builds no
    settings schema at all."""
    from dataclasses import replace
    from pathlib import Path

    from queuectl_core.settings import Config

    # Validated when config.toml was read; ``validate`` may be costly (the DSN check imports psycopg).
    schema = {key: replace(s, validate=None) for key, s in app.registries.settings.items()}
    config = Config(app.config.home, schema, app.config.file_values, env={})
    try:
        home = home_text()
        if Path(home) != app.config.home:
            return None
        values = {key: config.get(key) for key in schema}
        json.dumps(values, allow_nan=False)
    except Exception:  # a plugin's callable default that raises, a value JSON cannot hold
        return None
    # Which plugin registered each key: a QUEUECTL_* value for a key that no plugin on the enqueue
    # path reads (say QUEUECTL_DASHBOARD_TOKEN) does not stop it from using these values.
    return {"home": home, "by_key": values, "plugin": {key: s.plugin for key, s in schema.items()}}


def load(home: str | PathLike[str]) -> dict[str, Any] | None:
    """The index of ``home`` if it still describes this interpreter, its plugins and its
    config.toml exactly; else None."""
    from queuectl_core import __version__

    try:
        with open(os.path.join(home, INDEX_FILE), encoding="utf-8") as fh:
            index = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != __version__ \
            or index.get("python") != sys.version:
        return None
    if index.get("sys_path") != _path_stamps():
        return None
    for file, stamp in index["modules"]:
        if _file_stamp(file) != stamp:
            return None
    if index["config"] != _file_stamp(os.path.join(home, "config.toml")):
        return None
    return index
