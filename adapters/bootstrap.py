"""The composition root: builds the event log and the SessionStore from Settings."""

from __future__ import annotations

import threading

from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.queries import SessionQueries
from sessionstore.projections.runner import TimerWaiter, Waiter


def open_log(settings: Settings) -> EventLog:
    """Open the configured backend. Does not create or migrate the schema (see ``migrate``)."""
    if settings.backend == "memory":
        return MemoryEventLog()
    if settings.backend == "sqlite":
        from sessionstore.adapters.storage.sqlite.log import SQLiteEventLog

        return SQLiteEventLog.open(settings)
    from sessionstore.adapters.storage.postgres.log import PostgresEventLog

    return PostgresEventLog.open(settings)


def migrate(settings: Settings) -> list[str]:
    """Apply pending schema migrations and create the projections' first view tables; returns
    the names of the migrations applied (empty if none)."""
    if settings.backend == "memory":
        return []
    if settings.backend == "sqlite":
        from sessionstore.adapters.storage.sqlite.migrate import migrate as migrate_sqlite

        applied = migrate_sqlite(settings)
    else:
        from sessionstore.adapters.storage.postgres.migrate import migrate as migrate_postgres

        applied = migrate_postgres(settings)
    ensure_views(settings)
    return applied


def ensure_views(settings: Settings) -> None:
    """Give every projection an active generation of view tables (idempotent)."""
    views = open_views(settings)
    try:
        for projection in all_projections():
            views.ensure(projection)
    finally:
        views.close()


def build_store(settings: Settings | None = None) -> SessionStore:
    """A SessionStore on the configured backend, whose schema must already be migrated."""
    settings = settings or load_settings()
    return SessionStore(open_log(settings), limits=settings.limits, cache_size=settings.cache_size)


def open_views(settings: Settings) -> ViewStore:
    """The view store of the configured backend (projection tables and tracking)."""
    if settings.backend == "memory":
        from sessionstore.adapters.storage.memory.views import MemoryViewStore

        return MemoryViewStore()
    if settings.backend == "sqlite":
        from sessionstore.adapters.storage.sqlite.views import SQLiteViewStore

        return SQLiteViewStore.open(settings)
    from sessionstore.adapters.storage.postgres.views import PostgresViewStore

    return PostgresViewStore.open(settings)


def open_waiter(settings: Settings, stop: threading.Event) -> Waiter:
    """What a live projection runner sleeps on: LISTEN/NOTIFY on PostgreSQL, a timer elsewhere."""
    if settings.backend == "postgres":
        from sessionstore.adapters.storage.postgres.notify import PostgresWaiter

        return PostgresWaiter(settings, stop)
    return TimerWaiter(stop)


def open_queries(
    settings: Settings, views: ViewStore | None = None, log: EventLog | None = None
) -> SessionQueries:
    """Queries over ``views`` (from ``open_views``; the caller closes it). ``log`` serves the
    read-your-writes waits. What is not given is opened here and closed with the queries."""
    if settings.backend == "memory":
        from sessionstore.adapters.storage.memory.queries import MemoryQueries
        from sessionstore.adapters.storage.memory.views import MemoryViewStore

        if views is None:
            views = MemoryViewStore()
            for projection in all_projections():
                views.ensure(projection)
        if not isinstance(views, MemoryViewStore):
            msg = f"memory:// queries need a MemoryViewStore, not {type(views).__name__}"
            raise TypeError(msg)
        # memory:// shares nothing between opens: queries only see the log they are given.
        return MemoryQueries(views, log if log is not None else open_log(settings))
    from sessionstore.adapters.storage.sql.queries import SQLQueries
    from sessionstore.adapters.storage.sql.views import SQLViewStore

    owns_views = views is None
    views = open_views(settings) if views is None else views
    if not isinstance(views, SQLViewStore):
        msg = f"{settings.backend} queries need a SQL view store, not {type(views).__name__}"
        raise TypeError(msg)
    if log is not None:
        return SQLQueries(views, log, owns_views=owns_views)
    return SQLQueries(views, open_log(settings), owns_log=True, owns_views=owns_views)
