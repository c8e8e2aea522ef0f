"""The write side: create a session and append commands to it, all through one helper
(``_append``: ownership, If-Match, the tenant's idempotency key, metrics, the ETag)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Request
from starlette.responses import JSONResponse

from sessionstore.adapters.http.deps import (
    Appender,
    Context,
    Ctx,
    IdempotencyKey,
    IfMatch,
    SessionIdPath,
    etag,
    namespaced,
    parse_if_match,
)
from sessionstore.adapters.http.errors import APPEND, problem_responses, status_for
from sessionstore.adapters.http.keys import Principal
from sessionstore.adapters.http.schemas import AppendOut, CreateSessionBody, TurnBody
from sessionstore.domain.commands import (
    AddMessage,
    Command,
    CreateSession,
    End,
    Interrupt,
    Resume,
    UpdateContext,
)
from sessionstore.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidInput,
    SessionStoreError,
)


def _append(
    ctx: Context,
    request: Request,
    principal: Principal,
    session_id: UUID | None,
    command: Command,
    *,
    if_match: str | None,
    idempotency_key: str | None,
) -> JSONResponse:
    expected = parse_if_match(if_match)
    request.state.precondition = expected is not None
    if session_id is not None:
        ctx.check_owner(session_id, principal)
    key = namespaced(principal.tenant_id, idempotency_key)
    limit = ctx.store.limits.max_idempotency_key_length
    if key is not None and len(key) > limit:
        raise InvalidInput(
            [
                {
                    "field": "Idempotency-Key",
                    "message": f"at most {limit - len(key) + len(idempotency_key or '')} "
                    "characters for this tenant",
                }
            ]
        )
    status = "error"
    started = time.perf_counter()
    try:
        result = ctx.store.execute(
            session_id, command, expected_version=expected, idempotency_key=key
        )
        status = "200" if result.replayed else "201"
    except IdempotencyKeyReused as e:
        status = "422"
        raise IdempotencyKeyReused(idempotency_key or "", e.session_id) from None
    except ConcurrencyConflict:
        ctx.metrics.conflicts.labels(command.name).inc()
        status = "412" if expected is not None else "409"
        raise
    except SessionStoreError as e:
        status = str(status_for(e, request))
        raise
    finally:
        ctx.metrics.append_seconds.labels(command.name).observe(time.perf_counter() - started)
        ctx.metrics.appends.labels(command.name, status).inc()
    if isinstance(command, CreateSession):
        ctx.remember(result.session_id, principal.tenant_id)
    if ctx.nudge is not None and not result.replayed:
        ctx.nudge.set()
    body = AppendOut(session_id=result.session_id, version=result.version, position=result.position)
    headers = {"ETag": etag(result.version)}
    if isinstance(command, CreateSession):
        headers["Location"] = f"/v1/sessions/{result.session_id}"
    return JSONResponse(
        body.model_dump(mode="json"), status_code=200 if result.replayed else 201, headers=headers
    )


_APPEND_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "The session's new version"}
}
_APPENDED: dict[int | str, dict[str, Any]] = {
    201: {"description": "Appended", "headers": _APPEND_HEADERS},
    200: {"model": AppendOut, "description": "A replayed idempotent request: the first result"},
}

router = APIRouter(prefix="/v1")


@router.post(
    "/sessions",
    status_code=201,
    response_model=AppendOut,
    responses={
        201: {
            "description": "Created",
            "headers": {**_APPEND_HEADERS, "Location": {"schema": {"type": "string"}}},
        },
        200: _APPENDED[200],
        **problem_responses(400, 401, 403, 409, 413, 422, 503),
    },
    tags=["sessions"],
)
def create_session(
    ctx: Ctx,
    request: Request,
    principal: Appender,
    body: CreateSessionBody,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Start a session for the key's tenant."""
    try:
        command = CreateSession.model_validate(
            {"tenant_id": principal.tenant_id, **body.model_dump(exclude_unset=True)}
        )
    except ValueError as e:
        raise InvalidInput([{"field": "body", "message": str(e)}]) from None
    return _append(
        ctx, request, principal, None, command, if_match=None, idempotency_key=idempotency_key
    )


def _append_route(path: str, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return router.post(
        path,
        status_code=201,
        response_model=AppendOut,
        responses={**_APPENDED, **problem_responses(*APPEND)},
        tags=["appends"],
        summary=summary,
    )


@_append_route("/sessions/{session_id}/messages", "Add a message")
def add_message(
    *,
    ctx: Ctx,
    request: Request,
    principal: Appender,
    session_id: SessionIdPath,
    body: AddMessage,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Append a message (user, assistant with optional tool calls, tool result, system)."""
    return _append(
        ctx,
        request,
        principal,
        session_id,
        body,
        if_match=if_match,
        idempotency_key=idempotency_key,
    )


@_append_route("/sessions/{session_id}/turns", "Record a turn")
def record_turn(
    *,
    ctx: Ctx,
    request: Request,
    principal: Appender,
    session_id: SessionIdPath,
    body: TurnBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Record one request/response turn with its latencies and tokens."""
    return _append(
        ctx,
        request,
        principal,
        session_id,
        body,
        if_match=if_match,
        idempotency_key=idempotency_key,
    )


@_append_route("/sessions/{session_id}/context", "Update the working memory")
def update_context(
    *,
    ctx: Ctx,
    request: Request,
    principal: Appender,
    session_id: SessionIdPath,
    body: UpdateContext,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Set and remove keys of the session's context."""
    return _append(
        ctx,
        request,
        principal,
        session_id,
        body,
        if_match=if_match,
        idempotency_key=idempotency_key,
    )


@_append_route("/sessions/{session_id}/interrupt", "Interrupt")
def interrupt(
    *,
    ctx: Ctx,
    request: Request,
    principal: Appender,
    session_id: SessionIdPath,
    body: Interrupt,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Interrupt an active session (open tool calls are recorded as aborted)."""
    return _append(
        ctx,
        request,
        principal,
        session_id,
        body,
        if_match=if_match,
        idempotency_key=idempotency_key,
    )


@_append_route("/sessions/{session_id}/resume", "Resume")
def resume(
    *,
    ctx: Ctx,
    request: Request,
    principal: Appender,
    session_id: SessionIdPath,
    body: Annotated[Resume | None, Body()] = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Resume an interrupted session. The body is optional (``{}``)."""
    return _append(
        ctx,
        request,
        principal,
        session_id,
        body or Resume(),
        if_match=if_match,
        idempotency_key=idempotency_key,
    )


@_append_route("/sessions/{session_id}/end", "End")
def end(
    *,
    ctx: Ctx,
    request: Request,
    principal: Appender,
    session_id: SessionIdPath,
    body: Annotated[End | None, Body()] = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """End the session (default status: completed). The body is optional."""
    return _append(
        ctx,
        request,
        principal,
        session_id,
        body or End(),
        if_match=if_match,
        idempotency_key=idempotency_key,
    )
