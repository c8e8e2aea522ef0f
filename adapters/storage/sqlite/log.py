"""SQLite event log: the embedded default (one file, no server).

Connections come from the eventsourcing library's ``SQLiteDatastore`` (WAL mode, a busy timeout,
and a writer lock that serialises this process's writers); its transaction wrapper is the single
place where sqlite3 errors become library errors, and ``_translated`` turns those into ours.
SQLite allows one writer at a time, so AUTOINCREMENT positions are in commit order and the log
is tailed by position alone (``LogCursor.tx`` is always 0 here).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self
from uuid import UUID

from eventsourcing import persistence as es
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.migrations import check_version, discover
from sessionstore.adapters.storage.serialization import SessionEventMapper, SessionStoredEvent
from sessionstore.adapters.storage.sql.log import (
    LastHashes,
    SQLEventLog,
    appended,
    chain_hashes,
    encode_batch,
    undecodable,
)
from sessionstore.domain.errors import (
    DatabaseMisconfigured,
    SchemaNotReady,
    StorageError,
    StorageRejected,
    StreamVersionTaken,
    UndecodableEvent,
)
from sessionstore.domain.ports import (
    LOG_START,
    AppendResult,
    IdempotencyClaim,
    LogCursor,
    RecordedEvent,
    StoredIdempotency,
    StoredRow,
)
from sessionstore.events.catalogue import SessionEvent

MIGRATIONS_PACKAGE = "sessionstore.adapters.storage.sqlite.migrations"
LOCK_TIMEOUT_SECONDS = 10
"""The default busy timeout (``SESSIONSTORE_SQLITE_BUSY_TIMEOUT_SECONDS``)."""

_COLUMNS = (
    "position, session_id, version, event_id, topic, class_version, tenant_id, occurred_at, "
    "recorded_at, state"
)
_INSERT_EVENT = (
    "INSERT INTO events (session_id, version, event_id, topic, class_version, tenant_id, "
    "occurred_at, recorded_at, state, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FIND_KEY = (
    "SELECT k.key, k.session_id, k.request_hash, k.first_version, k.last_version, e.position "
    "FROM idempotency_keys k JOIN events e "
    "ON e.session_id = k.session_id AND e.version = k.last_version WHERE k.key = ?"
)


def rejected(error: BaseException) -> bool:
    """Whether SQLite refused a value rather than failed: a string or blob over its size limit
    (SQLITE_TOOBIG, reported as DataError or, by some paths, OperationalError), or an integer
    beyond 64 bits (Python's sqlite3 raises OverflowError when binding it). Writing the same
    value again fails again, so callers must not treat it as transient."""
    if isinstance(error, OverflowError | sqlite3.DataError | es.DataError):
        return True
    return "too big" in str(error) or "too large" in str(error)


def format_time(value: datetime) -> str:
    """Fixed-width UTC text, so SQL comparisons on timestamps sort correctly."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def open_datastore(settings: Settings) -> SQLiteDatastore:
    path = settings.sqlite_path
    if path.parent and not path.parent.exists():
        msg = f"directory {path.parent} for the SQLite database does not exist"
        raise DatabaseMisconfigured(msg, path=str(path))
    return SQLiteDatastore(str(path), lock_timeout=settings.sqlite_busy_timeout_seconds)


class SQLiteEventLog(SQLEventLog):
    """EventLog on a SQLite file. Thread-safe via the library's connection pool."""

    placeholder = "?"
    columns = _COLUMNS
    stored_columns = (
        "session_id, version, event_id, topic, class_version, tenant_id, occurred_at, state, "
        "position, 0, hash"
    )

    def __init__(
        self, datastore: SQLiteDatastore, *, where: str, mapper: SessionEventMapper | None = None
    ) -> None:
        self.datastore = datastore
        self.where = where
        self.mapper = mapper or SessionEventMapper()
        self._hashes = LastHashes()

    @classmethod
    def open(cls, settings: Settings) -> Self:
        """Open the file and check its schema is migrated; raises SchemaNotReady otherwise."""
        where = f"SQLite file {settings.sqlite_path}"
        if not settings.sqlite_path.exists():
            # Opening would create an empty file; say what is missing instead.
            raise SchemaNotReady(f"{where} does not exist")
        log = cls(open_datastore(settings), where=where)
        try:
            log.check_schema()
        except BaseException:
            log.close()
            raise
        return log

    def check_schema(self) -> None:
        with self._reading() as cur:
            cur.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            )
            applied = None
            if cur.fetchone() is not None:
                cur.execute("SELECT max(version) FROM schema_migrations")
                applied = cur.fetchone()[0]
        check_version(applied, discover(MIGRATIONS_PACKAGE), self.where)

    def close(self) -> None:
        self.datastore.close()

    # -----------------------------------------------------------------------------------------

    def append(
        self,
        events: Sequence[SessionEvent],
        *,
        tenant_id: str,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        stored, session_id = encode_batch(self.mapper, events)
        previous = self._previous_hash(session_id, stored[0].originator_version - 1)
        hashes = chain_hashes(previous, stored, tenant_id)
        now = format_time(datetime.now(UTC))
        rows = [
            (
                str(s.originator_id),
                s.originator_version,
                str(s.event_id),
                s.topic,
                s.class_version,
                tenant_id,
                format_time(s.occurred_at),
                now,
                s.state,
                h,
            )
            for s, h in zip(stored, hashes, strict=True)
        ]
        key_taken = False
        positions: list[int] = []
        with (
            self._translated(session_id, stored[0].originator_version),
            self.datastore.transaction(commit=True) as cur,
        ):
            if idempotency is not None:
                # First statement is a write, so the transaction takes the write lock at once
                # (no read-then-upgrade deadlock between processes).
                cur.execute(
                    "INSERT OR IGNORE INTO idempotency_keys (key, session_id, request_hash, "
                    "first_version, last_version, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        idempotency.key,
                        str(session_id),
                        idempotency.request_hash,
                        stored[0].originator_version,
                        stored[-1].originator_version,
                        now,
                    ),
                )
                key_taken = cur.sqlite_cursor.rowcount == 0
            if not key_taken:
                for row in rows:
                    cur.execute(_INSERT_EVENT, row)
                    positions.append(int(cur.sqlite_cursor.lastrowid or 0))
        if key_taken and idempotency is not None:
            self._key_taken(idempotency.key)
        self._hashes.put(session_id, stored[-1].originator_version, hashes[-1])
        return appended(session_id, stored, positions)

    def read_log(self, after: LogCursor = LOG_START, *, limit: int = 1000) -> list[RecordedEvent]:
        return self._select(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
            [after.position, limit],
            report=True,
        )

    def oldest_append_seconds(self) -> float | None:
        return None  # appends here never hold readers back (one writer at a time)

    def head(self) -> LogCursor:
        with self._reading() as cur:
            cur.execute("SELECT max(position) FROM events")
            return LogCursor(0, cur.fetchone()[0] or 0)

    def count_after(self, cursor: LogCursor) -> int:
        with self._reading() as cur:
            cur.execute("SELECT count(*) FROM events WHERE position > ?", (cursor.position,))
            return int(cur.fetchone()[0])

    def cursor_of(self, position: int) -> LogCursor | None:
        with self._reading() as cur:
            cur.execute("SELECT position FROM events WHERE position = ?", (position,))
            return None if cur.fetchone() is None else LogCursor(0, position)

    def locate(self, position: int) -> tuple[UUID, int] | None:
        with self._reading() as cur:
            cur.execute("SELECT session_id, version FROM events WHERE position = ?", (position,))
            row = cur.fetchone()
        return None if row is None else (UUID(row[0]), int(row[1]))

    def locate_events(self, event_ids: Sequence[UUID]) -> dict[UUID, tuple[UUID, int, int]]:
        found: dict[UUID, tuple[UUID, int, int]] = {}
        ids = [str(e) for e in event_ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._raw(
                "SELECT event_id, session_id, version, position FROM events "
                f"WHERE event_id IN ({', '.join('?' for _ in chunk)})",
                chunk,
            )
            found.update({UUID(r[0]): (UUID(r[1]), int(r[2]), int(r[3])) for r in rows})
        return found

    def find_idempotency(self, key: str) -> StoredIdempotency | None:
        with self._reading() as cur:
            cur.execute(_FIND_KEY, (key,))
            row = cur.fetchone()
        if row is None:
            return None
        return StoredIdempotency(row[0], UUID(row[1]), row[2], row[3], row[4], row[5])

    # -----------------------------------------------------------------------------------------

    def _session_param(self, session_id: UUID) -> object:
        return str(session_id)

    def _raw(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        with self._reading() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())

    def _write(self, query: str, params: Sequence[Any]) -> None:
        with self._translated(), self.datastore.transaction(commit=True) as cur:
            cur.execute(query, params)

    def _write_returning(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        with self._translated(), self.datastore.transaction(commit=True) as cur:
            cur.execute(query, params)
            return list(cur.fetchall())

    def _log_window(self, after: LogCursor) -> tuple[str, str, list[Any]]:
        return "position > ?", "position", [after.position]

    def _stored_row(self, row: Sequence[Any]) -> StoredRow:
        (session_id, version, event_id, topic, class_version, tenant_id, occurred_at, state,
         position, tx, hash_) = row  # fmt: skip
        return StoredRow(
            UUID(session_id), version, UUID(event_id), topic, class_version, tenant_id,
            parse_time(occurred_at), bytes(state), position, tx,
            None if hash_ is None else bytes(hash_),
        )  # fmt: skip

    def _select(
        self, query: str, params: Sequence[Any], *, report: bool = False
    ) -> list[RecordedEvent]:
        with self._reading() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        return self._decoded(rows, report=report)

    def _undecodable(
        self, row: Any, decoded: list[RecordedEvent], error: Exception
    ) -> UndecodableEvent:
        (position, session_id, version, event_id, topic, class_version, tenant_id, _occurred,
         _recorded, state) = row  # fmt: skip
        return undecodable(
            decoded, error, cursor=LogCursor(0, int(position)), session_id=session_id,
            version=version, event_id=event_id, topic=topic, tenant_id=tenant_id,
            class_version=class_version, state=state,
        )  # fmt: skip

    def _recorded(self, row: Any) -> RecordedEvent:
        (position, session_id, version, event_id, topic, class_version, tenant_id, occurred_at,
         recorded_at, state) = row  # fmt: skip
        stored = SessionStoredEvent(
            originator_id=UUID(session_id),
            originator_version=version,
            topic=topic,
            state=bytes(state),
            event_id=UUID(event_id),
            occurred_at=parse_time(occurred_at),
            class_version=class_version,
        )
        return RecordedEvent(
            event=self.mapper.decode(stored),
            tenant_id=tenant_id,
            position=position,
            tx=0,
            recorded_at=parse_time(recorded_at),
        )

    @contextmanager
    def _reading(self) -> Iterator[SQLiteCursor]:
        with self._translated(), self.datastore.transaction(commit=False) as cur:
            yield cur

    @contextmanager
    def _translated(
        self, session_id: UUID | None = None, version: int | None = None
    ) -> Iterator[None]:
        """The one place where storage errors become domain errors; drivers never leak."""
        try:
            yield
        except es.IntegrityError as e:
            if "events.session_id, events.version" in str(e) and session_id and version:
                raise StreamVersionTaken(session_id, version) from None
            raise StorageError(f"{self.where}: integrity error: {e}") from e
        except es.OperationalError as e:
            if "no such table" in str(e):
                raise SchemaNotReady(f"{self.where}: {e}") from e
            if rejected(e):
                raise StorageRejected(f"{self.where}: value rejected: {e}") from e
            raise StorageError(f"{self.where}: database error: {e}") from e
        except (es.DataError, OverflowError) as e:
            raise StorageRejected(f"{self.where}: value rejected: {e}") from e
        except es.PersistenceError as e:
            raise StorageError(f"{self.where}: database error: {e}") from e
