"""The view-store contract on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.postgres.log import PostgresEventLog
from sessionstore.adapters.storage.postgres.views import PostgresViewStore
from sessionstore.adapters.storage.sqlite.log import SQLiteEventLog
from sessionstore.adapters.storage.sqlite.views import SQLiteViewStore
from sessionstore.domain.ports import EventLog
from sessionstore.projections.base import ViewStore
from tests.contracts.view_store import ViewStoreContract


class TestSQLiteViewStore(ViewStoreContract):
    @pytest.fixture
    def log(self, sqlite_settings: Settings) -> Iterator[EventLog]:
        log = SQLiteEventLog.open(sqlite_settings)
        yield log
        log.close()

    @pytest.fixture
    def views(self, sqlite_settings: Settings) -> Iterator[ViewStore]:
        views = SQLiteViewStore.open(sqlite_settings)
        yield views
        views.close()


@pytest.mark.postgres
class TestPostgresViewStore(ViewStoreContract):
    @pytest.fixture
    def log(self, pg_settings: Settings) -> Iterator[EventLog]:
        log = PostgresEventLog.open(pg_settings)
        yield log
        log.close()

    @pytest.fixture
    def views(self, pg_settings: Settings) -> Iterator[ViewStore]:
        views = PostgresViewStore.open(pg_settings)
        yield views
        views.close()
