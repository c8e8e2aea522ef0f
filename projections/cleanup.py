"""Cleanup view: for each session, the moments its policy makes it a cleanup candidate.

While a session is not ended (active or interrupted):

- ``idle_deadline`` = last activity + ``idle_timeout_seconds`` (None without an idle timeout):
  past it, the session has idled beyond its policy;
- ``expires_at`` = creation + ``ttl_seconds`` (None without a TTL): past it, it may be expired.

Once ended, both are None and ``retention_until`` = end + ``retention_days`` (None: kept
forever): past it, its history is due for removal. Every event is activity, so every event moves
``last_activity_at`` and the idle deadline. This view only finds candidates; ending or erasing a
session is a command that goes through the domain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.session import SessionStatus
from sessionstore.events.catalogue import (
    EVENT_TYPES,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionResumed,
)
from sessionstore.projections.base import Batch, Key, Row, Table
from sessionstore.projections.tables import SESSION_CLEANUP


class CleanupProjection:
    name: str = "cleanup"
    topics: frozenset[str] = frozenset(event_type.topic for event_type in EVENT_TYPES)
    tables: tuple[Table, ...] = (SESSION_CLEANUP,)

    def __init__(self) -> None:
        self._handlers: dict[type[SessionEvent], Callable[[Row, Any], None]] = {
            SessionInterrupted: self._interrupted,
            SessionResumed: self._resumed,
            SessionEnded: self._ended,
        }

    def keys(self, event: RecordedEvent) -> Iterable[tuple[str, Key]]:
        return [(SESSION_CLEANUP.name, (event.event.session_id,))]

    def apply(self, batch: Batch, event: RecordedEvent) -> None:
        e = event.event
        if isinstance(e, SessionCreated):
            batch.put(SESSION_CLEANUP.name, self._created(e))
            return
        row = batch.get(SESSION_CLEANUP.name, (e.session_id,))
        if row is None:
            msg = f"cleanup: {e.topic} v{e.version} of session {e.session_id} before its creation"
            raise ValueError(msg)
        row["version"] = e.version
        row["last_activity_at"] = e.occurred_at
        if row["status"] != SessionStatus.ENDED.value:  # nothing follows the end; be explicit
            row["idle_deadline"] = _after(e.occurred_at, row["idle_timeout_seconds"])
        handler = self._handlers.get(type(e))
        if handler is not None:
            handler(row, e)
        batch.put(SESSION_CLEANUP.name, row)

    # -- handlers ---------------------------------------------------------------------------------

    def _created(self, e: SessionCreated) -> Row:
        policy = e.policy
        return {
            "session_id": e.session_id,
            "tenant_id": e.tenant_id,
            "status": SessionStatus.ACTIVE.value,
            "version": e.version,
            "last_activity_at": e.occurred_at,
            "idle_timeout_seconds": policy.idle_timeout_seconds,
            "retention_days": policy.retention_days,
            "idle_deadline": _after(e.occurred_at, policy.idle_timeout_seconds),
            "expires_at": _after(e.occurred_at, policy.ttl_seconds),
            "retention_until": None,
        }

    def _interrupted(self, row: Row, e: SessionInterrupted) -> None:
        row["status"] = SessionStatus.INTERRUPTED.value

    def _resumed(self, row: Row, e: SessionResumed) -> None:
        row["status"] = SessionStatus.ACTIVE.value

    def _ended(self, row: Row, e: SessionEnded) -> None:
        row["status"] = SessionStatus.ENDED.value
        row["idle_deadline"] = None
        row["expires_at"] = None
        days = row["retention_days"]
        row["retention_until"] = None if days is None else e.occurred_at + timedelta(days=days)


def _after(moment: datetime, seconds: int | None) -> datetime | None:
    return None if seconds is None else moment + timedelta(seconds=seconds)
