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

The hooks are listed in :mod:`queuectl_core.framework.hookspecs` and ``docs/plugins/hooks.md``.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"
NAME = "queuectl"

hookimpl = pluggy.HookimplMarker(NAME)

__all__ = ["NAME", "__version__", "hookimpl"]
