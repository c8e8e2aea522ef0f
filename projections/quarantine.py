"""Retrying quarantined events: ``sessionstore projections quarantine retry``.

After the cause of a quarantine is fixed (a projection's bug, by deploying new code; a value
the database refused, by a change of the view's tables and a rebuild; a row the code could not
decode, by an upcaster), the quarantined events are folded again, session by session, in log
order, into the current view rows. Each commit writes the rows, deletes the released quarantine
rows and re-asserts the projection's tracking row (cursor unchanged, ``seq`` + 1): a runner
that loaded rows before it then fails its compare-and-set and reads them again (decisions
§22). All of it runs under ``feed_lock``, which Kafka-fed workers hold while they apply.

A session stops at the first event that fails again: it stays quarantined with its new error,
and the session's later events stay held behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from sessionstore.domain.errors import ProjectionConflict
from sessionstore.domain.ports import EventLog
from sessionstore.projections.base import Projection, Quarantined, ViewStore
from sessionstore.projections.containment import (
    Containment,
    Item,
    Prepared,
    event_id_of,
    read_items,
)

MAX_CONFLICTS = 50
"""Re-reads of one session after a concurrent commit before giving up on it for this run."""


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What a retry did to one projection's active generation."""

    projection: str
    generation: int
    released: int
    """Quarantined events now applied (and no longer quarantined)."""
    remaining: int
    """Events still quarantined (for the selected session, if one was given)."""
    failing: list[Quarantined] = field(default_factory=list)
    """The events that failed again, each holding its session (with the new error)."""


def retry(
    log: EventLog,
    store: ViewStore,
    projections: Sequence[Projection],
    *,
    session_id: UUID | None = None,
) -> list[RetryResult]:
    """Fold the quarantined events of ``projections`` (of one session, if given) again; see the
    module docstring. Returns one result per projection, in the order given."""
    results = []
    with store.feed_lock():
        for projection in projections:
            generation = store.active_generation(projection.name)
            sessions = dict.fromkeys(
                q.session_id for q in _rows(store, projection.name, generation, session_id)
            )
            released = sum(
                _retry_session(log, store, projection, generation, sid) for sid in sessions
            )
            left = _rows(store, projection.name, generation, session_id)
            results.append(
                RetryResult(
                    projection=projection.name,
                    generation=generation,
                    released=released,
                    remaining=len(left),
                    failing=[q for q in left if q.held_behind is None],
                )
            )
    return results


def _rows(
    store: ViewStore, name: str, generation: int, session_id: UUID | None
) -> list[Quarantined]:
    return [q for q in store.quarantined(name, session_id) if q.generation == generation]


def _retry_session(
    log: EventLog, store: ViewStore, projection: Projection, generation: int, session_id: UUID
) -> int:
    """Release what can be released of one session; returns how many events were."""
    released = 0
    for _ in range(MAX_CONFLICTS):
        tracking = store.tracking_of(projection.name, generation)
        rows = _rows(store, projection.name, generation, session_id)
        if not rows:
            return released
        by_id = {q.event_id: q for q in rows}
        first, last = min(q.version for q in rows), max(q.version for q in rows)
        items: list[Item] = [
            item
            for item in read_items(log, session_id, first - 1, last)
            if event_id_of(item) in by_id
        ]
        containment = Containment(store, projection, generation, held={}, report=False)

        def commit(prepared: Prepared, by_id: dict[UUID, Quarantined] = by_id) -> None:
            nonlocal tracking, released
            still = {q.event_id for q in prepared.quarantine}
            release = [by_id[event_id_of(i)] for i in prepared.items if event_id_of(i) not in still]
            writes = [] if prepared.batch is None else [(projection, generation, prepared.batch)]
            store.commit(
                writes,
                [(tracking, tracking.cursor)],  # re-asserted: seq + 1, cursor unchanged
                quarantined=prepared.quarantine,
                released=release,
            )
            tracking = tracking.moved(tracking.cursor)
            released += len(release)

        try:
            containment.apply_alone(items, commit)
        except ProjectionConflict:
            continue  # a runner (or another retry) committed meanwhile: read everything again
        return released
    return released
