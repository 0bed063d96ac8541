"""The in-memory reference storage (queuectl_core.testing.MemoryStorage): it has the required
protocol and no optional capability, so the conformance suite run on it checks core's fallbacks."""

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


def test_the_memory_storage_has_the_required_protocol_and_no_capability() -> None:
    storage = MemoryStorage()
    assert isinstance(storage, Storage)
    assert capabilities(storage) == []
    assert with_fallbacks(storage).native == frozenset()
