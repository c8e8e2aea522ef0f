"""A session's history over an event log, filtered by type and time, a page at a time."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sessionstore.adapters.storage.serialization import SessionEventMapper
from sessionstore.domain.errors import (
    InvalidInput,
    SessionNotFound,
)
from sessionstore.domain.ports import EventLog, RecordedEvent
from sessionstore.events.catalogue import SessionEvent
from sessionstore.events.codec import EventCodec

PAGE_SIZE = 1000
MAX_HISTORY_PAGE = 1000


def mapper_of(log: object) -> SessionEventMapper:
    """The log's own mapper (so bytes are encoded exactly as it stores them)."""
    mapper = getattr(log, "mapper", None)
    return mapper if isinstance(mapper, SessionEventMapper) else SessionEventMapper()


# ---------------------------------------------------------------------------------------------
# History


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a session's history. ``next_after_version`` continues it (None: no more)."""

    events: list[RecordedEvent]
    next_after_version: int | None


def history(
    log: EventLog,
    session_id: UUID,
    *,
    types: Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    after_version: int = 0,
    limit: int = 100,
) -> HistoryPage:
    """A session's events in version order after ``after_version``, at most ``limit``, only of
    the given types (topics; all if none) and with ``since <= occurred_at <= until``."""
    wanted = frozenset(types)
    _check_history_args(wanted, since, until, after_version, limit)
    if not log.read_session(session_id, limit=1):
        raise SessionNotFound(session_id)
    matched: list[RecordedEvent] = []
    cursor = after_version
    # Read one event beyond the page: if it exists, the page has a successor.
    while len(matched) <= limit:
        chunk = log.read_session(session_id, after_version=cursor, limit=PAGE_SIZE)
        for recorded in chunk:
            event = recorded.event
            if wanted and event.topic not in wanted:
                continue
            if since is not None and event.occurred_at < since:
                continue
            if until is not None and event.occurred_at > until:
                continue
            matched.append(recorded)
            if len(matched) > limit:
                break
        if len(chunk) < PAGE_SIZE:
            break
        cursor = chunk[-1].event.version
    if len(matched) > limit:
        return HistoryPage(matched[:limit], matched[limit - 1].event.version)
    return HistoryPage(matched, None)


def _check_history_args(
    wanted: frozenset[str],
    since: datetime | None,
    until: datetime | None,
    after_version: int,
    limit: int,
) -> None:
    problems = []
    unknown = sorted(wanted - set(EventCodec().topics))
    if unknown:
        known = ", ".join(sorted(EventCodec().topics))
        problems.append({"field": "type", "message": f"unknown {unknown}; known: {known}"})
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        problems.append({"field": "limit", "message": f"must be 1 to {MAX_HISTORY_PAGE}"})
    if after_version < 0:
        problems.append({"field": "after_version", "message": "must be 0 or more"})
    for name, value in (("from", since), ("to", until)):
        if value is not None and value.tzinfo is None:
            problems.append({"field": name, "message": "needs a time zone (e.g. Z or +00:00)"})
    if not problems and since is not None and until is not None and since > until:
        problems.append({"field": "from", "message": "is after --to"})
    if problems:
        raise InvalidInput(problems)


def session_events(log: EventLog, session_id: UUID) -> list[SessionEvent]:
    """Every event of a session, in version order (SessionNotFound if it has none)."""
    events = [r.event for r in log.read_session(session_id)]
    if not events:
        raise SessionNotFound(session_id)
    return events


# ---------------------------------------------------------------------------------------------
