"""The in-memory reference storage (queuectl_core.testing.MemoryStorage): the required protocol,
and the optional capabilities no fallback can give as a database does (AttemptHistory,
AttemptOutput, QueueLimits, Outbox, ResourceNeeds), so the conformance suite run on it checks core's
fallbacks for every other; run again without history and output, and without the outbox, it checks
those fallbacks too."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from queuectl_core.interfaces import Storage
from queuectl_core.storage.capabilities import capabilities, with_fallbacks
from queuectl_core.testing import MemoryQueue, MemoryStorage, StorageConformance


class TestMemoryConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self) -> Callable[[], Any]:
        queue = MemoryQueue()
        return lambda: MemoryStorage(queue)


class _WithoutHistory(MemoryStorage):
    attempts = None  # type: ignore[assignment]  # a protocol member set to None is not provided
    write_output = read_output = output_sizes = None  # type: ignore[assignment]  # nor AttemptOutput


class TestMemoryWithoutHistoryConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self) -> Callable[[], Any]:
        queue = MemoryQueue()
        return lambda: _WithoutHistory(queue)


class _WithoutOutbox(MemoryStorage):
    outbox_add = outbox_claim = outbox_settle = notification_counts = outbox_prune = None  # type: ignore[assignment]


class TestMemoryWithoutOutboxConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self) -> Callable[[], Any]:
        queue = MemoryQueue()
        return lambda: _WithoutOutbox(queue)


def test_the_memory_storage_has_the_required_protocol_and_only_the_behaviour_capabilities() -> None:
    """History, output, queue limits, the outbox and needs, which no fallback can give as a database
    does; none that only buys speed."""
    storage = MemoryStorage()
    assert isinstance(storage, Storage)
    assert capabilities(storage) == ["AttemptHistory", "AttemptOutput", "QueueLimits", "Outbox", "ResourceNeeds"]
    assert with_fallbacks(storage).native == frozenset({"AttemptHistory", "AttemptOutput", "QueueLimits", "Outbox", "ResourceNeeds"})
    assert capabilities(_WithoutHistory()) == ["QueueLimits", "Outbox", "ResourceNeeds"]
    assert capabilities(_WithoutOutbox()) == ["AttemptHistory", "AttemptOutput", "QueueLimits", "ResourceNeeds"]
