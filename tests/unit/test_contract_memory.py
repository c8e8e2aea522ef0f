"""The shared event-log contract on the in-memory backend."""

from __future__ import annotations

import pytest

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from tests.contracts.event_log import EventLogContract, OpenLog


class TestMemoryEventLog(EventLogContract):
    @pytest.fixture
    def open_log(self) -> OpenLog:
        shared = MemoryEventLog()  # "another process" shares the same memory
        return lambda: shared
