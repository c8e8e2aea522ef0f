"""What the event logs share: append bookkeeping and hash chaining for all, stream reads and
checkpoints for the SQL ones."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, NoReturn, Protocol
from uuid import UUID

from sessionstore.adapters.storage.chain import GENESIS, Checkpoint, chain_of, event_digest, link
from sessionstore.adapters.storage.serialization import SessionEventMapper, SessionStoredEvent
from sessionstore.domain.errors import StorageError, UndecodableEvent
from sessionstore.domain.ports import (
    LOG_START,
    AppendResult,
    IdempotencyKeyExists,
    LogCursor,
    RecordedEvent,
    StoredIdempotency,
    StoredRow,
)
from sessionstore.events.catalogue import SessionEvent
from sessionstore.events.codec import CodecError


def encode_batch(
    mapper: SessionEventMapper, events: Sequence[SessionEvent]
) -> tuple[list[SessionStoredEvent], UUID]:
    """Encode the events of one append (all of one session) for storage."""
    if not events:
        msg = "append needs at least one event"
        raise ValueError(msg)
    return [mapper.encode(event) for event in events], events[0].session_id


def chain_hashes(
    previous: bytes, stored: Sequence[SessionStoredEvent], tenant_id: str
) -> list[bytes]:
    """The chain hashes of consecutive events of one session, after ``previous``."""
    hashes = []
    for s in stored:
        digest = event_digest(
            session_id=_uuid(s.originator_id),
            version=s.originator_version,
            event_id=s.event_id,
            topic=s.topic,
            class_version=s.class_version,
            tenant_id=tenant_id,
            occurred_at=s.occurred_at,
            state=s.state,
        )
        previous = link(previous, digest)
        hashes.append(previous)
    return hashes


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


NIL = UUID(int=0)


def _uuid_or_nil(value: object) -> UUID:
    """A stored id for an error report: never fails (the nil UUID stands for an unreadable one)."""
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError:
        return NIL


def _int_or_zero(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0


def undecodable(
    decoded: list[RecordedEvent],
    error: Exception,
    *,
    cursor: LogCursor,
    session_id: object,
    version: object,
    event_id: object,
    topic: object,
    tenant_id: object = "",
    class_version: object = 0,
    state: object = b"",
) -> UndecodableEvent:
    """The UndecodableEvent for a stored row that failed to decode with ``error``; the fields
    are read defensively (the row may be damaged anywhere)."""
    reason = str(error) if isinstance(error, CodecError) else f"{type(error).__name__}: {error}"
    return UndecodableEvent(
        decoded=decoded,
        cursor=cursor,
        session_id=_uuid_or_nil(session_id),
        version=_int_or_zero(version),
        event_id=_uuid_or_nil(event_id),
        topic=str(topic),
        reason=reason,
        tenant_id=str(tenant_id),
        class_version=_int_or_zero(class_version),
        state=bytes(state) if isinstance(state, bytes | bytearray | memoryview) else b"",
    )


class LastHashes:
    """A small LRU of each session's last (version, hash), so an append needs no extra read."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._items: OrderedDict[UUID, tuple[int, bytes]] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, session_id: UUID, version: int) -> bytes | None:
        with self._lock:
            found = self._items.get(session_id)
            return found[1] if found is not None and found[0] == version else None

    def put(self, session_id: UUID, version: int, value: bytes) -> None:
        with self._lock:
            self._items[session_id] = (version, value)
            self._items.move_to_end(session_id)
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)


def appended(
    session_id: UUID, stored: list[SessionStoredEvent], positions: list[int]
) -> AppendResult:
    return AppendResult(
        session_id=session_id,
        version=stored[-1].originator_version,
        position=positions[-1],
        events=len(positions),
    )


class SQLRunner(Protocol):
    """The SQL logs' statement helpers, for small stores that share the log's database (API
    keys, relay positions)."""

    placeholder: str

    def _raw(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]: ...

    def _write(self, query: str, params: Sequence[Any]) -> None: ...

    def _write_returning(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]: ...


