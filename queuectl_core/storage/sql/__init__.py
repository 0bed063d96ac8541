"""One SQL layer for every SQL storage backend: the statements, written once, over a small dialect.

A backend (SQLite, PostgreSQL, or a third party's) supplies a :class:`Dialect` (placeholders, the
clock expression, ``SKIP LOCKED``, time conversion) and a transaction runner; :class:`SQLStore` does
the rest of the Storage protocol, one part per aggregate:

- ``jobs.py``: enqueue, reads, tallies, delete and purge;
- ``claims.py``: claims and the fenced changes (apply and its batched forms);
- ``dependencies.py``: ``after``, recorded at enqueue and carried out down the chain;
- ``queues.py``, ``schedules.py``, ``workers.py``: the other aggregates;
- ``history.py``: every attempt of a job (the optional ``AttemptHistory`` capability);
- ``output.py``: every attempt's output (the optional ``AttemptOutput`` capability);
- ``outbox.py``: notifications kept until delivered (the optional ``Outbox`` capability);
- ``dialect.py``, ``rows.py``, ``base.py``: what they share.

What a change *means* (a job's, and what it does to the jobs waiting on it) is decided in
:mod:`queuectl_core.jobs.lifecycle`; this layer only persists it, fenced in the statement's WHERE clause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import Fenced, SQLBase
from queuectl_core.storage.sql.claims import ClaimsMixin
from queuectl_core.storage.sql.dependencies import DependenciesMixin
from queuectl_core.storage.sql.dialect import Dialect
from queuectl_core.storage.sql.history import HistoryMixin
from queuectl_core.storage.sql.jobs import JobsMixin
from queuectl_core.storage.sql.limits import LimitsMixin
from queuectl_core.storage.sql.outbox import OutboxMixin
from queuectl_core.storage.sql.output import OutputMixin
from queuectl_core.storage.sql.queues import QueuesMixin
from queuectl_core.storage.sql.resources import ResourcesMixin
from queuectl_core.storage.sql.rows import CONTROL_COLUMNS, JOB_COLUMNS, codes_out, control_values
from queuectl_core.storage.sql.schedules import SchedulesMixin
from queuectl_core.storage.sql.workers import WORKER_LIVE_SECONDS, WorkersMixin

if TYPE_CHECKING:
    from typing import Any

# Start-up: every storage plugin module imports this package to subclass SQLStore, and `queuectl
# --help` imports every plugin module. So the models and the lifecycle are imported on first use.


class SQLStore(JobsMixin, ClaimsMixin, DependenciesMixin, QueuesMixin, SchedulesMixin, WorkersMixin, HistoryMixin,
               OutputMixin, LimitsMixin, OutboxMixin, ResourcesMixin, SQLBase):
    """The Storage protocol on any SQL database, given a dialect and what a backend provides:
    ``_tx`` (run a function in one transaction, mapping driver errors to StorageError),
    ``_insert`` (the batch insert, when the portable one is not fast enough), ``now``,
    ``register_worker``, ``wait_for_work`` and ``close``."""


def __getattr__(name: str) -> Any:
    # ``Tx`` is a typing.Protocol, defined in queuectl_core.interfaces and still importable from
    # here: typing costs ~1.5 ms of every `queuectl enqueue` (bench/enqueue_floor.py), and this
    # package is on its path while Tx is only ever an annotation.
    if name == "Tx":
        from queuectl_core.interfaces import Tx

        return Tx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "Tx"])


__all__ = ["CONTROL_COLUMNS", "JOB_COLUMNS", "WORKER_LIVE_SECONDS", "ClaimsMixin", "DependenciesMixin", "Dialect",
           "Fenced", "HistoryMixin", "JobsMixin", "LimitsMixin", "OutboxMixin", "OutputMixin", "QueuesMixin", "SQLBase", "SQLStore",
           "SchedulesMixin", "Tx", "WorkersMixin",
           "codes_out", "control_values"]
