"""JSON Lines export of the log (or of a tenant, user or session), streamed page by page.

The export format (docs/audit.md has an example): a header line, one line per event in log
order, and a trailer line with the counts, so a file cut short at a line boundary is noticed.
An event line carries the event as the current code reads it (``payload`` is the decoded,
upcast event's own fields, ``class_version`` its class's) and, while re-encoding reproduces the
stored bytes exactly, the stored chain hash, which an import recomputes and must match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from uuid import UUID

import orjson

from sessionstore.adapters.audit.history import PAGE_SIZE, mapper_of
from sessionstore.domain.errors import (
    SessionNotFound,
    StorageError,
)
from sessionstore.domain.ports import LOG_START, EventLog, LogCursor, RecordedEvent, StoredRow
from sessionstore.events.catalogue import SessionCreated

FORMAT = "sessionstore-export"
FORMAT_VERSION = 1

Progress = Callable[[int], None]
"""Called with how many more events (export, import writes) or lines (import reads) are done."""


@dataclass(frozen=True, slots=True)
class ExportSummary:
    sessions: int
    events: int


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _line(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode() + "\n"


def export(
    log: EventLog,
    out: IO[str],
    *,
    tenant_id: str | None = None,
    user_id: str | None = None,
    session_id: UUID | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ExportSummary:
    """Write the log (or one tenant's, user's or session's part of it) to ``out`` as JSON Lines,
    in log order, up to the log head when the export started. Filters combine.

    Streams: reads a page at a time and keeps only a set of session ids in memory."""
    head = log.head()
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": _time(now or datetime.now(UTC)),
        "head_position": head.position,
        "filter": {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "session_id": None if session_id is None else str(session_id),
        },
    }
    out.write(_line(header))
    mapper = mapper_of(log)
    included: dict[UUID, bool] = {}
    reproducible: dict[UUID, bool] = {}
    events = 0
    for row, recorded in _rows(log, session_id, head, progress):
        sid, event = row.session_id, recorded.event
        if sid not in included:
            # A session's first event comes first in the log too: it decides on the session.
            user = event.user_id if isinstance(event, SessionCreated) else None
            included[sid] = (tenant_id is None or row.tenant_id == tenant_id) and (
                user_id is None or user == user_id
            )
        if not included[sid]:
            continue
        # The stored hash is only checkable after an import if the import stores the same
        # bytes: not for rows an upcaster changed (an older class_version), nor anything after.
        same = mapper.encode(event).state == row.state
        reproducible[sid] = reproducible.get(sid, True) and same and row.hash is not None
        out.write(
            _line(
                {
                    "session_id": str(sid),
                    "version": row.version,
                    "position": row.position,
                    "event_id": str(row.event_id),
                    "type": event.topic,
                    "class_version": type(event).class_version,
                    "occurred_at": _time(event.occurred_at),
                    "recorded_at": _time(recorded.recorded_at),
                    "tenant_id": row.tenant_id,
                    "hash": row.hash.hex() if reproducible[sid] and row.hash else None,
                    "payload": event.payload(),
                }
            )
        )
        events += 1
    sessions = sum(1 for kept in included.values() if kept)
    out.write(_line({"end": FORMAT, "sessions": sessions, "events": events}))
    return ExportSummary(sessions, events)


def export_total(log: EventLog, session_id: UUID | None = None) -> int:
    """How many events an export reads (for a progress bar's total)."""
    if session_id is not None:
        return len(log.read_session(session_id))
    return log.count_after(LOG_START)


def _rows(
    log: EventLog, session_id: UUID | None, head: LogCursor, progress: Progress | None
) -> Iterable[tuple[StoredRow, RecordedEvent]]:
    """Stored rows (for hashes) with their decoded events (for payloads and recorded_at)."""
    if session_id is not None:
        rows = [r for r in log.stored_rows(session_id) if r.cursor <= head]
        recorded = log.read_session(session_id, to_version=len(rows))
        if not rows:
            raise SessionNotFound(session_id)
        yield from _paired(rows, recorded)
        if progress:
            progress(len(rows))
        return
    cursor = LOG_START
    while cursor < head:
        rows = [r for r in log.stored_rows(after=cursor, limit=PAGE_SIZE) if r.cursor <= head]
        if not rows:
            break
        # Both reads are in log order from the same cursor; rows only ever appear after the
        # ones a reader already saw, so the second read starts with the same rows.
        yield from _paired(rows, log.read_log(cursor, limit=len(rows)))
        if progress:
            progress(len(rows))
        cursor = rows[-1].cursor


def _paired(
    rows: Sequence[StoredRow], recorded: Sequence[RecordedEvent]
) -> Iterable[tuple[StoredRow, RecordedEvent]]:
    if [r.position for r in rows] != [r.position for r in recorded[: len(rows)]]:
        msg = "the log changed under the export (stored rows and events disagree)"
        raise StorageError(msg)
    yield from zip(rows, recorded, strict=False)


# ---------------------------------------------------------------------------------------------
