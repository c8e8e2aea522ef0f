"""View stores on SQL: generations of view tables, tracking rows, batched writes.

The shared logic lives here; ``adapters/postgres/views.py`` and ``adapters/sqlite/views.py``
supply the dialect (types, value conversion, bulk statements, locking). Table DDL is generated
from the declarations in ``projections/tables.py`` (view tables are disposable and rebuilt
from the log; the log's own schema is hand-written SQL in the migrations).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

import orjson

from sessionstore.adapters.storage.sql.quarantine import SQLQuarantine
from sessionstore.domain.errors import ProjectionConflict, StorageRejected, UnknownProjection
from sessionstore.domain.ports import LOG_START, LogCursor
from sessionstore.projections.base import (
    Applied,
    Batch,
    ColumnType,
    Key,
    Projection,
    Quarantined,
    Row,
    Table,
    Tracking,
    fingerprint,
)

_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")


Reader = Callable[[Any], Any]


class Cursor(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...

    def executemany(self, query: Any, params_seq: Any) -> Any: ...

    def fetchall(self) -> Any: ...

    def fetchone(self) -> Any: ...


def physical(table: str, generation: int) -> str:
    """The table that holds one generation of a view table's rows."""
    return f"{table}_g{generation}"


def checked(name: str) -> str:
    """Identifiers we format into SQL are our own constants; refuse anything else."""
    if not _IDENTIFIER.match(name):
        msg = f"not a safe SQL identifier: {name!r}"
        raise ValueError(msg)
    return name


