"""What the event logs share: append bookkeeping for all, stream reads for the SQL ones."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn
from uuid import UUID

from adapters.serialization import SessionEventMapper, SessionStoredEvent
from domain.errors import StorageError
from domain.ports import AppendResult, IdempotencyKeyExists, RecordedEvent, StoredIdempotency
from events.catalogue import SessionEvent


def encode_batch(
    mapper: SessionEventMapper, events: Sequence[SessionEvent]
) -> tuple[list[SessionStoredEvent], UUID]:
    """Encode the events of one append (all of one session) for storage."""
    if not events:
        msg = "append needs at least one event"
        raise ValueError(msg)
    return [mapper.encode(event) for event in events], events[0].session_id


def appended(
    session_id: UUID, stored: list[SessionStoredEvent], positions: list[int]
) -> AppendResult:
    return AppendResult(
        session_id=session_id,
        version=stored[-1].originator_version,
        position=positions[-1],
        events=len(positions),
    )


class SQLEventLog(ABC):
    """Base of the SQL backends. Subclasses say how to run a SELECT and bind a session id."""

    placeholder: ClassVar[str]
    columns: ClassVar[str]
    mapper: SessionEventMapper

    @abstractmethod
    def _select(self, query: str, params: Sequence[Any]) -> list[RecordedEvent]: ...

    @abstractmethod
    def _session_param(self, session_id: UUID) -> object: ...

    @abstractmethod
    def find_idempotency(self, key: str) -> StoredIdempotency | None: ...

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
