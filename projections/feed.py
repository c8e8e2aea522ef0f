"""Applying events that arrive from outside the log (Kafka) to the same views, exactly once.

A Kafka-fed worker receives events at least once and in per-session order (a session's events
share a partition), but not in global order, and possibly again after a relay or worker
restart. So instead of a global tracking cursor, each projection generation remembers the last
version it applied of every session (``projection_applied``, written in the same transaction as
the view rows). For each delivered event, per projection:

- at or below the generation's tracking cursor: applied already, from the log (a rebuild
  filled this generation up to there) -> skipped;
- version <= the session's applied version: a redelivery -> skipped;
- version == applied + 1: applied;
- version > applied + 1: earlier events are missing (a produce that failed and was retried
  after later ones were written): they are read from the log — the source of truth — and
  applied first, so a view never folds a session out of order.

Workers in one consumer group own different partitions, hence different sessions, but
per-agent rows are shared: each read-apply-write cycle runs under the view store's
``feed_lock``. The tracking cursor is left alone (it stays where the last log-fed rebuild put
it), and log-fed runners refuse to run on a generation that Kafka feeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from sessionstore.domain.errors import ProjectionOutdated, SchemaNotReady, StorageError
from sessionstore.domain.ports import EventLog, LogCursor, RecordedEvent
from sessionstore.projections.base import (
    Applied,
    Projection,
    ViewStore,
    fingerprint,
    fold,
)

MAX_SWITCH_RETRIES = 5


@dataclass(frozen=True, slots=True)
class FeedResult:
    received: int
    applied: int
    """Delivered events applied to at least one projection."""
    duplicates: int
    """Delivered events every projection had applied already (redeliveries)."""
    healed: int
    """Events read from the log to fill a gap in a session's delivered versions."""


class DeliveredFeed:
    """Folds delivered events into the views (see the module docstring)."""

    def __init__(self, log: EventLog, store: ViewStore, projections: Sequence[Projection]) -> None:
        self.log = log
        self.store = store
        self.projections = list(projections)
        self._checked: dict[str, int] = {}

    def check_tables(self, generations: dict[str, int]) -> None:
        for projection in self.projections:
            generation = generations[projection.name]
            if self._checked.get(projection.name) == generation:
                continue
            stored = self.store.fingerprint(projection.name)
            if stored and stored != fingerprint(projection.tables):
                raise ProjectionOutdated(projection.name)
            self._checked[projection.name] = generation

    def apply(self, events: Sequence[RecordedEvent]) -> FeedResult:
        """Apply a delivered batch (in delivery order) in one transaction per cycle."""
        if not events:
            return FeedResult(0, 0, 0, 0)
        with self.store.feed_lock():
            for attempt in range(MAX_SWITCH_RETRIES + 1):
                generations = {}
                try:
                    positions = self.store.positions([p.name for p in self.projections])
                    generations = {name: g for name, (g, _) in positions.items()}
                    self.check_tables(generations)
                    return self._apply(events, positions)
                except (StorageError, SchemaNotReady):
                    # A rebuild switched generations (and dropped the tables) mid-cycle: start
                    # again on the new generation; anything else is a real failure.
                    now = self.store.positions([p.name for p in self.projections])
                    if attempt == MAX_SWITCH_RETRIES or all(
                        now[name][0] == g for name, g in generations.items()
                    ):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply(
        self, events: Sequence[RecordedEvent], positions: dict[str, tuple[int, LogCursor]]
    ) -> FeedResult:
        session_ids = list(dict.fromkeys(e.event.session_id for e in events))
        gap_reads: dict[tuple[UUID, int, int], list[RecordedEvent]] = {}
        new_ids: set[UUID] = set()
        healed_ids: set[UUID] = set()
        writes = []
        applied_rows: list[Applied] = []
        generations = {name: generation for name, (generation, _) in positions.items()}
        applied = self.store.applied_versions(generations, session_ids)
        for projection in self.projections:
            generation, tracking = positions[projection.name]
            last = applied[projection.name]
            todo: list[RecordedEvent] = []
            touched: set[UUID] = set()
            for recorded in events:
                sid, version = recorded.event.session_id, recorded.event.version
                known = last.get(sid)
                if recorded.cursor <= tracking or (known is not None and version <= known):
                    continue
                floor = known or 0
                if version > floor + 1:
                    for missing in self._read_gap(gap_reads, sid, floor, version - 1):
                        if missing.cursor > tracking:
                            todo.append(missing)
                            healed_ids.add(missing.event.event_id)
                todo.append(recorded)
                new_ids.add(recorded.event.event_id)
                last[sid] = version
                touched.add(sid)
            if not todo:
                continue
            writes.append((projection, generation, fold(self.store, projection, generation, todo)))
            applied_rows.extend(
                Applied(projection.name, generation, sid, last[sid]) for sid in touched
            )
        if writes:
            self.store.commit(writes, [], applied_rows)
        return FeedResult(
            received=len(events),
            applied=len(new_ids),
            duplicates=len(events) - len(new_ids),
            healed=len(healed_ids),
        )

    def _read_gap(
        self,
        cache: dict[tuple[UUID, int, int], list[RecordedEvent]],
        session_id: UUID,
        after: int,
        to: int,
    ) -> list[RecordedEvent]:
        key = (session_id, after, to)
        if key not in cache:
            cache[key] = self.log.read_session(session_id, after_version=after, to_version=to)
        return cache[key]
