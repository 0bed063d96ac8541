"""The in-memory reference storage (queuectl_core.testing.MemoryStorage): it has the required
protocol and one optional capability, AttemptHistory (which no fallback can know), so the
conformance suite run on it checks core's fallbacks for every other; run again without its history,
it checks that fallback too."""

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


class TestMemoryWithoutHistoryConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self) -> Callable[[], Any]:
        queue = MemoryQueue()
        return lambda: _WithoutHistory(queue)


def test_the_memory_storage_has_the_required_protocol_and_only_the_history_and_needs_capabilities() -> None:
    storage = MemoryStorage()
    assert isinstance(storage, Storage)
    assert capabilities(storage) == ["AttemptHistory", "ResourceNeeds"]
    assert with_fallbacks(storage).native == frozenset({"AttemptHistory", "ResourceNeeds"})
    assert capabilities(_WithoutHistory()) == ["ResourceNeeds"]
