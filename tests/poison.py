"""Rows the domain would never write, written straight into a log: for the quarantine tests.

``RawLog`` inserts stored rows into a SQLite file or a PostgreSQL schema with plain SQL (as an
import, an older version or a hand-made fix could have), or into the memory log through
``MemoryEventLog.append_stored``. The rows come from real events, encoded as the code does,
then edited: a payload value changed behind the event class's back, or the state replaced by
bytes that are not JSON at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import orjson
import psycopg
from psycopg import sql

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.memory.views import MemoryViewStore
from sessionstore.adapters.storage.serialization import SessionEventMapper, SessionStoredEvent
from sessionstore.adapters.storage.sqlite.log import format_time
from sessionstore.domain.errors import StorageRejected
from sessionstore.domain.ports import LogCursor, RecordedEvent
from sessionstore.events.catalogue import MessageAdded, SessionEvent, TurnRecorded
from sessionstore.projections.base import (
    Applied,
    Batch,
    Key,
    Projection,
    Quarantined,
    Tracking,
)

GARBAGE = b"\xff\xfe not JSON \x00"
MAPPER = SessionEventMapper()


def message(session_id: UUID, version: int, content: str = "hello") -> MessageAdded:
    return MessageAdded(
        session_id=session_id,
        version=version,
        occurred_at=datetime.now(UTC),
        event_id=uuid4(),
        message_id=f"m-{version}",
        role="user",
        content=content,
    )


def turn(session_id: UUID, version: int) -> TurnRecorded:
    return TurnRecorded(
        session_id=session_id,
        version=version,
        occurred_at=datetime.now(UTC),
        event_id=uuid4(),
        request_id=f"r-{version}",
        duration_ms=120.0,
        input_tokens=10,
        output_tokens=20,
    )


def stored(event: SessionEvent, **payload: Any) -> SessionStoredEvent:
    """The event as the code stores it, with ``payload`` values put into its state unchecked."""
    row = MAPPER.encode(event)
    if not payload:
        return row
    state = orjson.loads(row.state) | payload
    return replace(row, state=orjson.dumps(state))


def undecodable(event: SessionEvent) -> SessionStoredEvent:
    """The event's row with state bytes no code can decode."""
    return replace(MAPPER.encode(event), state=GARBAGE)


class RawLog:
    """Inserts stored rows into a log's database directly (no hash: like rows from before
    hashing, which the chain tolerates)."""

    def __init__(self, settings: Settings | None = None, memory: MemoryEventLog | None = None):
        self.settings, self.memory = settings, memory

    def insert(self, row: SessionStoredEvent, tenant_id: str = "acme") -> int:
        """Write the row; returns its log position."""
        if self.memory is not None:
            return self.memory.append_stored(row, tenant_id=tenant_id)
        assert self.settings is not None
        if self.settings.backend == "sqlite":
            with sqlite3.connect(self.settings.sqlite_path) as conn:
                cur = conn.execute(
                    "INSERT INTO events (session_id, version, event_id, topic, class_version, "
                    "tenant_id, occurred_at, recorded_at, state) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        str(row.originator_id),
                        row.originator_version,
                        str(row.event_id),
                        row.topic,
                        row.class_version,
                        tenant_id,
                        format_time(row.occurred_at),
                        format_time(datetime.now(UTC)),
                        row.state,
                    ),
                )
                return int(cur.lastrowid or 0)
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            schema = sql.Identifier(self.settings.database_schema)
            conn.execute(sql.SQL("SET search_path TO {}").format(schema))
            found = conn.execute(
                "INSERT INTO events (session_id, version, event_id, topic, class_version, "
                "tenant_id, occurred_at, state) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING position",
                (
                    row.originator_id,
                    row.originator_version,
                    row.event_id,
                    row.topic,
                    row.class_version,
                    tenant_id,
                    row.occurred_at,
                    row.state,
                ),
            ).fetchone()
            assert found is not None
            return int(found[0])


class Failing:
    """A projection with a bug: it raises on some events (by id), else it is ``inner``."""

    def __init__(
        self, inner: Projection, event_ids: Iterable[UUID], error: type[Exception] = RuntimeError
    ) -> None:
        self.inner, self.bad, self.error = inner, set(event_ids), error
        self.name, self.topics, self.tables = inner.name, inner.topics, inner.tables

    def keys(self, event: RecordedEvent) -> Iterable[tuple[str, Key]]:
        return self.inner.keys(event)

    def apply(self, batch: Batch, event: RecordedEvent) -> None:
        if event.event.event_id in self.bad:
            msg = f"bug on {event.event.event_id}"
            raise self.error(msg)
        self.inner.apply(batch, event)


def refused(value: Any) -> bool:
    """Whether PostgreSQL would refuse to store this view value: text with NUL, an integer
    beyond 64 bits (also inside JSON)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**63
    if isinstance(value, dict):
        return any(refused(k) or refused(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(refused(v) for v in value)
    return False


class RejectingViews(MemoryViewStore):
    """The memory view store, refusing values as PostgreSQL does (nothing written then)."""

    def commit(
        self,
        writes: Sequence[tuple[Projection, int, Batch]],
        moves: Sequence[tuple[Tracking, LogCursor]],
        applied: Sequence[Applied] = (),
        quarantined: Sequence[Quarantined] = (),
        released: Sequence[Quarantined] = (),
    ) -> None:
        for _projection, _generation, batch in writes:
            for changes in batch.changes.values():
                for row in [*changes.upserts.values(), *changes.inserts]:
                    if refused(row):
                        raise StorageRejected("value rejected: like PostgreSQL would")
        super().commit(writes, moves, applied, quarantined, released)
