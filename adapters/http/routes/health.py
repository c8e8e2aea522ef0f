"""Health checks (liveness, readiness) and the Prometheus ``/metrics``: no API key, no prefix."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sessionstore.adapters.http.deps import Ctx
from sessionstore.adapters.http.errors import HTTPProblem, problem_responses
from sessionstore.adapters.http.schemas import HealthOut
from sessionstore.domain.errors import StorageError
from sessionstore.events.codec import CodecError
from sessionstore.projections.base import ProjectionStatus

logger = logging.getLogger("sessionstore.http")

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthOut, response_model_exclude_none=True)
def healthz() -> HealthOut:
    """The process is up (no dependencies checked)."""
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=HealthOut,
    response_model_exclude_none=True,
    responses=problem_responses(503),
)
def readyz(ctx: Ctx) -> HealthOut:
    """Ready: the database answers and no view is stalled (lagging without moving).

    Views that hold quarantined events make it ``degraded``, still 200: every other session is
    served, and restarting or removing the process would not release them (docs/http.md)."""
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
    held = [s for s in statuses if s.quarantined]
    checks = {"database": "ok", **{s.name: _check(s) for s in statuses}}
    if held:
        listed = ", ".join(f"{s.name} {s.quarantined}" for s in held)
        reason = (
            f"views hold quarantined events (their sessions are held there, every other "
            f"session is served): {listed}; inspect with `sessionstore projections quarantine "
            "list`, apply after a fix with `sessionstore projections quarantine retry`"
        )
        return HealthOut(status="degraded", checks=checks, reason=reason)
    return HealthOut(status="ready", checks=checks)


def _check(status: ProjectionStatus) -> str:
    if status.quarantined:
        return f"degraded: {status.quarantined} quarantined events"
    return "ok"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def prometheus_metrics(ctx: Ctx) -> Response:
    """Prometheus metrics: appends (rate, latency, conflicts), HTTP requests, projection lag and
    quarantined events."""
    try:
        statuses = ctx.runner().status()
    except (StorageError, CodecError):
        logger.warning("projection status unavailable for /metrics", exc_info=True)
    else:
        for s in statuses:
            ctx.metrics.lag.labels(s.name).set(s.lag_events)
            ctx.metrics.position.labels(s.name).set(s.cursor.position)
            ctx.metrics.quarantined.labels(s.name).set(s.quarantined)
        if statuses:
            ctx.metrics.head.set(statuses[0].head.position)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
