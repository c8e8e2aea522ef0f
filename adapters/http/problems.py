"""Errors as ``application/problem+json`` (RFC 9457): the code→status table and the helpers.

Every error response has a stable ``type`` (``urn:sessionstore:problem:<code>``, where ``code`` is
the domain error's own stable code, also sent as the ``code`` member), a ``title`` for the kind
of problem, a human ``detail`` and a ``context`` object with what a client needs to react
(session id, current status or version, the invalid fields). The table below is the one place
that decides which HTTP status each code gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python
from starlette.responses import JSONResponse

from sessionstore.domain.errors import SessionStoreError

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:sessionstore:problem:"

STATUS_OF: Mapping[str, int] = {
    # Domain errors (domain.errors), by their stable code.
    "session-not-found": 404,
    "session-exists": 409,
    "invalid-transition": 409,
    "transcript-violation": 409,
    "version-conflict": 412,
    "idempotency-key-reused": 422,
    "invalid-input": 422,
    "payload-too-large": 422,
    "storage-error": 503,
    "storage-rejected": 422,  # the same value would be refused again: not worth a retry
    "schema-not-ready": 503,
    "database-misconfigured": 503,
    "stream-version-taken": 409,
    "projection-conflict": 409,
    "unknown-projection": 404,
    "projection-timeout": 503,
    "projection-outdated": 503,
    "version-beyond-stream": 404,
    "before-creation": 404,
    "import-rejected": 422,
    # Problems of the HTTP layer itself.
    "bad-request": 400,
    "invalid-precondition": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not-found": 404,
    "method-not-allowed": 405,
    "not-acceptable": 406,
    "rebuild-in-progress": 409,
    "not-ready": 503,
    "body-too-large": 413,
    "unsupported-media-type": 415,
    "unreadable-event": 500,
    "internal-error": 500,
}

TITLES: Mapping[str, str] = {
    "session-not-found": "Session not found",
    "session-exists": "Session already exists",
    "invalid-transition": "Invalid state transition",
    "transcript-violation": "Transcript rule violated",
    "version-conflict": "Version conflict",
    "idempotency-key-reused": "Idempotency key reused for a different request",
    "invalid-input": "Invalid input",
    "payload-too-large": "Field too large",
    "storage-error": "Storage unavailable",
    "storage-rejected": "Value refused by the database",
    "schema-not-ready": "Database schema not ready",
    "database-misconfigured": "Database refuses this configuration",
    "stream-version-taken": "Version already taken",
    "projection-conflict": "Projection advanced concurrently",
    "unknown-projection": "Unknown projection",
    "projection-timeout": "View not caught up in time",
    "projection-outdated": "Projection outdated",
    "version-beyond-stream": "Version beyond the session's stream",
    "before-creation": "Time before the session's creation",
    "import-rejected": "Import rejected",
    "bad-request": "Bad request",
    "invalid-precondition": "Invalid If-Match header",
    "unauthorized": "Authentication required",
    "forbidden": "Not allowed for this key's role",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "not-acceptable": "Not acceptable",
    "rebuild-in-progress": "Rebuild already in progress",
    "not-ready": "Not ready",
    "body-too-large": "Request body too large",
    "unsupported-media-type": "Unsupported media type",
    "unreadable-event": "Stored event unreadable",
    "internal-error": "Internal server error",
}

RETRY_AFTER_SECONDS = 1
"""What ``Retry-After`` says on a 503: the service side is behind or away, not the request."""


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Stable URI of the problem type: urn:sessionstore:problem:<code>")
    title: str = Field(description="Short summary of the problem type")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What went wrong in this occurrence, for humans")
    instance: str | None = Field(default=None, description="The request path")
    code: str = Field(description="The stable machine-readable code (the type's last part)")
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="Context of the error: session id, current status or version, fields",
    )


def status_of(code: str) -> int:
    return STATUS_OF.get(code, 500)


def problem_response(
    code: str,
    detail: str,
    *,
    status: int | None = None,
    context: Mapping[str, Any] | None = None,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response for ``code`` (status from the table unless given)."""
    status = status_of(code) if status is None else status
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": TITLES.get(code, code.replace("-", " ").capitalize()),
        "status": status,
        "detail": " ".join(detail.split()),
        "code": code,
        "context": to_jsonable_python(dict(context or {}), fallback=str),
    }
    if instance is not None:
        body["instance"] = instance
    out = dict(headers or {})
    if status == 503:
        out.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse(body, status_code=status, headers=out, media_type=MEDIA_TYPE)


def error_response(
    error: SessionStoreError,
    *,
    instance: str | None = None,
    status: int | None = None,
    context: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The problem response of a domain error (``context`` replaces the error's own)."""
    return problem_response(
        error.code,
        error.message,
        status=status,
        context=error.context if context is None else context,
        instance=instance,
        headers=headers,
    )
