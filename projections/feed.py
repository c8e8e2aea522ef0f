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

from sessionstore.domain.errors import (
    ProjectionOutdated,
    SchemaNotReady,
    StorageError,
    StorageRejected,
)
from sessionstore.domain.ports import EventLog, RecordedEvent
from sessionstore.projections.base import (
    Applied,
    Projection,
    Tracking,
    ViewStore,
    fingerprint,
)
from sessionstore.projections.containment import (
    Containment,
    Item,
    Prepared,
    Unattributable,
    event_id_of,
    extra,
    read_items,
    session_of,
    version_of,
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
    quarantined: int = 0
    """Events quarantined in at least one projection (they, or an earlier event of their
    session, could not be applied there); they count as applied for deduplication."""


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
                    generations = {name: t.generation for name, t in positions.items()}
                    self.check_tables(generations)
                    return self._apply(events, positions)
                except (StorageError, SchemaNotReady):
                    # A rebuild switched generations (and dropped the tables) mid-cycle: start
                    # again on the new generation; anything else is a real failure.
                    now = self.store.positions([p.name for p in self.projections])
                    if attempt == MAX_SWITCH_RETRIES or all(
                        now[name].generation == g for name, g in generations.items()
                    ):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply(self, events: Sequence[RecordedEvent], positions: dict[str, Tracking]) -> FeedResult:
        session_ids = list(dict.fromkeys(e.event.session_id for e in events))
        gap_reads: dict[tuple[UUID, int, int], list[Item]] = {}
        new_ids: set[UUID] = set()
        healed_ids: set[UUID] = set()
        generations = {name: tracking.generation for name, tracking in positions.items()}
        applied = self.store.applied_versions(generations, session_ids)
        holding = {name: t.generation for name, t in positions.items() if t.holds}
        held = self.store.held(holding, session_ids) if holding else {}
        units: list[_FeedUnit] = []
        for projection in self.projections:
            tracking = positions[projection.name]
            generation = tracking.generation
            last = applied[projection.name]
            todo: list[Item] = []
            touched: set[UUID] = set()
            for recorded in events:
                sid, version = recorded.event.session_id, recorded.event.version
                known = last.get(sid)
                if recorded.cursor <= tracking.cursor or (known is not None and version <= known):
                    continue
                floor = known or 0
                if version > floor + 1:
                    for missing in self._read_gap(gap_reads, sid, floor, version - 1):
                        if missing.cursor > tracking.cursor:
                            todo.append(missing)
                            healed_ids.add(event_id_of(missing))
                todo.append(recorded)
                new_ids.add(recorded.event.event_id)
                last[sid] = version
                touched.add(sid)
            if not todo:
                continue
            containment = Containment(
                self.store, projection, generation, held.get(projection.name, {})
            )
            applied_rows = [Applied(projection.name, generation, sid, last[sid]) for sid in touched]
            units.append(_FeedUnit(containment, todo, applied_rows))
        quarantined = self._commit(units)
        return FeedResult(
            received=len(events),
            applied=len(new_ids),
            duplicates=len(events) - len(new_ids),
            healed=len(healed_ids),
            quarantined=len(quarantined),
        )

    def _commit(self, units: list[_FeedUnit]) -> set[UUID]:
        """Every projection's share in one transaction, or (after a refused value, or a failure
        that names no event) each on its own, split until the culprit is alone. A quarantined
        event counts as applied: ``projection_applied`` passes it, so a redelivery or a gap
        heal does not try it again (``quarantine retry`` does). Returns the ids quarantined."""
        quarantined: set[UUID] = set()
        ready: list[tuple[_FeedUnit, Prepared]] = []
        alone: list[_FeedUnit] = []
        for unit in units:
            try:
                ready.append((unit, unit.containment.prepare(unit.items)))
            except Unattributable:
                alone.append(unit)
        try:
            if ready:
                self.store.commit(
                    [
                        (u.projection, u.generation, p.batch)
                        for u, p in ready
                        if p.batch is not None
                    ],
                    [],
                    [row for u, _ in ready for row in u.applied],
                    **extra(row for _, p in ready for row in p.quarantine),
                )
        except StorageRejected:
            alone = units
        else:
            for unit, prepared in ready:
                unit.containment.accept(prepared)
                quarantined.update(row.event_id for row in prepared.quarantine)
        for unit in alone:

            def commit(prepared: Prepared, unit: _FeedUnit = unit) -> None:
                writes = (
                    []
                    if prepared.batch is None
                    else [(unit.projection, unit.generation, prepared.batch)]
                )
                self.store.commit(
                    writes, [], unit.applied_for(prepared.items), **extra(prepared.quarantine)
                )
                quarantined.update(row.event_id for row in prepared.quarantine)

            unit.containment.apply_alone(unit.items, commit)
        return quarantined

    def _read_gap(
        self,
        cache: dict[tuple[UUID, int, int], list[Item]],
        session_id: UUID,
        after: int,
        to: int,
    ) -> list[Item]:
        """A session's missing events from the log (a row that cannot be decoded in its place:
        the relay dead-letters such rows, so this is where a Kafka-fed view meets them)."""
        key = (session_id, after, to)
        if key not in cache:
            cache[key] = read_items(self.log, session_id, after, to)
        return cache[key]


class _FeedUnit:
    """One projection's share of a delivered batch."""

    def __init__(self, containment: Containment, items: list[Item], applied: list[Applied]):
        self.containment, self.items, self.applied = containment, items, applied

    @property
    def projection(self) -> Projection:
        return self.containment.projection

    @property
    def generation(self) -> int:
        return self.containment.generation

    def applied_for(self, items: Sequence[Item]) -> list[Applied]:
        """The applied versions once ``items`` (part of this share) are committed."""
        versions: dict[UUID, int] = {}
        for item in items:
            sid = session_of(item)
            versions[sid] = max(versions.get(sid, 0), version_of(item))
        return [Applied(self.projection.name, self.generation, s, v) for s, v in versions.items()]
