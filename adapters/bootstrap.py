"""The composition root: builds the event log and the SessionStore from Settings."""

from __future__ import annotations

from adapters.memory import MemoryEventLog
from adapters.settings import Settings, load_settings
from domain.ports import EventLog
from domain.store import SessionStore


def open_log(settings: Settings) -> EventLog:
    """Open the configured backend. Does not create or migrate the schema (see ``migrate``)."""
    if settings.backend == "memory":
        return MemoryEventLog()
    if settings.backend == "sqlite":
        from adapters.sqlite.log import SQLiteEventLog

        return SQLiteEventLog.open(settings)
    from adapters.postgres.log import PostgresEventLog

    return PostgresEventLog.open(settings)


def migrate(settings: Settings) -> list[str]:
    """Apply pending schema migrations; returns the names of those applied (empty if none)."""
    if settings.backend == "memory":
        return []
    if settings.backend == "sqlite":
        from adapters.sqlite.migrate import migrate as migrate_sqlite

        return migrate_sqlite(settings)
    from adapters.postgres.migrate import migrate as migrate_postgres

    return migrate_postgres(settings)


def build_store(settings: Settings | None = None) -> SessionStore:
    """A SessionStore on the configured backend, whose schema must already be migrated."""
    settings = settings or load_settings()
    return SessionStore(open_log(settings), limits=settings.limits, cache_size=settings.cache_size)
