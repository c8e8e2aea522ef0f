"""The view-store contract on the in-memory backend."""

from __future__ import annotations

import pytest

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.memory.views import MemoryViewStore
from tests.contracts.view_store import ViewStoreContract


class TestMemoryViewStore(ViewStoreContract):
    @pytest.fixture
    def log(self) -> MemoryEventLog:
        return MemoryEventLog()

    @pytest.fixture
    def views(self) -> MemoryViewStore:
        return MemoryViewStore()
