"""Projections: views built from the event log (see issue: projections)."""

from __future__ import annotations

from projections.base import Projection
from projections.cleanup import CleanupProjection
from projections.metrics import MetricsProjection
from projections.session_state import SessionStateProjection
from projections.transcript import TranscriptProjection


def all_projections() -> list[Projection]:
    """Fresh instances of every projection, in the order they are listed everywhere."""
    return [
        SessionStateProjection(),
        TranscriptProjection(),
        MetricsProjection(),
        CleanupProjection(),
    ]


__all__ = ["all_projections"]
