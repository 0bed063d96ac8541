"""queuectl for applications: put jobs in the queue from Python, as ``queuectl enqueue`` does.

::

    from queuectl import Queue

    with Queue() as queue:                      # QUEUECTL_HOME's queue, or Queue(home="/srv/q")
        job = queue.enqueue("make test", priority=5, tags=["ci"], timeout=600)
        print(job.id, queue.get(job.id).state)

``docs/usage.md`` ("From Python") documents it. Plugins import ``queuectl_core.api`` instead.
"""

from __future__ import annotations

from queuectl._queue import Queue
from queuectl_core import __version__
from queuectl_core.errors import (
    ConfigError,
    DuplicateJobError,
    QueuectlError,
    StorageError,
    UniqueKeyError,
    ValidationError,
)

__all__ = [
    "ConfigError",
    "DuplicateJobError",
    "Queue",
    "QueuectlError",
    "StorageError",
    "UniqueKeyError",
    "ValidationError",
    "__version__",
]
