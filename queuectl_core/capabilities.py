"""A storage's optional capabilities, detected once, each with core's fallback.

A storage must provide :class:`~queuectl_core.interfaces.Storage`. It may also provide any of the
capabilities below, each a small protocol of its own; core detects them with ``isinstance`` (never by
probing attribute names at the call site) and otherwise falls back on the required methods. A
backend gains speed from a capability, never behaviour: the fallbacks keep every rule.

:func:`with_fallbacks` wraps a storage so that every caller (the worker above all) has one code path
whatever the backend offers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from queuectl_core.interfaces import Storage
    from queuectl_core.lifecycle import Change
    from queuectl_core.models import Job, NewJob

    Changes = Sequence[tuple[str, str | None, Change]]


@runtime_checkable
class ClaimMany(Protocol):
    def claim_many(self, worker_id: str, lease_seconds: float, limit: int,
                   queues: Sequence[str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs, each taken as ``claim`` takes one (its own token and lease;
        priorities, run_at, dependencies, pauses and queue limits as for that many claims), in one
        transaction. Empty when nothing is runnable. Fallback: ``claim`` until it returns None."""


@runtime_checkable
class ApplyBatch(Protocol):
    def apply_batch(self, changes: Changes) -> list[Job | None]:
        """Apply several ``(job_id, token, change)`` in one transaction, each fenced on its own as
        ``apply`` is: the updated job, or None for one fenced out (the others still apply).
        Fallback: ``apply`` for each."""


@runtime_checkable
class ApplyAndClaim(Protocol):
    def apply_and_claim(self, changes: Changes, worker_id: str, lease_seconds: float, limit: int,
                        queues: Sequence[str] | None = None) -> tuple[list[Job | None], list[Job]]:
        """``apply_batch`` then ``claim_many``, in one transaction (one commit a finished job, not
        two). Fallback: the two, one after the other."""


@runtime_checkable
class CancelRequests(Protocol):
    def cancel_requests(self, job_ids: Sequence[str]) -> list[tuple[str, str | None]]:
        """(id, lease_token) of those of ``job_ids`` processing with a cancel requested; one read.
        Fallback: ``get`` for each."""


@runtime_checkable
class StreamingInsert(Protocol):
    def enqueue_stream(self, batches: Iterable[Sequence[NewJob]]) -> Iterator[list[Job]]:
        """Insert every job of every batch in one transaction, all or none (an exception from
        ``batches`` rolls everything back); then yield the stored jobs batch by batch without
        holding them all in memory. Fallback: every batch read into memory, then one ``enqueue``."""


CAPABILITIES: tuple[type, ...] = (ClaimMany, ApplyBatch, ApplyAndClaim, CancelRequests, StreamingInsert)


def capabilities(storage: object) -> list[str]:
    """The names of the optional capabilities ``storage`` provides (``queuectl plugins`` shows them)."""
    return [cap.__name__ for cap in CAPABILITIES if isinstance(storage, cap)]


class WithFallbacks:
    """A storage with every optional capability: its own where it has one, core's fallback where not.
    Every other attribute is the storage's own."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # Detected once: an isinstance check against a runtime protocol costs microseconds a call.
        self.native = frozenset(capabilities(storage))
        for cap in CAPABILITIES:
            if cap.__name__ in self.native:
                name = next(n for n in vars(cap) if not n.startswith("_"))
                setattr(self, name, getattr(storage, name))  # the storage's own, called directly

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def claim_many(self, worker_id: str, lease_seconds: float, limit: int,
                   queues: Sequence[str] | None = None) -> list[Job]:
        jobs: list[Job] = []
        while len(jobs) < limit:
            job = self.storage.claim(worker_id, lease_seconds, queues=queues)
            if job is None:
                break
            jobs.append(job)
        return jobs

    def apply_batch(self, changes: Changes) -> list[Job | None]:
        return [self.storage.apply(job_id, token, change) for job_id, token, change in changes]

    def apply_and_claim(self, changes: Changes, worker_id: str, lease_seconds: float, limit: int,
                        queues: Sequence[str] | None = None) -> tuple[list[Job | None], list[Job]]:
        applied = self.apply_batch(changes) if changes else []
        return applied, (self.claim_many(worker_id, lease_seconds, limit, queues=queues) if limit > 0 else [])

    def cancel_requests(self, job_ids: Sequence[str]) -> list[tuple[str, str | None]]:
        found = []
        for job_id in job_ids:
            job = self.storage.get(job_id)
            if job is not None and job.cancel_requested and str(job.state) == "processing":
                found.append((job.id, job.lease_token))
        return found

    def enqueue_stream(self, batches: Iterable[Sequence[NewJob]]) -> Iterator[list[Job]]:
        jobs = [job for batch in batches for job in batch]
        return iter([self.storage.enqueue(jobs)] if jobs else [])


def with_fallbacks(storage: Storage) -> WithFallbacks:
    """``storage`` with every optional capability (see :class:`WithFallbacks`)."""
    return storage if isinstance(storage, WithFallbacks) else WithFallbacks(storage)


__all__ = ["ApplyAndClaim", "ApplyBatch", "CAPABILITIES", "CancelRequests", "ClaimMany", "StreamingInsert",
           "WithFallbacks", "capabilities", "with_fallbacks"]
