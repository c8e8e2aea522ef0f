"""The API's routes, one module per resource.

``ROUTERS`` is the order the app includes them in, which is the order of the paths in the
OpenAPI document: keep it (and the order of the routes within each module)."""

from __future__ import annotations

from fastapi import APIRouter

from sessionstore.adapters.http.routes import (
    appends,
    health,
    history,
    metrics,
    projections,
    sessions,
)

ROUTERS: tuple[APIRouter, ...] = (
    appends.router,
    sessions.router,
    metrics.router,
    history.router,
    projections.router,
    health.router,
)
