"""Operations on the views: their status (position, lag) and a rebuild (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from sessionstore.adapters.http.deps import Ctx, Operator, Reader
from sessionstore.adapters.http.errors import READ, HTTPProblem, problem_responses
from sessionstore.adapters.http.schemas import ProjectionOut, RebuildOut
from sessionstore.projections import all_projections
from sessionstore.projections.base import ProjectionStatus
from sessionstore.projections.runner import rebuild, select

router = APIRouter(prefix="/v1")


def _projection_out(status: ProjectionStatus) -> ProjectionOut:
    return ProjectionOut(
        name=status.name,
        generation=status.generation,
        position=status.cursor.position,
        head=status.head.position,
        lag_events=status.lag_events,
        building=status.building,
        feed=status.feed,
        quarantined=status.quarantined,
    )


@router.get(
    "/projections",
    response_model=list[ProjectionOut],
    responses=problem_responses(*READ),
    tags=["operations"],
)
def projections_status(ctx: Ctx, _principal: Reader) -> list[ProjectionOut]:
    """Each view's generation, position, the log head and the lag."""
    return [_projection_out(s) for s in ctx.runner().status()]


@router.post(
    "/projections/{name}/rebuild",
    response_model=RebuildOut,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
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
