"""Audit: a session's events and its state as of a version or a time, read from the log (not
from a view)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from sessionstore.adapters import audit
from sessionstore.adapters.http.deps import Ctx, Reader, SessionIdPath
from sessionstore.adapters.http.errors import SESSION_READ, problem_responses
from sessionstore.adapters.http.schemas import EventOut, HistoryOut, SessionOut, StateAsOfOut
from sessionstore.domain.audit import state_as_of
from sessionstore.domain.errors import InvalidInput
from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.session import Session

MAX_HISTORY_PAGE = audit.MAX_HISTORY_PAGE

router = APIRouter(prefix="/v1")


def _event_out(recorded: RecordedEvent) -> EventOut:
    event = recorded.event
    return EventOut(
        session_id=event.session_id,
        version=event.version,
        type=event.topic,
        class_version=event.class_version,
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        position=recorded.position,
        recorded_at=recorded.recorded_at,
        payload=event.payload(),
    )


@router.get(
    "/sessions/{session_id}/events",
    response_model=HistoryOut,
    responses=problem_responses(*SESSION_READ),
    tags=["audit"],
)
def session_history(
    ctx: Ctx,
    principal: Reader,
    session_id: SessionIdPath,
    after_version: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_PAGE)] = 100,
) -> HistoryOut:
    """The session's events in version order (from the log, not a view)."""
    ctx.check_owner(session_id, principal)
    page = audit.history(ctx.log, session_id, after_version=after_version, limit=limit)
    return HistoryOut(
        events=[_event_out(r) for r in page.events], next_after_version=page.next_after_version
    )


@router.get(
    "/sessions/{session_id}/state",
    response_model=StateAsOfOut,
    responses=problem_responses(*SESSION_READ),
    tags=["audit"],
)
def session_state_as_of(
    ctx: Ctx,
    principal: Reader,
    session_id: SessionIdPath,
    version: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    at: Annotated[
        str | None,
        Query(
            description="An RFC 3339 time with a zone; not together with version",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> StateAsOfOut:
    """The state as of a version or a time, replayed from the log (default: the latest)."""
    moment = _instant(at)
    ctx.check_owner(session_id, principal)
    events = audit.session_events(ctx.log, session_id)
    state: Session = state_as_of(events, version=version, at=moment)
    return StateAsOfOut(
        as_of_version=version,
        as_of_time=None if moment is None else moment.astimezone(UTC),
        state=SessionOut.model_validate(state, from_attributes=True),
    )


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput([{"field": "at", "message": "not an RFC 3339 time"}]) from None
    if moment.tzinfo is None:
        raise InvalidInput([{"field": "at", "message": "needs a time zone (e.g. Z or +00:00)"}])
    return moment
