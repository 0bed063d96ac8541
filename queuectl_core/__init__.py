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

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads the name)
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])

__version__ = "0.1.0"
NAME = "queuectl"


class HookimplMarker:
    """``@hookimpl`` and ``@hookimpl(tryfirst=True, ...)``: marks a hook implementation exactly as
    ``pluggy.HookimplMarker("queuectl")`` does (the options dict in the function's
    ``queuectl_impl`` attribute, which pluggy's ``PluginManager.parse_hookimpl_opts`` reads), but
    without importing pluggy: every plugin module imports this marker, and pluggy with ``inspect``
    costs ~16 ms of CPU on a `queuectl enqueue` that needs no plugin manager (measured beside
    ``dataclasses``, ``typing`` and ``pathlib`` on the 2-CPU machine)."""

    def __init__(self, project_name: str) -> None:
        self.project_name = project_name

    def __call__(self, function: F | None = None, hookwrapper: bool = False, optionalhook: bool = False,
                 tryfirst: bool = False, trylast: bool = False, specname: str | None = None,
                 wrapper: bool = False) -> Any:
        def mark(func: F) -> F:
            setattr(func, self.project_name + "_impl",
                    {"wrapper": wrapper, "hookwrapper": hookwrapper, "optionalhook": optionalhook,
                     "tryfirst": tryfirst, "trylast": trylast, "specname": specname})
            return func

        return mark if function is None else mark(function)


hookimpl = HookimplMarker(NAME)

__all__ = ["NAME", "__version__", "hookimpl"]
