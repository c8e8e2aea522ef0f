"""In-memory view store: the unit-test backend for projections. Same contract as the SQL ones."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from sessionstore.domain.errors import ProjectionConflict, StorageError
from sessionstore.domain.ports import LOG_START, LogCursor
from sessionstore.projections.base import (
    Applied,
    Batch,
    Key,
    Projection,
    Quarantined,
    Row,
    Table,
    Tracking,
    fingerprint,
)


class MemoryViewStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        self._latest: dict[str, int] = {}
        self._tracking: dict[tuple[str, int], Tracking] = {}
        self._rows: dict[tuple[str, int, str], dict[Key, Row]] = {}
        self._fingerprints: dict[str, str] = {}
        self._applied: dict[tuple[str, int], dict[UUID, int]] = {}
        self._quarantine: dict[tuple[str, int], dict[UUID, Quarantined]] = {}
        self._feed_lock = threading.Lock()

    def fingerprint(self, name: str) -> str:
        with self._lock:
            return self._fingerprints[name]

    # -- generations ----------------------------------------------------------------------------

    def ensure(self, projection: Projection) -> int:
        with self._lock:
            if projection.name not in self._active:
                generation = self._new_generation(projection)
                self._active[projection.name] = generation
                self._fingerprints[projection.name] = fingerprint(projection.tables)
            return self._active[projection.name]

    def active_generation(self, name: str) -> int:
        with self._lock:
            return self._active[name]

    def start_generation(self, projection: Projection) -> int:
        with self._lock:
            return self._new_generation(projection)

    def activate(self, projection: Projection, generation: int) -> None:
        with self._lock:
            old = self._active.get(projection.name)
            self._active[projection.name] = generation
            self._fingerprints[projection.name] = fingerprint(projection.tables)
            if old is not None and old != generation:
                for table in projection.tables:
                    self._rows.pop((projection.name, old, table.name), None)
                self._applied.pop((projection.name, old), None)
                self._quarantine.pop((projection.name, old), None)

    def _new_generation(self, projection: Projection) -> int:
        generation = self._latest.get(projection.name, 0) + 1
        self._latest[projection.name] = generation
        self._tracking[(projection.name, generation)] = Tracking(
            projection.name, generation, LOG_START
        )
        self._quarantine.pop((projection.name, generation), None)
        for table in projection.tables:
            self._rows[(projection.name, generation, table.name)] = {}
        return generation

    # -- rows and tracking ------------------------------------------------------------------------

    def positions(self, names: Sequence[str]) -> dict[str, Tracking]:
        with self._lock:
            return {n: self._tracking_of(n, self._active[n]) for n in names}

    def tracking(self, name: str, generation: int) -> LogCursor:
        return self.tracking_of(name, generation).cursor

    def tracking_of(self, name: str, generation: int) -> Tracking:
        with self._lock:
            return self._tracking_of(name, generation)

    def _tracking_of(self, name: str, generation: int) -> Tracking:
        found = self._tracking.get((name, generation), Tracking(name, generation, LOG_START))
        return replace(found, holds=bool(self._quarantine.get((name, generation))))

    def load(
        self, projection: str, generation: int, table: Table, keys: Sequence[Key]
    ) -> list[Row]:
        with self._lock:
            rows = self._table(projection, generation, table.name)
            return [copy.deepcopy(rows[k]) for k in keys if k in rows]

    def _table(self, projection: str, generation: int, table: str) -> dict[Key, Row]:
        """A generation's table; StorageError if it was dropped (as a SQL store would fail)."""
        try:
            return self._rows[(projection, generation, table)]
        except KeyError:
            msg = f"view table {table} of {projection} generation {generation} does not exist"
            raise StorageError(msg) from None

    def rows(self, projection: str, table: str, generation: int | None = None) -> list[Row]:
        """Every row of a table (the active generation unless given), in key order."""
        with self._lock:
            gen = self._active[projection] if generation is None else generation
            stored = self._table(projection, gen, table)
            return [copy.deepcopy(stored[k]) for k in sorted(stored, key=_sortable)]

    def commit(
        self,
        writes: Sequence[tuple[Projection, int, Batch]],
        moves: Sequence[tuple[Tracking, LogCursor]],
        applied: Sequence[Applied] = (),
        quarantined: Sequence[Quarantined] = (),
        released: Sequence[Quarantined] = (),
    ) -> None:
        with self._lock:
            for old, _new in moves:
                if self._tracking.get((old.projection, old.generation)) != old:
                    raise ProjectionConflict(old.projection, old.generation)
            for q in released:
                if q.event_id not in self._quarantine.get((q.projection, q.generation), {}):
                    raise ProjectionConflict(q.projection, q.generation)
            # Every table is looked up before anything is written: all or nothing.
            targets = [
                (table, self._table(projection.name, generation, table.name), batch)
                for projection, generation, batch in writes
                for table in projection.tables
            ]
            for table, stored, batch in targets:
                changes = batch.changes[table.name]
                for row in changes.inserts:
                    key = table.key_of(row)
                    if key in stored:
                        msg = f"{table.name}: row {key} inserted twice"
                        raise ValueError(msg)
                    stored[key] = copy.deepcopy(row)
                for key, row in changes.upserts.items():
                    stored[key] = copy.deepcopy(row)
            for old, new in moves:
                self._tracking[(old.projection, old.generation)] = old.moved(new)
            for a in applied:
                self._applied.setdefault((a.projection, a.generation), {})[a.session_id] = a.version
            for q in released:
                self._quarantine[(q.projection, q.generation)].pop(q.event_id, None)
            now = datetime.now(UTC)
            for q in quarantined:
                held = self._quarantine.setdefault((q.projection, q.generation), {})
                first = held.get(q.event_id)
                held[q.event_id] = replace(
                    q, quarantined_at=now if first is None else first.quarantined_at
                )

    def held(
        self, generations: Mapping[str, int], session_ids: Sequence[UUID]
    ) -> dict[str, dict[UUID, UUID]]:
        wanted = set(session_ids)
        with self._lock:
            return {
                name: {
                    q.session_id: q.event_id
                    for q in self._quarantine.get((name, generation), {}).values()
                    if q.held_behind is None and q.session_id in wanted
                }
                for name, generation in generations.items()
            }

    def quarantined(
        self, projection: str | None = None, session_id: UUID | None = None
    ) -> list[Quarantined]:
        with self._lock:
            rows = [
                q
                for (name, _), held in self._quarantine.items()
                if projection is None or name == projection
                for q in held.values()
                if session_id is None or q.session_id == session_id
            ]
        return sorted(rows, key=lambda q: (q.projection, q.generation, q.tx, q.position))

    def quarantine_counts(self, names: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {n: len(self._quarantine.get((n, self._active[n]), {})) for n in names}

    def applied_versions(
        self, generations: Mapping[str, int], session_ids: Sequence[UUID]
    ) -> dict[str, dict[UUID, int]]:
        with self._lock:
            found: dict[str, dict[UUID, int]] = {}
            for name, generation in generations.items():
                known = self._applied.get((name, generation), {})
                found[name] = {sid: known[sid] for sid in session_ids if sid in known}
            return found

    def fed_from_kafka(self, name: str, generation: int) -> bool:
        with self._lock:
            return bool(self._applied.get((name, generation)))

    @contextmanager
    def feed_lock(self) -> Iterator[None]:
        with self._feed_lock:
            yield

    def close(self) -> None:
        """Nothing to release."""


def _sortable(key: Key) -> tuple[tuple[int, float, str], ...]:
    return tuple(
        (0, float(part), "") if isinstance(part, int | float) else (1, 0.0, str(part))
        for part in key
    )