class SQLEventLog(ABC):
    """Base of the SQL backends. Subclasses say how to run a SELECT and bind a session id."""

    placeholder: ClassVar[str]
    columns: ClassVar[str]
    mapper: SessionEventMapper

    @abstractmethod
    def _select(
        self, query: str, params: Sequence[Any], *, report: bool = False
    ) -> list[RecordedEvent]:
        """Run a SELECT of ``columns`` and decode the rows (``_decoded``)."""

    @abstractmethod
    def _session_param(self, session_id: UUID) -> object: ...

    @abstractmethod
    def find_idempotency(self, key: str) -> StoredIdempotency | None: ...

    @abstractmethod
    def _raw(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """Run a SELECT and return the driver's rows."""

    @abstractmethod
    def _write(self, query: str, params: Sequence[Any]) -> None:
        """Run one statement in its own transaction."""

    @abstractmethod
    def _write_returning(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """Run one statement with RETURNING in its own transaction; return its rows."""

    @abstractmethod
    def _stored_row(self, row: Sequence[Any]) -> StoredRow: ...

    @abstractmethod
    def _recorded(self, row: Any) -> RecordedEvent:
        """Decode one row of ``columns`` into an event (raises if the row is undecodable)."""

    @abstractmethod
    def _undecodable(
        self, row: Any, decoded: list[RecordedEvent], error: Exception
    ) -> UndecodableEvent:
        """The error for a row of ``columns`` that ``_recorded`` could not decode."""

    def _decoded(self, rows: Sequence[Any], *, report: bool) -> list[RecordedEvent]:
        """Rows of ``columns`` decoded in order. With ``report`` (the global log's readers), a
        row that cannot be decoded raises UndecodableEvent carrying the rows before it, so a
        reader can go on up to it; any exception counts, since the row's bytes may be damaged
        in ways no codec names. Without it the decoding error itself propagates."""
        if not report:
            return [self._recorded(row) for row in rows]
        out: list[RecordedEvent] = []
        for row in rows:
            try:
                out.append(self._recorded(row))
            except Exception as e:  # see the docstring
                raise self._undecodable(row, out, e) from e
        return out

    stored_columns: ClassVar[str]
    log_order: ClassVar[str]
    """ORDER BY / cursor columns of the global log and its gap-safe WHERE clause, per dialect."""
    _hashes: LastHashes

    # -- hash chain -------------------------------------------------------------------------------

    def _previous_hash(self, session_id: UUID, version: int) -> bytes:
        """The chain hash of ``version`` (GENESIS for 0): cached, stored, or recomputed for rows
        written before hashing existed. Rows never change, so reading it outside the append's
        transaction is safe: a concurrent writer can only take the NEXT version."""
        if version == 0:
            return GENESIS
        cached = self._hashes.get(session_id, version)
        if cached is not None:
            return cached
        p = self.placeholder
        rows = self._raw(
            f"SELECT hash FROM events WHERE session_id = {p} AND version = {p}",
            [self._session_param(session_id), version],
        )
        found = rows[0][0] if rows else None
        if found is None:
            found = chain_of(r for r in self.stored_rows(session_id) if r.version <= version)
        return bytes(found)

    # -- audit reads ---------------------------------------------------------------------------

    def stored_rows(
        self,
        session_id: UUID | None = None,
        *,
        after: LogCursor = LOG_START,
        limit: int = 1000,
    ) -> list[StoredRow]:
        p = self.placeholder
        if session_id is not None:
            rows = self._raw(
                f"SELECT {self.stored_columns} FROM events WHERE session_id = {p} ORDER BY version",
                [self._session_param(session_id)],
            )
        else:
            where, order, params = self._log_window(after)
            rows = self._raw(
                f"SELECT {self.stored_columns} FROM events WHERE {where} ORDER BY {order} "
                f"LIMIT {p}",
                [*params, limit],
            )
        return [self._stored_row(row) for row in rows]

    @abstractmethod
    def _log_window(self, after: LogCursor) -> tuple[str, str, list[Any]]:
        """WHERE clause, ORDER BY and parameters reading the global log after a cursor."""

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._raw(
            "SELECT id, tx, position, events, digest, created_at FROM audit_checkpoints "
            "ORDER BY id",
            [],
        )
        return [
            Checkpoint(
                int(r[0]), LogCursor(int(r[1]), int(r[2])), int(r[3]), bytes(r[4]), _time(r[5])
            )
            for r in rows
        ]

    def add_checkpoint(self, cursor: LogCursor, events: int, digest: bytes) -> None:
        p = self.placeholder
        self._write(
            "INSERT INTO audit_checkpoints (tx, position, events, digest) "
            f"VALUES ({p}, {p}, {p}, {p})",
            [cursor.tx, cursor.position, events, digest],
        )

    def read_session(
        self,
        session_id: UUID,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        p = self.placeholder
        query = f"SELECT {self.columns} FROM events WHERE session_id = {p} AND version > {p}"
        params: list[Any] = [self._session_param(session_id), after_version]
        if to_version is not None:
            query += f" AND version <= {p}"
            params.append(to_version)
        query += " ORDER BY version"
        if limit is not None:
            query += f" LIMIT {p}"
            params.append(limit)
        return self._select(query, params)

    def _key_taken(self, key: str) -> NoReturn:
        """The append wrote nothing because its idempotency key was already stored."""
        existing = self.find_idempotency(key)
        if existing is None:  # pragma: no cover - keys are never deleted
            msg = f"idempotency key {key!r} vanished while appending"
            raise StorageError(msg)
        raise IdempotencyKeyExists(existing)


def _time(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
