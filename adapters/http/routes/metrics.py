"""Turn metrics from the metrics view: one session's, and an agent's over a range of days."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from sessionstore.adapters.http.deps import Ctx, MinPosition, Reader, SessionIdPath
from sessionstore.adapters.http.errors import READ, SESSION_READ, problem_responses
from sessionstore.domain.errors import InvalidInput
from sessionstore.projections.queries import AgentMetrics, SessionMetrics

router = APIRouter(prefix="/v1")


@router.get(
    "/sessions/{session_id}/metrics",
    response_model=SessionMetrics,
    responses=problem_responses(*SESSION_READ),
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
    responses=problem_responses(*READ),
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
