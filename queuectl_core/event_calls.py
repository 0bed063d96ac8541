"""Calling ``queuectl_job_event`` implementations: one raising never stops the others.

Shared by the plugin manager (queuectl_core.plugins.emit) and the click-free `queuectl enqueue`
(queuectl_core.fast_enqueue), which calls the implementations the start-up index recorded without
importing pluggy. Kept free of pluggy and click for that reason.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see queuectl_core/__init__.py)

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable

    from queuectl_core.models import JobEvent


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
