"""The shared event-log contract on a SQLite file (the embedded default)."""

from __future__ import annotations

import pytest

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.sqlite.log import SQLiteEventLog
from tests.contracts.event_log import EventLogContract, OpenLog


class TestSQLiteEventLog(EventLogContract):
    @pytest.fixture
    def open_log(self, sqlite_settings: Settings) -> OpenLog:
        return lambda: SQLiteEventLog.open(sqlite_settings)
