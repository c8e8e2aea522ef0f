"""Apply SQLite migrations in one ``BEGIN IMMEDIATE`` transaction: the write lock it takes at
once makes a second migrator wait, then find nothing left to do."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.migrations import discover
from sessionstore.adapters.storage.sqlite.log import (
    LOCK_TIMEOUT_SECONDS,
    MIGRATIONS_PACKAGE,
    open_datastore,
)
from sessionstore.domain.errors import StorageError


def statements(script: str) -> Iterator[str]:
    """Split a script into statements (trigger bodies contain semicolons, so not by ';')."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement and not all(
                part.strip().startswith("--") or not part.strip() for part in statement.splitlines()
            ):
                yield statement
    if buffer.strip() and not all(
        line.strip().startswith("--") or not line.strip() for line in buffer.splitlines()
    ):
        msg = f"incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}"
        raise ValueError(msg)


def use_wal(conn: sqlite3.Connection, attempts: int = 100) -> None:
    """Switch the file to WAL (persistent). Changing the journal mode needs an exclusive lock
    and SQLite reports "database is locked" at once, without its busy timeout, when another
    connection is using the file, as when two migrators start on a new file together."""
    for attempt in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05)
        else:
            return


def migrate(settings: Settings) -> list[str]:
    migrations = discover(MIGRATIONS_PACKAGE)
    open_datastore(settings).close()  # the same path checks as opening the event log
    applied_now: list[str] = []
    try:
        conn = sqlite3.connect(
            settings.sqlite_path, timeout=LOCK_TIMEOUT_SECONDS, isolation_level=None
        )
        try:
            use_wal(conn)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
            )
            current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            at = current.fetchone()[0]
            for migration in migrations:
                if migration.version <= at:
                    continue
                for statement in statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    (migration.version, migration.name),
                )
                applied_now.append(migration.label)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
    except sqlite3.Error as e:
        msg = f"SQLite file {settings.sqlite_path}: migration failed: {e}"
        raise StorageError(msg) from e
    return applied_now
