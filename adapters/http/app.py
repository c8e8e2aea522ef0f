"""The HTTP API: FastAPI routes over the SessionStore (appends) and SessionQueries (reads).

``create_app(settings)`` builds everything from settings (the store, the view store, the queries
and the API keys) unless the caller hands them in; the app's lifespan closes what it built.
Every route but the health checks, ``/metrics`` and the OpenAPI document needs a Bearer API key
(``adapters.http.keys``): its tenant scopes everything the request sees, and a session of another
tenant is "not found", never "forbidden", so a key cannot even learn that it exists. Errors are
``application/problem+json`` (``adapters.http.problems``). docs/http.md describes the API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, cast, get_args
from uuid import UUID

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionstore.adapters import audit
from sessionstore.adapters.bootstrap import open_log, open_queries, open_views
from sessionstore.adapters.http.keys import KeyStore, Principal
from sessionstore.adapters.http.problems import (
    MEDIA_TYPE,
    Problem,
    error_response,
    problem_response,
    status_of,
)
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.sql.log import SQLRunner
from sessionstore.domain.audit import state_as_of
from sessionstore.domain.commands import (
    AddMessage,
    Command,
    CreateSession,
    End,
    Interrupt,
    RecordTurn,
    Resume,
    UpdateContext,
)
from sessionstore.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidInput,
    ProjectionFedFromKafka,
    ProjectionTimeout,
    SessionNotFound,
    SessionStoreError,
    StorageError,
)
from sessionstore.domain.ports import EventLog, RecordedEvent
from sessionstore.domain.session import Session, SessionStatus
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import (
    Channel,
    EndStatus,
    Identifier,
    Milliseconds,
    Role,
    SessionPolicy,
    ToolCall,
)
from sessionstore.events.codec import CodecError
from sessionstore.projections import all_projections
from sessionstore.projections.base import ProjectionStatus, ViewStore
from sessionstore.projections.queries import (
    DEFAULT_PAGE_SIZE,
    MAX_MESSAGES,
    MAX_PAGE_SIZE,
    STATUS_CHOICES,
    AgentMetrics,
    SessionMetrics,
    SessionQueries,
    SessionSummary,
    TranscriptEntry,
)
from sessionstore.projections.runner import ProjectionRunner, rebuild, select

logger = logging.getLogger("sessionstore.http")

API_TITLE = "sessionstore"
TENANT_CACHE_SIZE = 100_000
"""Session → tenant entries kept in memory (a session's tenant never changes)."""
STALL_SECONDS = 60.0
"""A view with lag whose position has not moved for this long makes /readyz fail."""
MAX_HISTORY_PAGE = audit.MAX_HISTORY_PAGE
PROJECTOR_POLL_SECONDS = 0.5
IDEMPOTENCY_KEY_ROOM = 200 + 1 + 3 * 200


# ---------------------------------------------------------------------------------------------
# Request bodies (the domain's command models, except create: its tenant comes from the key)


MAX_POLICY_SECONDS = 100 * 366 * 86400
MAX_RETENTION_DAYS = 100 * 366


class PolicyBody(BaseModel):
    """A session's idle/TTL/retention policy. Bounded to a century: deadlines far beyond that
    would overflow the date arithmetic of the cleanup view."""

    model_config = ConfigDict(extra="forbid")

    idle_timeout_seconds: Annotated[int, Field(gt=0, le=MAX_POLICY_SECONDS)] | None = 1800
    ttl_seconds: Annotated[int, Field(gt=0, le=MAX_POLICY_SECONDS)] | None = None
    retention_days: Annotated[int, Field(gt=0, le=MAX_RETENTION_DAYS)] | None = None


MAX_TURN_MS = 7 * 86400 * 1000.0
BoundedMs = Annotated[Milliseconds, Field(le=MAX_TURN_MS)]


class TurnBody(RecordTurn):
    """RecordTurn with each latency at most a week: sums of unbounded floats overflow to
    infinity, which the metrics cannot report (and no turn takes longer)."""

    duration_ms: BoundedMs
    stt_ms: BoundedMs | None = None
    llm_ms: BoundedMs | None = None
    tts_ms: BoundedMs | None = None
    tool_ms: BoundedMs | None = None


class CreateSessionBody(BaseModel):
    """A new session. The tenant is the API key's; ``session_id`` may be chosen by the client."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    agent_id: Identifier
    channel: Channel = Channel.TEXT
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    policy: PolicyBody = Field(default_factory=PolicyBody)
    session_id: UUID | None = None


# ---------------------------------------------------------------------------------------------
# Response bodies


class AppendOut(BaseModel):
    """Where an append left the session: its version and the global log position (pass it as
    ``min_position`` to read your own write from the views)."""

    session_id: UUID
    version: int
    position: int


class SessionOut(BaseModel):
    """A session's state."""

    model_config = ConfigDict(from_attributes=True)

    session_id: UUID
    tenant_id: str
    user_id: str
    agent_id: str
    channel: Channel
    policy: SessionPolicy
    created_at: datetime
    version: int
    status: SessionStatus
    metadata: dict[str, JsonValue]
    context: dict[str, JsonValue]
    last_activity_at: datetime | None
    interrupted_at: datetime | None
    ended_at: datetime | None
    end_status: EndStatus | None
    end_reason: str | None
    message_count: int
    turn_count: int
    error_turn_count: int
    interrupt_count: int
    resume_count: int
    input_tokens: int
    output_tokens: int
    open_tool_calls: list[ToolCall]
    last_message_role: Role | None
    last_message_preview: str | None


class SessionViewOut(SessionOut):
    position: int = Field(description="Log position of the last event the view has applied")


class StateAsOfOut(BaseModel):
    as_of_version: int | None
    as_of_time: datetime | None
    state: SessionOut


class SessionPageOut(BaseModel):
    items: list[SessionSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: end")


class MessagesOut(BaseModel):
    session_id: UUID
    messages: list[TranscriptEntry]


class EventOut(BaseModel):
    session_id: UUID
    version: int
    type: str = Field(description="The event's topic, e.g. MessageAdded")
    class_version: int
    event_id: UUID
    occurred_at: datetime
    position: int
    recorded_at: datetime
    payload: dict[str, JsonValue]


class HistoryOut(BaseModel):
    events: list[EventOut]
    next_after_version: int | None = Field(description="Pass as ?after_version= for more")


class ProjectionOut(BaseModel):
    name: str
    generation: int
    position: int
    head: int
    lag_events: int
    building: int | None
    feed: Literal["log", "kafka"] = Field(
        description="Where the view's events come from; a Kafka-fed view's lag is its consumer "
        "group's (`sessionstore projections status --kafka`), not lag_events"
    )


class RebuildOut(BaseModel):
    projection: str
    generation: int
    events_read: int


class HealthOut(BaseModel):
    status: Literal["ok", "ready"]
    checks: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Problems raised by the HTTP layer itself


class HTTPProblem(Exception):
    def __init__(
        self,
        code: str,
        detail: str,
        *,
        context: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail
        self.context = dict(context or {})
        self.headers = dict(headers or {})


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the problem responses a route may give."""
    described = {
        304: "Not modified",
        400: "Malformed header (If-Match)",
        401: "Missing or invalid API key",
        403: "The key's role may not do this",
        404: "No such session (or one of another tenant), or no such resource",
        409: "Not allowed in the session's current state, or already exists",
        412: "If-Match names a version the session is no longer at",
        413: "Request body too large",
        422: "Invalid input (fields, sizes, idempotency key reused for another request)",
        503: "The database or a view is not available or not caught up; retry later",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": Problem, "description": described[status]}
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if status == 503:
            entry["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        out[status] = entry
    return out


_READ = (401, 403, 422, 503)
_SESSION_READ = (*_READ, 404)
_APPEND = (400, 401, 403, 404, 409, 412, 413, 422, 503)


# ---------------------------------------------------------------------------------------------
# Prometheus metrics (one registry per app, so apps in one process do not share counters)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sessionstore_http_requests",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.appends = Counter(
            "sessionstore_append_requests",
            "Append requests by command and HTTP status",
            ["command", "status"],
            registry=self.registry,
        )
        self.append_seconds = Histogram(
            "sessionstore_append_duration_seconds",
            "Time to decide and append one command (store call only)",
            ["command"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.conflicts = Counter(
            "sessionstore_append_conflicts",
            "Appends refused because the session had moved on (stale If-Match, or contention)",
            ["command"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "sessionstore_projection_lag_events",
            "Events in the log the projection has still to apply",
            ["projection"],
            registry=self.registry,
        )
        self.position = Gauge(
            "sessionstore_projection_position",
            "Log position the projection has applied up to",
            ["projection"],
            registry=self.registry,
        )
        self.head = Gauge(
            "sessionstore_log_head_position",
            "Position of the last event in the log",
            registry=self.registry,
        )


# ---------------------------------------------------------------------------------------------
# The app's state


class _Nudge:
    """The embedded projector's waiter: woken by this process's appends, else polls."""

    def __init__(self, stop: threading.Event) -> None:
        self._event = threading.Event()
        self._stop = stop

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()

    def set(self) -> None:
        self._event.set()

    def close(self) -> None:
        self._event.set()


@dataclass
class Context:
    settings: Settings
    store: SessionStore
    views: ViewStore
    queries: SessionQueries
    keys: KeyStore
    metrics: Metrics
    owned: list[Callable[[], None]]
    project: bool
    stall_seconds: float
    tenants: OrderedDict[UUID, str] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rebuilding: threading.Lock = field(default_factory=threading.Lock)
    stalls: dict[str, tuple[int, float]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    nudge: _Nudge | None = None

    @property
    def log(self) -> EventLog:
        return self.store.log

    def runner(self) -> ProjectionRunner:
        return ProjectionRunner(self.log, self.views, all_projections())

    def tenant_of(self, session_id: UUID) -> str:
        """The session's tenant (SessionNotFound if it does not exist)."""
        with self.lock:
            tenant = self.tenants.get(session_id)
        if tenant is None:
            tenant = self.store.get(session_id).tenant_id
            self.remember(session_id, tenant)
        return tenant

    def remember(self, session_id: UUID, tenant: str) -> None:
        with self.lock:
            self.tenants[session_id] = tenant
            while len(self.tenants) > TENANT_CACHE_SIZE:
                self.tenants.popitem(last=False)

    def check_owner(self, session_id: UUID, principal: Principal) -> None:
        """Another tenant's session is reported exactly like one that does not exist."""
        if self.tenant_of(session_id) != principal.tenant_id:
            raise SessionNotFound(session_id)

    def wait(self, min_position: int | None, view: str) -> None:
        if min_position is None or min_position == 0:
            return
        try:
            self.queries.wait_for(
                min_position, views=[view], timeout=self.settings.http_wait_seconds
            )
        except ProjectionTimeout:
            # A position an append returned is committed before the client sees it, so one
            # the log does not hold even after the wait was never returned by an append.
            if self.log.cursor_of(min_position) is None:
                raise InvalidInput(
                    [{"field": "min_position", "message": "no event at this log position"}]
                ) from None
            raise


def _context(request: Request) -> Context:
    return cast("Context", request.app.state.ctx)


Ctx = Annotated[Context, Depends(_context)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`sessionstore keys create`): `Authorization: Bearer ssk_...`",
)


def _principal(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise HTTPProblem(
            "unauthorized",
            "an API key is required: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="sessionstore"'},
        )
    principal = ctx.keys.authenticate(credentials.credentials)
    if principal is None:
        raise HTTPProblem(
            "unauthorized",
            "the API key is unknown, malformed or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="sessionstore", error="invalid_token"'},
        )
    return principal


def _appender(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not principal.may_append():
        raise HTTPProblem(
            "forbidden",
            f"a {principal.role.value} key may not append; use an agent or admin key",
            context={"role": principal.role.value},
        )
    return principal


def _operator(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not principal.may_operate():
        raise HTTPProblem(
            "forbidden",
            f"a {principal.role.value} key may not do this; it needs an admin key",
            context={"role": principal.role.value},
        )
    return principal


Reader = Annotated[Principal, Depends(_principal)]
Appender = Annotated[Principal, Depends(_appender)]
Operator = Annotated[Principal, Depends(_operator)]

SessionIdPath = Annotated[UUID, Path(description="The session's id (a UUID)")]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Append only if the session is at this version: a strong ETag, `"7"`',
        # Documented, not enforced by validation: a weak or malformed tag is a 400 problem.
        json_schema_extra={"pattern": r'^(\*|"[0-9]{1,18}")$'},
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="A retry with the same key and body returns the first result",
    ),
]
MinPosition = Annotated[
    int | None,
    Query(
        ge=0,
        le=2**62,
        description="Wait (bounded) until the view has applied the log up to this position",
    ),
]


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header names; None without one (or for ``*``)."""
    if value is None:
        return None
    text = value.strip()
    if text == "*":
        return None
    if text.startswith("W/"):
        raise HTTPProblem(
            "invalid-precondition",
            'If-Match needs a strong ETag (a quoted version such as "7"), not a weak one',
            context={"if_match": value},
        )
    inner = text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else ""
    if not inner.isascii() or not inner.isdigit() or len(inner) > 18:
        raise HTTPProblem(
            "invalid-precondition",
            'If-Match must be one quoted version, such as "7"',
            context={"if_match": value},
        )
    return int(inner)


def namespaced(tenant_id: str, key: str | None) -> str | None:
    """The store's idempotency key: the client's key within its tenant (``:`` and ``%`` in the
    tenant are escaped, so no two (tenant, key) pairs give the same result)."""
    if key is None:
        return None
    tenant = tenant_id.replace("%", "%25").replace(":", "%3A")
    return f"{tenant}:{key}"


def _etag(version: int) -> str:
    return f'"{version}"'


# ---------------------------------------------------------------------------------------------
# Appends


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
        status = str(_status_for(e, request))
        raise
    finally:
        ctx.metrics.append_seconds.labels(command.name).observe(time.perf_counter() - started)
        ctx.metrics.appends.labels(command.name, status).inc()
    if isinstance(command, CreateSession):
        ctx.remember(result.session_id, principal.tenant_id)
    if ctx.nudge is not None and not result.replayed:
        ctx.nudge.set()
    body = AppendOut(session_id=result.session_id, version=result.version, position=result.position)
    headers = {"ETag": _etag(result.version)}
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
        **_responses(400, 401, 403, 409, 413, 422, 503),
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
        responses={**_APPENDED, **_responses(*_APPEND)},
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


# ---------------------------------------------------------------------------------------------
# Reads from the views


@router.get(
    "/sessions/{session_id}",
    response_model=SessionViewOut,
    responses={
        200: {"headers": {"ETag": {"schema": {"type": "string"}}}},
        **_responses(*_SESSION_READ),
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
    response.headers["ETag"] = _etag(view.state.version)
    out = SessionOut.model_validate(view.state, from_attributes=True)
    return SessionViewOut(**dict(out), position=view.last_position)


StatusFilter = Literal[
    "active", "interrupted", "ended", "completed", "failed", "expired", "abandoned"
]
assert set(STATUS_CHOICES) == set(get_args(StatusFilter))  # noqa: S101 - import-time contract


@router.get(
    "/sessions", response_model=SessionPageOut, responses=_responses(*_READ), tags=["sessions"]
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
    responses=_responses(*_SESSION_READ),
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


@router.get(
    "/sessions/{session_id}/metrics",
    response_model=SessionMetrics,
    responses=_responses(*_SESSION_READ),
    tags=["metrics"],
)
def session_metrics(
    ctx: Ctx, principal: Reader, session_id: SessionIdPath, min_position: MinPosition = None
) -> SessionMetrics:
    """Turn metrics of one session."""
    ctx.wait(min_position, "metrics")
    return ctx.queries.session_metrics(session_id, tenant_id=principal.tenant_id)


_DATE: dict[str, Any] = {"format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}


@router.get(
    "/metrics/agents/{agent_id}",
    response_model=AgentMetrics,
    responses=_responses(*_READ),
    tags=["metrics"],
)
def agent_metrics(
    *,
    ctx: Ctx,
    principal: Reader,
    agent_id: Annotated[str, Path(min_length=1, max_length=200)],
    from_: Annotated[
        str | None,
        Query(alias="from", description="First UTC day", json_schema_extra=_DATE),
    ] = None,
    to: Annotated[
        str | None, Query(description="Last UTC day (included)", json_schema_extra=_DATE)
    ] = None,
    min_position: MinPosition = None,
) -> AgentMetrics:
    """An agent's metrics over a range of UTC days, within the key's tenant."""
    from_day, to_day = _day("from", from_), _day("to", to)
    if from_day is not None and to_day is not None and from_day > to_day:
        raise InvalidInput([{"field": "from", "message": "must not be after to"}])
    ctx.wait(min_position, "metrics")
    return ctx.queries.agent_metrics(
        agent_id, tenant_id=principal.tenant_id, from_day=from_day, to_day=to_day
    )


def _day(name: str, value: str | None) -> date | None:
    """A ``YYYY-MM-DD`` query parameter (not a number of seconds, as pydantic would allow)."""
    if value is None:
        return None
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput([{"field": name, "message": "not a date (YYYY-MM-DD)"}]) from None


# ---------------------------------------------------------------------------------------------
# Audit: reads from the log


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
    responses=_responses(*_SESSION_READ),
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
    responses=_responses(*_SESSION_READ),
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


# ---------------------------------------------------------------------------------------------
# Operations


def _projection_out(status: ProjectionStatus) -> ProjectionOut:
    return ProjectionOut(
        name=status.name,
        generation=status.generation,
        position=status.cursor.position,
        head=status.head.position,
        lag_events=status.lag_events,
        building=status.building,
        feed=status.feed,
    )


@router.get(
    "/projections",
    response_model=list[ProjectionOut],
    responses=_responses(*_READ),
    tags=["operations"],
)
def projections_status(ctx: Ctx, _principal: Reader) -> list[ProjectionOut]:
    """Each view's generation, position, the log head and the lag."""
    return [_projection_out(s) for s in ctx.runner().status()]


@router.post(
    "/projections/{name}/rebuild",
    response_model=RebuildOut,
    responses=_responses(401, 403, 404, 409, 422, 503),
    tags=["operations"],
)
def rebuild_projection(
    ctx: Ctx, _principal: Operator, name: Annotated[str, Path(min_length=1, max_length=100)]
) -> RebuildOut:
    """Rebuild one view from position 0 into fresh tables, then switch over (admin only).

    Queries keep answering from the current tables until the switch."""
    chosen = select(all_projections(), [name])
    if not ctx.rebuilding.acquire(blocking=False):
        raise HTTPProblem(
            "rebuild-in-progress",
            "a rebuild is already running in this process; try again when it has finished",
            context={"projection": name},
        )
    try:
        applied = rebuild(ctx.log, ctx.views, chosen)
    finally:
        ctx.rebuilding.release()
    return RebuildOut(
        projection=name, generation=ctx.views.active_generation(name), events_read=applied
    )


ops = APIRouter(tags=["operations"])


@ops.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """The process is up (no dependencies checked)."""
    return HealthOut(status="ok")


@ops.get("/readyz", response_model=HealthOut, responses=_responses(503))
def readyz(ctx: Ctx) -> HealthOut:
    """Ready: the database answers and no view is stalled (lagging without moving)."""
    statuses = ctx.runner().status()  # reads the log head: StorageError → 503
    now = time.monotonic()
    stalled = []
    with ctx.lock:
        for s in statuses:
            seen = ctx.stalls.get(s.name)
            if s.lag_events == 0:
                ctx.stalls.pop(s.name, None)
            elif seen is None or seen[0] != s.cursor.position:
                ctx.stalls[s.name] = (s.cursor.position, now)  # behind: the clock starts now
            elif now - seen[1] >= ctx.stall_seconds:
                stalled.append(s.name)
    if stalled:
        raise HTTPProblem(
            "not-ready",
            f"views not moving although behind the log: {', '.join(stalled)}; is "
            "`sessionstore projections run` running?",
            context={"stalled": stalled},
        )
    return HealthOut(status="ready", checks={"database": "ok", **{s.name: "ok" for s in statuses}})


@ops.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def prometheus_metrics(ctx: Ctx) -> Response:
    """Prometheus metrics: appends (rate, latency, conflicts), HTTP requests, projection lag."""
    try:
        statuses = ctx.runner().status()
    except (StorageError, CodecError):
        logger.warning("projection status unavailable for /metrics", exc_info=True)
    else:
        for s in statuses:
            ctx.metrics.lag.labels(s.name).set(s.lag_events)
            ctx.metrics.position.labels(s.name).set(s.cursor.position)
        if statuses:
            ctx.metrics.head.set(statuses[0].head.position)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------------------------------
# Error handling


def _status_for(error: SessionStoreError, request: Request) -> int:
    if isinstance(error, ConcurrencyConflict) and not getattr(request.state, "precondition", False):
        return 409  # contention without If-Match: not a failed precondition
    return status_of(error.code)


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SessionStoreError)  # noqa: S101 - registered for this type only
    if isinstance(error, StorageError):
        logger.warning("storage error on %s: %s", request.url.path, error.message)
    return error_response(error, instance=request.url.path, status=_status_for(error, request))


async def _http_problem(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPProblem)  # noqa: S101 - registered for this type only
    return problem_response(
        error.code,
        error.detail,
        context=error.context,
        instance=request.url.path,
        headers=error.headers,
    )


_CODE_OF_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "body-too-large",
    415: "unsupported-media-type",
}


async def _starlette_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)  # noqa: S101 - registered for this type
    code = _CODE_OF_STATUS.get(error.status_code, "bad-request")
    detail = error.detail if isinstance(error.detail, str) else code.replace("-", " ")
    if error.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(
        code,
        detail,
        status=error.status_code,
        instance=request.url.path,
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (starlette names only the first route's)."""
    methods: set[str] = set()
    path = request.url.path
    for route in (*request.app.routes, *router.routes, *ops.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)  # noqa: S101 - registered for this type
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
        for e in error.errors()
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem_response(
        "invalid-input",
        f"invalid input: {summary}",
        context={"errors": errors},
        instance=request.url.path,
    )


async def _codec_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("unreadable stored event on %s", request.url.path, exc_info=error)
    return problem_response(
        "unreadable-event",
        "a stored event of this session could not be read; an operator has to look at it",
        instance=request.url.path,
    )


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("unhandled error on %s", request.url.path, exc_info=error)
    return problem_response(
        "internal-error", "the server failed unexpectedly", instance=request.url.path
    )


# ---------------------------------------------------------------------------------------------
# Middleware


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, before anything parses them.

    The body is read (at most ``limit`` bytes of it) and replayed to the app, so a body without
    a Content-Length (chunked) is bounded too."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send, bad=not length.isdigit())
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send, bad=False)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, *, bad: bool) -> None:
        if bad:
            response = problem_response(
                "bad-request", "Content-Length is not a number", instance=scope.get("path")
            )
        else:
            response = problem_response(
                "body-too-large",
                f"the request body exceeds the limit of {self.limit} bytes",
                context={"limit": self.limit},
                instance=scope.get("path"),
            )
        await response(scope, receive, send)


