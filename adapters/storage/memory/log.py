"""In-memory event log: the unit-test backend. Same contract as SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sessionstore.adapters.storage.chain import GENESIS, Checkpoint
from sessionstore.adapters.storage.serialization import SessionEventMapper, SessionStoredEvent
from sessionstore.adapters.storage.sql.log import (
    _uuid,
    appended,
    chain_hashes,
    encode_batch,
    undecodable,
)
from sessionstore.domain.errors import StreamVersionTaken
from sessionstore.domain.ports import (
    LOG_START,
    AppendResult,
    IdempotencyClaim,
    IdempotencyKeyExists,
    LogCursor,
    RecordedEvent,
    StoredIdempotency,
    StoredRow,
)
from sessionstore.events.catalogue import SessionEvent


@dataclass(frozen=True, slots=True)
class _Row:
    stored: SessionStoredEvent
    tenant_id: str
    position: int
    recorded_at: datetime
    hash: bytes


class MemoryEventLog:
    """Holds encoded rows (so the codec runs exactly as on a database) behind one lock."""

    def __init__(self, mapper: SessionEventMapper | None = None) -> None:
        self.mapper = mapper or SessionEventMapper()
        self._lock = threading.Lock()
        self._log: list[_Row] = []
        self._streams: dict[UUID, list[_Row]] = {}
        self._keys: dict[str, tuple[str, UUID, int, int]] = {}
        self._checkpoints: list[Checkpoint] = []

    def append(
        self,
        events: Sequence[SessionEvent],
        *,
        tenant_id: str,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        encoded, session_id = encode_batch(self.mapper, events)
        with self._lock:
            stream = self._streams.get(session_id, [])
            for offset, stored in enumerate(encoded):
                if stored.originator_version != len(stream) + 1 + offset:
                    # Mirrors the databases' UNIQUE (session_id, version) plus contiguity.
                    raise StreamVersionTaken(session_id, stored.originator_version)
            if idempotency is not None and idempotency.key in self._keys:
                raise IdempotencyKeyExists(self._stored_key(idempotency.key))
            now = datetime.now(UTC)
            previous = stream[-1].hash if stream else GENESIS
            hashes = chain_hashes(previous, encoded, tenant_id)
            rows = []
            for stored, hash_ in zip(encoded, hashes, strict=True):
                row = _Row(stored, tenant_id, len(self._log) + 1, now, hash_)
                self._log.append(row)
                rows.append(row)
            self._streams[session_id] = stream + rows
            if idempotency is not None:
                self._keys[idempotency.key] = (
                    idempotency.request_hash,
                    session_id,
                    encoded[0].originator_version,
                    encoded[-1].originator_version,
                )
        return appended(session_id, encoded, [row.position for row in rows])

    def read_session(
        self,
        session_id: UUID,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        with self._lock:
            rows = self._streams.get(session_id, [])[after_version:to_version]
        if limit is not None:
            rows = rows[:limit]
        return [self._recorded(row) for row in rows]

    def read_log(self, after: LogCursor = LOG_START, *, limit: int = 1000) -> list[RecordedEvent]:
        with self._lock:
            rows = self._log[after.position : after.position + limit]
        return self._decoded(rows)

    def append_stored(self, stored: SessionStoredEvent, *, tenant_id: str) -> int:
        """Write one row as given, behind the domain's back and without any check (as an
        import, an older version or a hand-made fix could have): for tests of how readers
        cope with rows they cannot decode or apply. Returns its position."""
        with self._lock:
            stream = self._streams.setdefault(_uuid(stored.originator_id), [])
            row = _Row(stored, tenant_id, len(self._log) + 1, datetime.now(UTC), b"")
            self._log.append(row)
            stream.append(row)
            return row.position

    def oldest_append_seconds(self) -> float | None:
        return None  # appends here never hold readers back (one writer at a time)

    def head(self) -> LogCursor:
        with self._lock:
            return LogCursor(0, len(self._log))

    def count_after(self, cursor: LogCursor) -> int:
        with self._lock:
            return max(0, len(self._log) - cursor.position)

    def cursor_of(self, position: int) -> LogCursor | None:
        with self._lock:
            return LogCursor(0, position) if 1 <= position <= len(self._log) else None

    def locate(self, position: int) -> tuple[UUID, int] | None:
        with self._lock:
            if not 1 <= position <= len(self._log):
                return None
            stored = self._log[position - 1].stored
        return _uuid(stored.originator_id), stored.originator_version

    def locate_events(self, event_ids: Sequence[UUID]) -> dict[UUID, tuple[UUID, int, int]]:
        wanted = set(event_ids)
        with self._lock:
            return {
                row.stored.event_id: (
                    _uuid(row.stored.originator_id),
                    row.stored.originator_version,
                    row.position,
                )
                for row in self._log
                if row.stored.event_id in wanted
            }

    def stored_rows(
        self,
        session_id: UUID | None = None,
        *,
        after: LogCursor = LOG_START,
        limit: int = 1000,
    ) -> list[StoredRow]:
        with self._lock:
            if session_id is not None:
                rows = list(self._streams.get(session_id, []))
            else:
                rows = self._log[after.position : after.position + limit]
        return [
            StoredRow(
                session_id=_uuid(r.stored.originator_id),
                version=r.stored.originator_version,
                event_id=r.stored.event_id,
                topic=r.stored.topic,
                class_version=r.stored.class_version,
                tenant_id=r.tenant_id,
                occurred_at=r.stored.occurred_at,
                state=r.stored.state,
                position=r.position,
                tx=0,
                hash=r.hash,
            )
            for r in rows
        ]

    def checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            return list(self._checkpoints)

    def add_checkpoint(self, cursor: LogCursor, events: int, digest: bytes) -> None:
        with self._lock:
            number = len(self._checkpoints) + 1
            self._checkpoints.append(Checkpoint(number, cursor, events, digest, datetime.now(UTC)))

    def find_idempotency(self, key: str) -> StoredIdempotency | None:
        with self._lock:
            return self._stored_key(key) if key in self._keys else None

    def close(self) -> None:
        """Nothing to release."""

    def _stored_key(self, key: str) -> StoredIdempotency:
        request_hash, session_id, first, last = self._keys[key]
        position = self._streams[session_id][last - 1].position
        return StoredIdempotency(key, session_id, request_hash, first, last, position)

    def _decoded(self, rows: Sequence[_Row]) -> list[RecordedEvent]:
        """Rows decoded in order; UndecodableEvent (with the rows before it) for a bad one."""
        out: list[RecordedEvent] = []
        for row in rows:
            try:
                out.append(self._recorded(row))
            except Exception as e:  # any failure to decode a row is reported
                s = row.stored
                raise undecodable(
                    out, e, cursor=LogCursor(0, row.position), session_id=s.originator_id,
                    version=s.originator_version, event_id=s.event_id, topic=s.topic,
                    tenant_id=row.tenant_id, class_version=s.class_version, state=s.state,
                ) from e  # fmt: skip
        return out

    def _recorded(self, row: _Row) -> RecordedEvent:
        return RecordedEvent(
            event=self.mapper.decode(row.stored),
            tenant_id=row.tenant_id,
            position=row.position,
            tx=0,
            recorded_at=row.recorded_at,
        )
