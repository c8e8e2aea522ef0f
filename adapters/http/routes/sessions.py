"""Sessions read from the views: one session's state, the tenant's sessions a page at a time,
and the last messages of a transcript."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Query, Response

from sessionstore.adapters.http.deps import Ctx, MinPosition, Reader, SessionIdPath, etag
from sessionstore.adapters.http.errors import READ, SESSION_READ, problem_responses
from sessionstore.adapters.http.schemas import (
    MessagesOut,
    SessionOut,
    SessionPageOut,
    SessionViewOut,
)
from sessionstore.projections.queries import (
    DEFAULT_PAGE_SIZE,
    MAX_MESSAGES,
    MAX_PAGE_SIZE,
)
from sessionstore.projections.query_rules import (
    STATUS_CHOICES,
)

router = APIRouter(prefix="/v1")


@router.get(
    "/sessions/{session_id}",
    response_model=SessionViewOut,
    responses={
        200: {"headers": {"ETag": {"schema": {"type": "string"}}}},
        **problem_responses(*SESSION_READ),
    },
    tags=["sessions"],
)
def get_session(
    ctx: Ctx,
    principal: Reader,
    response: Response,
    session_id: SessionIdPath,
    min_position: MinPosition = None,
) -> SessionViewOut:
    """The session's current state from the session state view (``ETag``: its version)."""
    ctx.wait(min_position, "session_state")
    view = ctx.queries.get_session(session_id, tenant_id=principal.tenant_id)
    response.headers["ETag"] = etag(view.state.version)
    out = SessionOut.model_validate(view.state, from_attributes=True)
    return SessionViewOut(**dict(out), position=view.last_position)


StatusFilter = Literal[
    "active", "interrupted", "ended", "completed", "failed", "expired", "abandoned"
]
assert set(STATUS_CHOICES) == set(get_args(StatusFilter))  # noqa: S101 - import-time contract


@router.get(
    "/sessions",
    response_model=SessionPageOut,
    responses=problem_responses(*READ),
    tags=["sessions"],
)
def list_sessions(
    *,
    ctx: Ctx,
    principal: Reader,
    status: Annotated[StatusFilter | None, Query(description="A status or end status")] = None,
    user_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    agent_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    idle_for: Annotated[
        int | None,
        Query(ge=0, le=10 * 365 * 86400, description="Idle at least this many seconds"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    min_position: MinPosition = None,
) -> SessionPageOut:
    """The tenant's sessions, oldest first, a page at a time."""
    ctx.wait(min_position, "session_state")
    page = ctx.queries.list_sessions(
        tenant_id=principal.tenant_id,
        status=status,
        user_id=user_id,
        agent_id=agent_id,
        idle_for=None if idle_for is None else timedelta(seconds=idle_for),
        limit=limit,
        cursor=cursor,
    )
    return SessionPageOut(items=list(page.items), next_cursor=page.next_cursor)


@router.get(
    "/sessions/{session_id}/messages",
    response_model=MessagesOut,
    responses=problem_responses(*SESSION_READ),
    tags=["sessions"],
)
def last_messages(
    ctx: Ctx,
    principal: Reader,
    session_id: SessionIdPath,
    last: Annotated[int, Query(ge=1, le=MAX_MESSAGES)] = 20,
    min_position: MinPosition = None,
) -> MessagesOut:
    """The last N transcript entries, oldest first (for the model's context window)."""
    ctx.wait(min_position, "transcript")
    ctx.queries.get_session(session_id, tenant_id=principal.tenant_id)
    entries = ctx.queries.last_messages(session_id, last, tenant_id=principal.tenant_id)
    return MessagesOut(session_id=session_id, messages=entries)
