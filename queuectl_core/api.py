"""The public API for plugin authors: everything a plugin imports comes from here.

Quick start::

    from queuectl_core.api import JobEvent, hookimpl

    @hookimpl
    def queuectl_job_event(event: JobEvent) -> None:
        if event.kind == "dead":
            print("job went to the DLQ:", event.job.id)

Names outside this module (and ``queuectl_core.testing``) are internals that may change.
``docs/plugins/api.md`` documents each name and every model field.
"""

from __future__ import annotations

import typing as _typing

from queuectl_core import NAME, __version__, hookimpl
from queuectl_core.errors import (
    ConfigError,
    DuplicateJobError,
    JobNotFoundError,
    PluginError,
    QueuectlError,
    RegistryError,
    StorageError,
    UniqueKeyError,
    ValidationError,
)
from queuectl_core.framework.settings import Config, Setting

if _typing.TYPE_CHECKING:
    from queuectl_core.control import actions, scheduling
    from queuectl_core.framework.app import App, current_app
    from queuectl_core.framework.plugins import get_backoff, get_executor, get_storage
    from queuectl_core.interfaces import BackoffPolicy, Executor, RunContext, Storage
    from queuectl_core.jobs.lifecycle import Change, Transition
    from queuectl_core.jobs.limits import Limits
    from queuectl_core.jobs.models import EventKind, Job, JobEvent, JobState, NewJob
    from queuectl_core.jobs.notifications import NOTIFY_EVENTS, Notification, Notifier
    from queuectl_core.jobs.records import Attempt, AttemptResult, QueueInfo, Schedule, WorkerInfo
    from queuectl_core.storage import capabilities

# Every plugin imports this module, often while `queuectl` starts (the dashboard's settings hook
# does): so only the errors and the settings are imported here, and every other name on first use
# (PEP 562's module __getattr__). A command that never touches the lifecycle, the interfaces or the
# App's module does not import them (`queuectl enqueue --cmd true`: ~3 ms, 4% of its CPU time).
# name -> the module that defines it, or the module itself when the name is its last part.
_LAZY = {
    **dict.fromkeys(("App", "current_app"), "queuectl_core.framework.app"),
    **dict.fromkeys(("get_backoff", "get_executor", "get_storage"), "queuectl_core.framework.plugins"),
    **dict.fromkeys(("BackoffPolicy", "Executor", "RunContext", "Storage"), "queuectl_core.interfaces"),
    **dict.fromkeys(("Change", "Transition"), "queuectl_core.jobs.lifecycle"),
    **dict.fromkeys(("EventKind", "Job", "JobEvent", "JobState", "NewJob"), "queuectl_core.jobs.models"),
    **dict.fromkeys(("Attempt", "AttemptResult", "QueueInfo", "Schedule", "WorkerInfo"), "queuectl_core.jobs.records"),
    **dict.fromkeys(("NOTIFY_EVENTS", "Notification", "Notifier"), "queuectl_core.jobs.notifications"),
    "actions": "queuectl_core.control.actions",
    "capabilities": "queuectl_core.storage.capabilities",
    "scheduling": "queuectl_core.control.scheduling",
    "Limits": "queuectl_core.jobs.limits",  # -- limits: a queue's defaults (the QueueLimits capability) --
}


def __getattr__(name: str) -> _typing.Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_LAZY[name])
    value = module if _LAZY[name].endswith("." + name) else getattr(module, name)
    globals()[name] = value  # looked up once
    return value


__all__ = [
    "NAME",
    "NOTIFY_EVENTS",
    "App",
    "Attempt",
    "AttemptResult",
    "BackoffPolicy",
    "Change",
    "Config",
    "ConfigError",
    "DuplicateJobError",
    "EventKind",
    "Executor",
    "Job",
    "JobEvent",
    "JobNotFoundError",
    "JobState",
    "Limits",
    "NewJob",
    "Notification",
    "Notifier",
    "PluginError",
    "QueueInfo",
    "QueuectlError",
    "RegistryError",
    "RunContext",
    "Schedule",
    "Setting",
    "Storage",
    "StorageError",
    "Transition",
    "UniqueKeyError",
    "ValidationError",
    "WorkerInfo",
    "__version__",
    "actions",
    "capabilities",
    "current_app",
    "get_backoff",
    "get_executor",
    "get_storage",
    "hookimpl",
    "scheduling",
]
