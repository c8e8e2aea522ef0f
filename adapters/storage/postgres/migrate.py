"""Apply PostgreSQL migrations: one transaction, under an advisory lock, so two migrators
started at once never race (the second waits, then finds nothing left to do)."""

from __future__ import annotations

from psycopg.sql import SQL, Identifier

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.migrations import discover
from sessionstore.adapters.storage.postgres.log import (
    MIGRATIONS_PACKAGE,
    PostgresEventLog,
    datastore_from_settings,
)

_LOCK_KEY = 0x5E55_1057  # arbitrary constant naming "sessionstore migrations"


def migrate(settings: Settings) -> list[str]:
    migrations = discover(MIGRATIONS_PACKAGE)
    datastore = datastore_from_settings(settings)
    log = PostgresEventLog(datastore, where=f"{settings.redacted_url()}")
    applied_now: list[str] = []
    try:
        with log._translated(), datastore.get_connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(
                SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(settings.database_schema))
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = conn.execute(
                "SELECT coalesce(max(version), 0) AS v FROM schema_migrations"
            ).fetchone()
            current = row["v"] if row else 0
            for migration in migrations:
                if migration.version <= current:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied_now.append(migration.label)
    finally:
        datastore.close()
    return applied_now
