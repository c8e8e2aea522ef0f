"""The HTTP layer's own problems (``HTTPProblem``), the problem responses a route documents, and
the exception handlers that turn every error into ``application/problem+json``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from sessionstore.adapters.http.problems import (
    Problem,
    error_response,
    problem_response,
    status_of,
)
from sessionstore.domain.errors import ConcurrencyConflict, SessionStoreError, StorageError
from sessionstore.events.codec import CodecError

logger = logging.getLogger("sessionstore.http")


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


# ---------------------------------------------------------------------------------------------
# The problem responses a route documents in the OpenAPI


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
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


READ = (401, 403, 422, 503)
SESSION_READ = (*READ, 404)
APPEND = (400, 401, 403, 404, 409, 412, 413, 422, 503)


# ---------------------------------------------------------------------------------------------
# Error handling


def status_for(error: SessionStoreError, request: Request) -> int:
    if isinstance(error, ConcurrencyConflict) and not getattr(request.state, "precondition", False):
        return 409  # contention without If-Match: not a failed precondition
    return status_of(error.code)


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SessionStoreError)  # noqa: S101 - registered for this type only
    if isinstance(error, StorageError):
        logger.warning("storage error on %s: %s", request.url.path, error.message)
    return error_response(error, instance=request.url.path, status=status_for(error, request))


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


async def _starlette_error(
    request: Request, error: Exception, routers: Sequence[APIRouter]
) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)  # noqa: S101 - registered for this type
    code = _CODE_OF_STATUS.get(error.status_code, "bad-request")
    detail = error.detail if isinstance(error.detail, str) else code.replace("-", " ")
    if error.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request, routers))
    return problem_response(
        code,
        detail,
        status=error.status_code,
        instance=request.url.path,
        headers=headers,
    )


def _allowed_methods(request: Request, routers: Sequence[APIRouter]) -> list[str]:
    """Every method some route serves at this path (starlette names only the first route's)."""
    methods: set[str] = set()
    path = request.url.path
    for route in (*request.app.routes, *(r for router in routers for r in router.routes)):
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


def add_exception_handlers(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Every error becomes a problem. ``routers``: those the app includes, whose routes a 405's
    Allow header lists too (``app.routes`` holds an included router, not its routes)."""

    async def starlette_error(request: Request, error: Exception) -> JSONResponse:
        return await _starlette_error(request, error, routers)

    app.add_exception_handler(SessionStoreError, _domain_error)
    app.add_exception_handler(HTTPProblem, _http_problem)
    app.add_exception_handler(StarletteHTTPException, starlette_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CodecError, _codec_error)
    app.add_exception_handler(Exception, _internal_error)
