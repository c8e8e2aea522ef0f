"""The shared event-log contract on a real PostgreSQL (a schema of its own per test)."""

from __future__ import annotations

import pytest

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.postgres.log import PostgresEventLog
from tests.contracts.event_log import EventLogContract, OpenLog

pytestmark = pytest.mark.postgres


class TestPostgresEventLog(EventLogContract):
    @pytest.fixture
    def open_log(self, pg_settings: Settings) -> OpenLog:
        return lambda: PostgresEventLog.open(pg_settings)
