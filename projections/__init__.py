"""Projections: views built from the event log (see issue: projections)."""

from __future__ import annotations

from sessionstore.projections.base import Projection
from sessionstore.projections.cleanup import CleanupProjection
from sessionstore.projections.metrics import MetricsProjection
from sessionstore.projections.session_state import SessionStateProjection
from sessionstore.projections.transcript import TranscriptProjection


def all_projections() -> list[Projection]:
    """Fresh instances of every projection, in the order they are listed everywhere."""
    return [
        SessionStateProjection(),
        TranscriptProjection(),
        MetricsProjection(),
        CleanupProjection(),
    ]


__all__ = ["all_projections"]
