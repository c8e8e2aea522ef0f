"""What the routes depend on: the app's state (``Context``, as ``Ctx``), the caller's key and
role, the common path, header and query parameters, and the helpers for ETags and keys."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, cast
from uuid import UUID

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sessionstore.adapters.http.errors import HTTPProblem
from sessionstore.adapters.http.keys import KeyStore, Principal
from sessionstore.adapters.http.middleware import Metrics
from sessionstore.adapters.http.projector import Nudge
from sessionstore.adapters.settings import Settings
from sessionstore.domain.errors import InvalidInput, ProjectionTimeout, SessionNotFound
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.queries import SessionQueries
from sessionstore.projections.runner import ProjectionRunner
from sessionstore.projections.supervision import Supervisor

TENANT_CACHE_SIZE = 100_000
"""Session → tenant entries kept in memory (a session's tenant never changes)."""


# ---------------------------------------------------------------------------------------------
# The app's state


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
    nudge: Nudge | None = None
    projector: Supervisor | None = None
    """The embedded projector's supervisor (its state and retries), when it runs."""
    retries_counted: int = 0
    """The projector's retries already added to the Prometheus counter."""

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


# ---------------------------------------------------------------------------------------------
# Dependencies: the state, the caller's key and role, the shared parameters


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


def etag(version: int) -> str:
    return f'"{version}"'
