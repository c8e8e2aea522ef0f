"""The HTTP API: FastAPI routes over the SessionStore (appends) and SessionQueries (reads).

``create_app(settings)`` builds everything from settings (the store, the view store, the queries
and the API keys) unless the caller hands them in; the app's lifespan closes what it built.
Every route but the health checks, ``/metrics`` and the OpenAPI document needs a Bearer API key
(``adapters.http.keys``): its tenant scopes everything the request sees, and a session of another
tenant is "not found", never "forbidden", so a key cannot even learn that it exists. Errors are
``application/problem+json`` (``adapters.http.problems``). docs/http.md describes the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, cast

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sessionstore.adapters.bootstrap import open_log, open_queries, open_views
from sessionstore.adapters.http.deps import Context
from sessionstore.adapters.http.errors import add_exception_handlers
from sessionstore.adapters.http.keys import KeyStore
from sessionstore.adapters.http.middleware import BodyLimit, Metrics, count_requests
from sessionstore.adapters.http.problems import MEDIA_TYPE
from sessionstore.adapters.http.projector import projector_supervisor, start_projector
from sessionstore.adapters.http.routes import ROUTERS
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.sql.log import SQLRunner
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.queries import SessionQueries

API_TITLE = "sessionstore"
STALL_SECONDS = 60.0
"""A view with lag whose position has not moved for this long makes /readyz fail."""
IDEMPOTENCY_KEY_ROOM = 200 + 1 + 3 * 200


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
    if ctx.project:
        ctx.projector = projector_supervisor(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        thread = start_projector(ctx) if ctx.project else None
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
    for router in ROUTERS:
        app.include_router(router)
    add_exception_handlers(app, ROUTERS)
    app.middleware("http")(count_requests(ctx.metrics))
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
