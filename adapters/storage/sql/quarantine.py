"""The quarantine of the SQL view stores: events a projection generation did not apply
(``projection_quarantine``, migration 0007), read and written beside the view rows.

A mixin of ``SQLViewStore`` (kept apart so that module stays readable): the dialect's
placeholder, connections and value conversions come from there. See docs/quarantine.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

from sessionstore.domain.errors import ProjectionConflict
from sessionstore.projections.base import ColumnType, Quarantined

_T = TypeVar("_T")

_COLUMNS = (
    "name, generation, event_id, session_id, position, tx, version, topic, error, held_behind, "
    "quarantined_at"
)


class _Cursor(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...

    def executemany(self, query: Any, params_seq: Any) -> Any: ...

    def fetchall(self) -> Any: ...


class SQLQuarantine:
    """``ViewStore.held``, ``quarantined``, ``quarantine_counts`` and the quarantine part of
    ``commit`` on SQL."""

    placeholder: ClassVar[str]

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _to_db(self, type_: ColumnType, value: Any) -> Any:
        raise NotImplementedError

    def _from_db(self, type_: ColumnType, value: Any) -> Any:
        raise NotImplementedError

    # -- reads ------------------------------------------------------------------------------------

    def held(
        self, generations: Mapping[str, int], session_ids: Sequence[UUID]
    ) -> dict[str, dict[UUID, UUID]]:
        found: dict[str, dict[UUID, UUID]] = {name: {} for name in generations}
        if not generations or not session_ids:
            return found
        p = self.placeholder
        which = " OR ".join(f"(name = {p} AND generation = {p})" for _ in generations)
        names = [value for item in generations.items() for value in item]
        for chunk in _chunks(list(dict.fromkeys(session_ids)), 500):
            marks = ", ".join(p for _ in chunk)
            with self._reading() as cur:
                # Only a held session's first quarantined event has no held_behind.
                cur.execute(
                    "SELECT name, session_id, event_id FROM projection_quarantine "
                    f"WHERE ({which}) AND session_id IN ({marks}) AND held_behind IS NULL",
                    [*names, *(self._to_db("uuid", sid) for sid in chunk)],
                )
                rows = cur.fetchall()
            for name, sid, event_id in rows:
                found[name][self._from_db("uuid", sid)] = self._from_db("uuid", event_id)
        return found

    def quarantined(
        self, projection: str | None = None, session_id: UUID | None = None
    ) -> list[Quarantined]:
        p = self.placeholder
        where, params = [], []
        if projection is not None:
            where.append(f"name = {p}")
            params.append(projection)
        if session_id is not None:
            where.append(f"session_id = {p}")
            params.append(self._to_db("uuid", session_id))
        query = f"SELECT {_COLUMNS} FROM projection_quarantine"
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._reading() as cur:
            cur.execute(query + " ORDER BY name, generation, tx, position", params)
            rows = cur.fetchall()
        return [self._listed(row) for row in rows]

    def _listed(self, row: Sequence[Any]) -> Quarantined:
        name, generation, event_id, sid, position, tx, version, topic, error, behind, at = row
        return Quarantined(
            projection=name,
            generation=int(generation),
            event_id=self._from_db("uuid", event_id),
            session_id=self._from_db("uuid", sid),
            position=int(position),
            tx=int(tx),
            version=int(version),
            topic=topic,
            error=error,
            held_behind=None if behind is None else self._from_db("uuid", behind),
            quarantined_at=self._from_db("timestamp", at),
        )

    def quarantine_counts(self, names: Sequence[str]) -> dict[str, int]:
        found = dict.fromkeys(names, 0)
        if not names:
            return found
        marks = ", ".join(self.placeholder for _ in names)
        with self._reading() as cur:
            cur.execute(
                "SELECT q.name, count(*) FROM projection_quarantine q JOIN projections p "
                "ON p.name = q.name AND p.active_generation = q.generation "
                f"WHERE q.name IN ({marks}) GROUP BY q.name",
                list(names),
            )
            rows = cur.fetchall()
        found.update({name: int(count) for name, count in rows})
        return found

    # -- writes, inside ``commit``'s transaction ---------------------------------------------

    def _release(self, cur: _Cursor, released: Sequence[Quarantined]) -> None:
        """Delete released rows; ProjectionConflict if one is gone (someone released it first)."""
        p = self.placeholder
        groups: dict[tuple[str, int], list[UUID]] = {}
        for q in released:
            groups.setdefault((q.projection, q.generation), []).append(q.event_id)
        for (name, generation), event_ids in groups.items():
            for chunk in _chunks(list(dict.fromkeys(event_ids)), 500):
                marks = ", ".join(p for _ in chunk)
                cur.execute(
                    f"DELETE FROM projection_quarantine WHERE name = {p} AND generation = {p} "
                    f"AND event_id IN ({marks}) RETURNING event_id",
                    [name, generation, *(self._to_db("uuid", e) for e in chunk)],
                )
                if len(cur.fetchall()) != len(chunk):
                    raise ProjectionConflict(name, generation)

    def _quarantine(self, cur: _Cursor, rows: Sequence[Quarantined]) -> None:
        p = self.placeholder
        cur.executemany(
            "INSERT INTO projection_quarantine (name, generation, event_id, session_id, "
            "position, tx, version, topic, error, held_behind) "
            f"VALUES ({', '.join(p for _ in range(10))}) "
            "ON CONFLICT (name, generation, event_id) DO UPDATE SET error = excluded.error, "
            "held_behind = excluded.held_behind",
            [
                (
                    q.projection,
                    q.generation,
                    self._to_db("uuid", q.event_id),
                    self._to_db("uuid", q.session_id),
                    q.position,
                    q.tx,
                    q.version,
                    q.topic,
                    q.error,
                    None if q.held_behind is None else self._to_db("uuid", q.held_behind),
                )
                for q in rows
            ],
        )


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