class SQLViewStore(SQLQuarantine, ABC):
    """ViewStore on a SQL database. Subclasses give the dialect."""

    placeholder: ClassVar[str]
    types: ClassVar[dict[ColumnType, str]]
    _known: dict[str, tuple[Table, ...]]
    _reader_cache: dict[int, tuple[Table, tuple[str, ...], tuple[Reader | None, ...]]]
    """Tables of the projections this store has been asked to ensure (for ``rows``)."""

    # -- dialect --------------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release the connections (pool or file) this store holds."""

    @abstractmethod
    def feed_lock(self) -> AbstractContextManager[None]:
        """Mutual exclusion between Kafka-fed workers (``ViewStore.feed_lock``)."""

    @abstractmethod
    def _transaction(self, *, ddl: bool = False) -> AbstractContextManager[Cursor]:
        """A write transaction (``ddl``: also serialised against other processes' DDL)."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _to_db(self, type_: ColumnType, value: Any) -> Any: ...

    @abstractmethod
    def _from_db(self, type_: ColumnType, value: Any) -> Any: ...

    @abstractmethod
    def _load_query(
        self, table: Table, name: str, keys: Sequence[Key]
    ) -> tuple[str, list[Any]]: ...

    @abstractmethod
    def _insert_rows(self, cur: Cursor, table: Table, name: str, rows: list[list[Any]]) -> None: ...

    def _write_transaction(self, inserts: int) -> AbstractContextManager[Cursor]:
        """The transaction ``commit`` writes in (``inserts``: how many append-only rows)."""
        return self._transaction()

    # -- DDL --------------------------------------------------------------------------------------

    def _create_tables(self, cur: Cursor, projection: Projection, generation: int) -> None:
        for table in projection.tables:
            name = checked(physical(table.name, generation))
            columns = ", ".join(
                f"{checked(c.name)} {self.types[c.type]}{'' if c.nullable else ' NOT NULL'}"
                for c in table.columns
            )
            cur.execute(f"DROP TABLE IF EXISTS {name}")
            cur.execute(f"CREATE TABLE {name} ({columns}, PRIMARY KEY ({', '.join(table.key)}))")
            for number, index in enumerate(table.indexes, start=1):
                cur.execute(f"CREATE INDEX {name}_ix{number} ON {name} ({', '.join(index)})")
        self._forget_generation(cur, projection.name, generation)
        p = self.placeholder
        cur.execute(
            "INSERT INTO projection_tracking (name, generation, tx, position) "
            f"VALUES ({p}, {p}, 0, 0)",
            (projection.name, generation),
        )

    def _point_views(self, cur: Cursor, projection: Projection, generation: int) -> None:
        for table in projection.tables:
            name = checked(table.name)
            cur.execute(f"DROP VIEW IF EXISTS {name}")
            cur.execute(f"CREATE VIEW {name} AS SELECT * FROM {physical(name, generation)}")

    def _drop_generation(self, cur: Cursor, projection: Projection, generation: int) -> None:
        for table in projection.tables:
            cur.execute(f"DROP TABLE IF EXISTS {checked(physical(table.name, generation))}")
        self._forget_generation(cur, projection.name, generation)

    def _forget_generation(self, cur: Cursor, name: str, generation: int) -> None:
        """Remove a generation's tracking row, Kafka-fed versions and quarantine."""
        p = self.placeholder
        for table in ("projection_tracking", "projection_applied", "projection_quarantine"):
            cur.execute(f"DELETE FROM {table} WHERE name = {p} AND generation = {p}",
                        (name, generation))  # fmt: skip

    def _registry(self, cur: Cursor, name: str) -> tuple[int, int] | None:
        p = self.placeholder
        cur.execute(
            f"SELECT active_generation, latest_generation FROM projections WHERE name = {p}",
            (name,),
        )
        row = cur.fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    # -- ViewStore --------------------------------------------------------------------------------

    def ensure(self, projection: Projection) -> int:
        self._known[projection.name] = projection.tables
        with self._reading() as cur:
            known = self._registry(cur, projection.name)
        if known is not None:
            return known[0]
        p = self.placeholder
        with self._transaction(ddl=True) as cur:
            known = self._registry(cur, projection.name)
            if known is not None:  # another process got here first
                return known[0]
            self._create_tables(cur, projection, 1)
            self._point_views(cur, projection, 1)
            cur.execute(
                "INSERT INTO projections (name, active_generation, latest_generation, fingerprint) "
                f"VALUES ({p}, 1, 1, {p})",
                (projection.name, fingerprint(projection.tables)),
            )
        return 1

    def active_generation(self, name: str) -> int:
        with self._reading() as cur:
            known = self._registry(cur, name)
        if known is None:
            raise UnknownProjection(name, [])
        return known[0]

    def fingerprint(self, name: str) -> str:
        p = self.placeholder
        with self._reading() as cur:
            cur.execute(f"SELECT fingerprint FROM projections WHERE name = {p}", (name,))
            row = cur.fetchone()
        if row is None:
            raise UnknownProjection(name, [])
        return str(row[0])

    def generations(self, name: str) -> tuple[int, int]:
        """(active, latest) generation numbers; latest > active while a rebuild is under way."""
        with self._reading() as cur:
            known = self._registry(cur, name)
        if known is None:
            raise UnknownProjection(name, [])
        return known

    def start_generation(self, projection: Projection) -> int:
        self._known[projection.name] = projection.tables
        p = self.placeholder
        with self._transaction(ddl=True) as cur:
            known = self._registry(cur, projection.name)
            if known is None:
                raise UnknownProjection(projection.name, [])
            active, latest = known
            for leftover in range(active + 1, latest + 1):  # abandoned rebuilds
                self._drop_generation(cur, projection, leftover)
            generation = latest + 1
            self._create_tables(cur, projection, generation)
            cur.execute(
                f"UPDATE projections SET latest_generation = {p} WHERE name = {p}",
                (generation, projection.name),
            )
        return generation

    def activate(self, projection: Projection, generation: int) -> None:
        p = self.placeholder
        with self._transaction(ddl=True) as cur:
            known = self._registry(cur, projection.name)
            if known is None:
                raise UnknownProjection(projection.name, [])
            old = known[0]
            self._point_views(cur, projection, generation)
            cur.execute(
                f"UPDATE projections SET active_generation = {p}, fingerprint = {p} "
                f"WHERE name = {p}",
                (generation, fingerprint(projection.tables), projection.name),
            )
            if old != generation:
                self._drop_generation(cur, projection, old)

    def positions(self, names: Sequence[str]) -> dict[str, Tracking]:
        marks = ", ".join(self.placeholder for _ in names)
        with self._reading() as cur:
            cur.execute(
                "SELECT p.name, p.active_generation, t.tx, t.position, t.seq, "
                f"{_HOLDS.format(generation='p.active_generation')} FROM projections p "
                "JOIN projection_tracking t "
                "ON t.name = p.name AND t.generation = p.active_generation "
                f"WHERE p.name IN ({marks})",
                list(names),
            )
            rows = cur.fetchall()
        found = {row[0]: _tracking(row[0], row[1:]) for row in rows}
        missing = [n for n in names if n not in found]
        if missing:
            raise UnknownProjection(missing[0], sorted(found))
        return found

    def tracking(self, name: str, generation: int) -> LogCursor:
        return self.tracking_of(name, generation).cursor

    def tracking_of(self, name: str, generation: int) -> Tracking:
        p = self.placeholder
        with self._reading() as cur:
            cur.execute(
                f"SELECT t.generation, t.tx, t.position, t.seq, {_HOLDS.format(generation=p)} "
                f"FROM projection_tracking t WHERE t.name = {p} AND t.generation = {p}",
                (generation, name, generation),
            )
            row = cur.fetchone()
        return Tracking(name, generation, LOG_START) if row is None else _tracking(name, row)

    def load(
        self, projection: str, generation: int, table: Table, keys: Sequence[Key]
    ) -> list[Row]:
        name = checked(physical(table.name, generation))
        out: list[Row] = []
        for chunk in _chunks(keys, 500):
            query, params = self._load_query(table, name, chunk)
            with self._reading() as cur:
                cur.execute(query, params)
                rows = cur.fetchall()
            out.extend(self._rows(table, rows))
        return out

    def commit(
        self,
        writes: Sequence[tuple[Projection, int, Batch]],
        moves: Sequence[tuple[Tracking, LogCursor]],
        applied: Sequence[Applied] = (),
        quarantined: Sequence[Quarantined] = (),
        released: Sequence[Quarantined] = (),
    ) -> None:
        inserts = sum(
            len(batch.changes[table.name].inserts)
            for projection, _, batch in writes
            for table in projection.tables
        )
        try:
            with self._write_transaction(inserts) as cur:
                self._commit(
                    cur, writes, moves, applied, quarantined=quarantined, released=released
                )
        except orjson.JSONEncodeError as e:
            # A json column's value orjson cannot write (an integer beyond 64 bits, nesting
            # deeper than its limit): the same rows would fail again, like a refused value.
            raise StorageRejected(f"a json value cannot be written: {e}") from e

    def _commit(
        self,
        cur: Cursor,
        writes: Sequence[tuple[Projection, int, Batch]],
        moves: Sequence[tuple[Tracking, LogCursor]],
        applied: Sequence[Applied],
        *,
        quarantined: Sequence[Quarantined],
        released: Sequence[Quarantined],
    ) -> None:
        p = self.placeholder
        # Tracking first: it takes the write lock at once, and if another runner moved a
        # position meanwhile, nothing below is written (the transaction rolls back).
        for old, new in moves:
            cur.execute(
                f"UPDATE projection_tracking SET tx = {p}, position = {p}, seq = seq + 1 "
                f"WHERE name = {p} AND generation = {p} AND tx = {p} AND position = {p} "
                f"AND seq = {p} RETURNING position",
                (new.tx, new.position, old.projection, old.generation, old.cursor.tx,
                 old.cursor.position, old.seq),
            )  # fmt: skip
            if cur.fetchone() is None:
                raise ProjectionConflict(old.projection, old.generation)
        if released:
            self._release(cur, released)
        for projection, generation, batch in writes:
            for table in projection.tables:
                changes = batch.changes[table.name]
                name = checked(physical(table.name, generation))
                if changes.upserts:
                    cur.executemany(
                        self._upsert_sql(table, name),
                        [self._values(table, row) for row in changes.upserts.values()],
                    )
                if changes.inserts:
                    self._insert_rows(
                        cur, table, name, [self._values(table, row) for row in changes.inserts]
                    )
        if applied:
            cur.executemany(
                "INSERT INTO projection_applied (name, generation, session_id, version) "
                f"VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (name, generation, session_id) "
                "DO UPDATE SET version = excluded.version",
                [
                    (a.projection, a.generation, self._to_db("uuid", a.session_id), a.version)
                    for a in applied
                ],
            )
        if quarantined:
            self._quarantine(cur, quarantined)

    def applied_versions(
        self, generations: Mapping[str, int], session_ids: Sequence[UUID]
    ) -> dict[str, dict[UUID, int]]:
        found: dict[str, dict[UUID, int]] = {name: {} for name in generations}
        if not generations:
            return found
        p = self.placeholder
        which = " OR ".join(f"(name = {p} AND generation = {p})" for _ in generations)
        names = [value for item in generations.items() for value in item]
        for chunk in _chunks(list(dict.fromkeys(session_ids)), 500):
            marks = ", ".join(p for _ in chunk)
            with self._reading() as cur:
                cur.execute(
                    "SELECT name, session_id, version FROM projection_applied "
                    f"WHERE ({which}) AND session_id IN ({marks})",
                    [*names, *(self._to_db("uuid", sid) for sid in chunk)],
                )
                rows = cur.fetchall()
            for name, sid, version in rows:
                found[name][self._from_db("uuid", sid)] = int(version)
        return found

    def fed_from_kafka(self, name: str, generation: int) -> bool:
        p = self.placeholder
        with self._reading() as cur:
            cur.execute(
                f"SELECT 1 FROM projection_applied WHERE name = {p} AND generation = {p} LIMIT 1",
                (name, generation),
            )
            return cur.fetchone() is not None

    # -- helpers ----------------------------------------------------------------------------------

    def _upsert_sql(self, table: Table, name: str) -> str:
        columns = table.column_names
        p = self.placeholder
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in table.key)
        return (
            f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join(p for _ in columns)}) "
            f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}"
        )

    def _values(self, table: Table, row: Row) -> list[Any]:
        return [self._to_db(c.type, row[c.name]) for c in table.columns]

    def _row(self, table: Table, values: Sequence[Any]) -> Row:
        return self._rows(table, [values])[0]

    def _rows(self, table: Table, fetched: Sequence[Sequence[Any]]) -> list[Row]:
        """Driver rows -> view rows, with the per-column conversions looked up once per call."""
        names, converters = self._readers(table)
        if not any(converters):
            return [dict(zip(names, values, strict=True)) for values in fetched]
        return [
            {
                name: value if convert is None or value is None else convert(value)
                for name, convert, value in zip(names, converters, values, strict=True)
            }
            for values in fetched
        ]

    def _readers(self, table: Table) -> tuple[tuple[str, ...], tuple[Reader | None, ...]]:
        """Column names and, per column, the conversion from the driver's value (None when the
        driver's value is already right). Cached by identity: tables are module constants, and
        hashing a Table (every Column) per call would cost more than the conversions."""
        found = self._reader_cache.get(id(table))
        if found is None or found[0] is not table:
            found = (table, table.column_names, tuple(self._reader(c.type) for c in table.columns))
            self._reader_cache[id(table)] = found
        return found[1], found[2]

    def _reader(self, type_: ColumnType) -> Reader | None:
        """The conversion for one column type; the default wraps ``_from_db``."""

        def convert(value: Any) -> Any:
            return self._from_db(type_, value)

        return convert

    def rows(self, projection: str, table: str, generation: int | None = None) -> list[Row]:
        """Every row of one generation of a table (the active one unless given), in key order."""
        spec = next((t for t in self._tables_of(projection) if t.name == table), None)
        if spec is None:
            msg = f"projection {projection} has no table {table}"
            raise ValueError(msg)
        gen = self.active_generation(projection) if generation is None else generation
        name = checked(physical(table, gen))
        with self._reading() as cur:
            cur.execute(
                f"SELECT {', '.join(spec.column_names)} FROM {name} ORDER BY {', '.join(spec.key)}"
            )
            fetched = cur.fetchall()
        return self._rows(spec, fetched)

    def _tables_of(self, projection: str) -> tuple[Table, ...]:
        if projection not in self._known:
            from sessionstore.projections import all_projections  # noqa: PLC0415 - avoids an import cycle

            for known in all_projections():
                self._known.setdefault(known.name, known.tables)
        return self._known.get(projection, ())

    def select(
        self, table: Table, where: str = "", params: Sequence[Any] = (), tail: str = ""
    ) -> list[Row]:
        """Rows of the active generation of ``table`` (through its view), for queries."""
        query = f"SELECT {', '.join(table.column_names)} FROM {checked(table.name)}"
        if where:
            query += f" WHERE {where}"
        if tail:
            query += f" {tail}"
        with self._reading() as cur:
            cur.execute(query, list(params))
            rows = cur.fetchall()
        return self._rows(table, rows)


_HOLDS = (
    "EXISTS (SELECT 1 FROM projection_quarantine q "
    "WHERE q.name = t.name AND q.generation = {generation})"
)
"""Whether a tracking row's generation holds quarantined events (one index probe)."""


def _tracking(name: str, row: Sequence[Any]) -> Tracking:
    """A tracking row from (generation, tx, position, seq, holds)."""
    generation, tx, position, seq, holds = row
    return Tracking(
        name, int(generation), LogCursor(int(tx), int(position)), int(seq), holds=bool(holds)
    )


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
