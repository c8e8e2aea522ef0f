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
from sessionstore.projections.supervision import cause

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

    Views that hold quarantined events, or an embedded projector retrying a failing database,
    make it ``degraded``, still 200: the API serves, and restarting or removing the process
    would not help (docs/http.md)."""
    projector = _projector_check(ctx)
    try:
        statuses = ctx.runner().status()  # reads the log head
    except StorageError as e:
        checks = {"database": f"failing: {cause(e)}"}
        if ctx.projector is not None:
            checks["projector"] = ctx.projector.state.describe()
        raise HTTPProblem(
            "not-ready", f"the database fails: {cause(e)}", context={"checks": checks}
        ) from None
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
        context: dict[str, object] = {"stalled": stalled}
        if projector:
            context["projector"] = projector
        raise HTTPProblem(
            "not-ready",
            f"views not moving although behind the log: {', '.join(stalled)}; is "
            "`sessionstore projections run` running?",
            context=context,
        )
    held = [s for s in statuses if s.quarantined]
    checks = {"database": "ok", **{s.name: _check(s) for s in statuses}}
    reasons = []
    if projector:
        checks["projector"] = projector
        reasons.append(
            f"the embedded projector is {projector}; the views may lag until it recovers"
        )
    if held:
        listed = ", ".join(f"{s.name} {s.quarantined}" for s in held)
        reasons.append(
            f"views hold quarantined events (their sessions are held there, every other "
            f"session is served): {listed}; inspect with `sessionstore projections quarantine "
            "list`, apply after a fix with `sessionstore projections quarantine retry`"
        )
    if reasons:
        return HealthOut(status="degraded", checks=checks, reason="; ".join(reasons))
    return HealthOut(status="ready", checks=checks)


def _projector_check(ctx: Ctx) -> str | None:
    """The embedded projector's state when it is not running normally (else None: a healthy
    answer stays as it was without one)."""
    if ctx.projector is None or ctx.projector.state.state in ("starting", "running"):
        return None
    return ctx.projector.state.describe()


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
    quarantined events, and the embedded projector's state and retries."""
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
    if ctx.projector is not None:
        process = "projector"
        up = ctx.projector.state.state in ("starting", "running")
        ctx.metrics.process_up.labels(process).set(1 if up else 0)
        with ctx.lock:
            new, ctx.retries_counted = (
                ctx.projector.retries - ctx.retries_counted,
                ctx.projector.retries,
            )
        ctx.metrics.process_retries.labels(process).inc(new)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
