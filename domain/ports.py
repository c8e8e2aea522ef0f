"""The port the application service needs from storage. Backends live in ``adapters/``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol
from uuid import UUID

from sessionstore.events.catalogue import SessionEvent


class LogCursor(NamedTuple):
    """A point in the global log, compared as a tuple.

    ``position`` is the event's unique global position (what appends return). ``tx`` orders
    the log by commit safety: on PostgreSQL it is the writing transaction's id, so a reader
    never passes over an event whose transaction had not yet committed (see
    docs/decisions.md, "Global order without a table lock"). SQLite and memory have a single
    writer, so their ``tx`` is always 0 and positions alone give commit order.
    """

    tx: int
    position: int


LOG_START = LogCursor(0, 0)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the log holds it: the event plus where and when it was recorded."""

    event: SessionEvent
    tenant_id: str
    position: int
    tx: int
    recorded_at: datetime

    @property
    def cursor(self) -> LogCursor:
        return LogCursor(self.tx, self.position)


@dataclass(frozen=True, slots=True)
class StoredRow:
    """An event exactly as stored (state still encoded), for audits: the hash chain covers these
    bytes, not a re-encoding of the decoded event (which an upcaster may have changed)."""

    session_id: UUID
    version: int
    event_id: UUID
    topic: str
    class_version: int
    tenant_id: str
    occurred_at: datetime
    state: bytes
    position: int
    tx: int
    hash: bytes | None
    """The chain hash stored with the row; None for rows written before hashing existed."""

    @property
    def cursor(self) -> LogCursor:
        return LogCursor(self.tx, self.position)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append wrote: the session's new version and the last event's global position.

    ``replayed`` is true when an idempotency key matched an earlier request: nothing was written
    and the first request's result is returned.
    """

    session_id: UUID
    version: int
    position: int
    events: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An idempotency key to store atomically with the events of an append."""

    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class StoredIdempotency:
    """The durable record of the first request made with a key."""

    key: str
    session_id: UUID
    request_hash: str
    first_version: int
    last_version: int
    position: int


class IdempotencyKeyExists(Exception):
    """Raised by ``EventLog.append`` when the claim's key is already stored; nothing was written."""

    def __init__(self, stored: StoredIdempotency) -> None:
        super().__init__(f"idempotency key {stored.key!r} already used")
        self.stored = stored


class EventLog(Protocol):
    """Durable, append-only log of session events.

    ``append`` writes all events or none. It raises ``StreamVersionTaken`` when a version
    already exists (the database enforces uniqueness of (session_id, version); nothing is
    checked by reading first) and ``IdempotencyKeyExists`` when the claim's key is taken.
    """

    def append(
        self,
        events: Sequence[SessionEvent],
        *,
        tenant_id: str,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult: ...

    def read_session(
        self,
        session_id: UUID,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]: ...

    def read_log(self, after: LogCursor = LOG_START, *, limit: int = 1000) -> list[RecordedEvent]:
        """Events in global order strictly after ``after``; never skips a committed event.

        A row that cannot be decoded raises ``UndecodableEvent`` (``domain.errors``) carrying
        the events before it in this read and the row's cursor, so a reader can apply those and
        decide what to do with that row. (``read_session`` raises the codec's own error.)"""
        ...

    def head(self) -> LogCursor:
        """The cursor of the last event a reader can see now (LOG_START if none)."""
        ...

    def count_after(self, cursor: LogCursor) -> int:
        """How many committed events sort after ``cursor`` (a reader's lag)."""
        ...

    def oldest_append_seconds(self) -> float | None:
        """How long the oldest append still in flight has been running: on PostgreSQL readers
        wait for it (decisions.md §4), so an old one explains lagging views. None when no
        append is in flight, or the backend cannot tell (SQLite's writers never hold readers
        back: it has one writer at a time)."""
        ...

    def cursor_of(self, position: int) -> LogCursor | None:
        """The cursor of the event at a global position, or None if there is none."""
        ...

    def locate(self, position: int) -> tuple[UUID, int] | None:
        """The (session id, version) of the event at a global position, or None."""
        ...

    def locate_events(self, event_ids: Sequence[UUID]) -> dict[UUID, tuple[UUID, int, int]]:
        """For each of these event ids the log holds: (session id, version, position)."""
        ...

    def find_idempotency(self, key: str) -> StoredIdempotency | None: ...

    def stored_rows(
        self,
        session_id: UUID | None = None,
        *,
        after: LogCursor = LOG_START,
        limit: int = 1000,
    ) -> list[StoredRow]:
        """Rows as stored: one session's in version order (``after``/``limit`` ignored), or the
        whole log's in log order after ``after``. For audits and tamper checks."""
        ...

    def close(self) -> None: ...
