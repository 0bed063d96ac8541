"""queuectl: a CLI background job queue for shell commands, built from plugins.

Quick start for plugin authors::

    from queuectl_core import hookimpl

    @hookimpl
    def queuectl_job_event(event):
        if event.kind == "dead":
            print("job went to the DLQ:", event.job.id)

Register the module under the ``queuectl`` entry-point group of your package::

    [project.entry-points.queuectl]
    my_plugin = "my_package.my_plugin"

The hooks are listed in :mod:`queuectl_core.hookspecs` and ``docs/plugins/hooks.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pluggy

    hookimpl: pluggy.HookimplMarker

__version__ = "0.1.0"
NAME = "queuectl"


def __getattr__(name: str) -> object:
    # pluggy is imported when a plugin first asks for ``hookimpl``, not by every import of a core
    # module: the click-free `queuectl enqueue` imports core modules without it.
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker(NAME)
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["NAME", "__version__", "hookimpl"]