def _count_requests(
    metrics: Metrics,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        return response

    return middleware


# ---------------------------------------------------------------------------------------------
# The app


def key_store(settings: Settings, log: EventLog) -> KeyStore:
    """API keys in the store's database (in memory for ``memory://``)."""
    if settings.backend == "memory":
        return KeyStore(None)
    return KeyStore(cast("SQLRunner", log))


def create_app(
    settings: Settings | None = None,
    *,
    store: SessionStore | None = None,
    views: ViewStore | None = None,
    queries: SessionQueries | None = None,
    keys: KeyStore | None = None,
    project: bool | None = None,
    stall_seconds: float = STALL_SECONDS,
) -> FastAPI:
    """The API over the configured backend. What is not given is built from ``settings`` and
    closed when the app shuts down. ``project`` runs a projector thread in the app (default:
    only on ``memory://``, where nothing else can reach the views; elsewhere run
    ``sessionstore projections run`` next to the service)."""
    settings = settings or load_settings()
    owned: list[Callable[[], None]] = []
    if store is None:
        # Room for the tenant prefix (escaped, up to 3x its 200 characters) on top of the
        # client's own key of up to 200 characters.
        limits = replace(settings.limits, max_idempotency_key_length=IDEMPOTENCY_KEY_ROOM)
        store = SessionStore(open_log(settings), limits=limits, cache_size=settings.cache_size)
        owned.append(store.close)
    if views is None:
        views = open_views(settings)
        owned.append(views.close)
        if settings.backend == "memory":  # no migration made its views: make them now
            for projection in all_projections():
                views.ensure(projection)
    if queries is None:
        queries = open_queries(settings, views, store.log)
        owned.append(queries.close)
    ctx = Context(
        settings=settings,
        store=store,
        views=views,
        queries=queries,
        keys=keys if keys is not None else key_store(settings, store.log),
        metrics=Metrics(),
        owned=owned,
        project=settings.backend == "memory" if project is None else project,
        stall_seconds=stall_seconds,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        thread = _start_projector(ctx) if ctx.project else None
        try:
            yield
        finally:
            ctx.stop.set()
            if ctx.nudge is not None:
                ctx.nudge.set()
            if thread is not None:
                thread.join(timeout=10)
            for close in reversed(ctx.owned):
                close()

    app = FastAPI(
        title=API_TITLE,
        version="1",
        description="Event-sourced session store for conversational AI agents.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.include_router(router)
    app.include_router(ops)
    app.add_exception_handler(SessionStoreError, _domain_error)
    app.add_exception_handler(HTTPProblem, _http_problem)
    app.add_exception_handler(StarletteHTTPException, _starlette_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CodecError, _codec_error)
    app.add_exception_handler(Exception, _internal_error)
    app.middleware("http")(_count_requests(ctx.metrics))
    app.add_middleware(BodyLimit, limit=settings.http_max_body_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_media_types(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are application/problem+json, not application/json; an optional query or
    header parameter is a string that may be left out, not one that may be ``null``."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                _drop_null(parameter.get("schema", {}))
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if status.isdigit() and int(status) >= 400 and content:
                    json_schema = content.pop("application/json", None)
                    if json_schema is not None:
                        content[MEDIA_TYPE] = json_schema
    return schema


def _drop_null(schema: dict[str, Any]) -> None:
    branches = schema.get("anyOf")
    if not branches:
        return
    kept = [b for b in branches if b.get("type") != "null"]
    if len(kept) == 1 and len(kept) < len(branches):
        del schema["anyOf"]
        schema.update({**kept[0], **schema})


def _start_projector(ctx: Context) -> threading.Thread:
    nudge = _Nudge(ctx.stop)
    ctx.nudge = nudge
    runner = ctx.runner()

    def run() -> None:
        while not ctx.stop.is_set():
            try:
                runner.run(ctx.stop, nudge, poll_interval=PROJECTOR_POLL_SECONDS)
            except ProjectionFedFromKafka as e:
                logger.error("embedded projector off: %s (serve with --no-projector)", e.message)
                return
            except (StorageError, CodecError):
                logger.exception("embedded projector failed; retrying")
                ctx.stop.wait(PROJECTOR_POLL_SECONDS)

    thread = threading.Thread(target=run, name="sessionstore-projector", daemon=True)
    thread.start()
    return thread
