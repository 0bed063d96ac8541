"""Helpers for testing queuectl plugins, from the plugin's own tests (installed or not).

- :func:`register_plugin`: register a plugin in this process for a ``with`` block;
- :func:`make_config`: a real :class:`~queuectl_core.framework.settings.Config` on a temporary home;
- :class:`StorageConformance` (``queuectl_core.testing.conformance``): the storage contract as a
  pytest class to subclass once per backend. It needs pytest, nothing else (no database driver);
- :class:`MemoryStorage` (``queuectl_core.testing.memory``): the smallest complete storage, to read
  and to copy (jobs in one :class:`MemoryQueue`, shared by every MemoryStorage opened on it).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from queuectl_core.framework import plugins
from queuectl_core.testing.conformance import StorageConformance
from queuectl_core.testing.memory import MemoryQueue, MemoryStorage

if TYPE_CHECKING:
    from queuectl_core.framework.settings import Config


@contextmanager
def register_plugin(plugin: Any, name: str | None = None) -> Iterator[str]:
    """Register a plugin (a module, class or object with ``@hookimpl`` functions) in this process
    for the duration of a ``with`` block; registries are rebuilt on entry and exit.

    ::

        class Recorder:
            events = []

            @hookimpl
            def queuectl_job_event(self, event):
                self.events.append(event)

        with register_plugin(Recorder()):
            ...
    """
    plugins.load_plugins()
    registered = plugins.pm.register(plugin, name=name)
    plugins.reset()
    try:
        yield registered or ""
    finally:
        plugins.pm.unregister(plugin)
        plugins.reset()


def make_config(home: Path, values: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                **overrides: Any) -> Config:
    """A real Config on ``home`` (usually pytest's ``tmp_path``), as if config.toml held ``values``
    and ``overrides`` (keyword form for keys without a dot: ``make_config(tmp_path, max_retries=0)``).
    Every key is validated by its Setting (an unknown key or a bad value raises ConfigError); every
    registered plugin's keys are known, including a plugin registered with :func:`register_plugin`.
    The process environment is ignored unless ``env`` is given.

    ::

        config = make_config(tmp_path, {"sqlite.path": str(tmp_path / "q.db")}, lease_seconds=5)
        storage = MyStorage.from_config(config)
    """
    from queuectl_core.framework.settings import Config, normalize_key

    schema = plugins.registries().settings
    merged = {normalize_key(k): v for k, v in {**(values or {}), **overrides}.items()}
    config = Config(Path(home), schema, {}, env or {})
    for key, value in merged.items():
        merged[key] = config.setting(key).coerce(value)
    return Config(Path(home), schema, merged, env or {})


__all__ = ["MemoryQueue", "MemoryStorage", "StorageConformance", "make_config", "register_plugin"]
