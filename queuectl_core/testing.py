"""Helpers for testing queuectl and its plugins (import from your plugin's tests)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from queuectl_core import plugins


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
