"""Projections: views built from the event log (see issue: projections)."""
