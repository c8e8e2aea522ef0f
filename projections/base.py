"""What a projection is, and the port a backend implements to hold its views.

A projection has a ``name``, the event ``topics`` it reads, the ``tables`` it owns (declared
once here in Python; each backend turns them into DDL, because view tables are disposable and
rebuilt from the log, unlike the event log whose schema is hand-written SQL migrations) and one
small handler per event. Handlers never touch a database: they read and write rows through a
``Batch``, and the runner writes every changed row of a batch plus each projection's tracking
position in ONE transaction, so an event is applied exactly once even across crashes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from sessionstore.domain.errors import StorageError, StorageRejected
from sessionstore.domain.ports import LogCursor, RecordedEvent

ColumnType = Literal["uuid", "text", "int", "float", "bool", "timestamp", "date", "json"]
Row = dict[str, Any]
"""A view row: column name -> Python value (UUID, str, int, float, bool, aware datetime,
datetime.date, or JSON-compatible data for ``json`` columns)."""
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """A view table. ``name`` is the stable name queries use; each generation of a projection
    stores its rows in ``<name>_g<generation>`` and ``<name>`` is a SQL view over the active one."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        missing = [
            k for k in (*self.key, *(c for ix in self.indexes for c in ix)) if k not in names
        ]
        if missing or len(set(names)) != len(names):
            msg = f"table {self.name}: bad key/index columns {missing} or duplicate columns"
            raise ValueError(msg)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def key_of(self, row: Mapping[str, Any]) -> Key:
        return tuple(row[k] for k in self.key)


def fingerprint(tables: Sequence[Table]) -> str:
    """A short digest of table declarations: changes whenever a column, key or index does."""
    text = repr([(t.name, t.columns, t.key, t.indexes) for t in tables])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Projection(Protocol):
    """One view-building component. See the module docstring."""

    name: str
    topics: frozenset[str]
    tables: tuple[Table, ...]

    def keys(self, event: RecordedEvent) -> Iterable[tuple[str, Key]]:
        """The (table name, key) rows ``apply`` will read for this event, so the runner can load
        a whole batch's rows in one query per table. Rows read but not listed still work (they
        are loaded one by one)."""
        ...

    def apply(self, batch: Batch, event: RecordedEvent) -> None:
        """Fold one event into the batch's rows."""
        ...


Loader = Callable[[Table, Sequence[Key]], list[Row]]


@dataclass
class TableChanges:
    upserts: dict[Key, Row] = field(default_factory=dict)
    """Rows to insert or replace whole, by key."""
    inserts: list[Row] = field(default_factory=list)
    """Rows that are new by construction (append-only tables); never replace anything."""


class Batch:
    """The unit of work a projection's handlers see for a batch of events.

    Reads come from rows already changed in this batch, else from the view (loaded through
    ``loader``, normally prefetched in bulk). Writes are buffered until the runner commits.
    """

    def __init__(self, tables: Iterable[Table], loader: Loader) -> None:
        self._tables = {t.name: t for t in tables}
        self._loader = loader
        self._loaded: dict[str, dict[Key, Row | None]] = {name: {} for name in self._tables}
        self.changes: dict[str, TableChanges] = {name: TableChanges() for name in self._tables}
        self.memo: dict[str, Any] = {}
        """Scratch space a projection may use to keep decoded objects for the whole batch."""
        self._finishers: list[Callable[[], None]] = []

    def before_commit(self, finisher: Callable[[], None]) -> None:
        """Run ``finisher`` once, after the last event of the batch and before its commit (for
        projections that keep objects in ``memo`` and turn them into rows only once)."""
        self._finishers.append(finisher)

    def finish(self) -> None:
        finishers, self._finishers = self._finishers, []
        for finisher in finishers:
            finisher()

    def table(self, name: str) -> Table:
        return self._tables[name]

    def prefetch(self, name: str, keys: Iterable[Key]) -> None:
        table, loaded = self._tables[name], self._loaded[name]
        wanted = [k for k in dict.fromkeys(keys) if k not in loaded]
        if not wanted:
            return
        for row in self._loader(table, wanted):
            loaded[table.key_of(row)] = row
        for key in wanted:
            loaded.setdefault(key, None)

    def get(self, name: str, key: Key) -> Row | None:
        """The current row (a copy you may modify and ``put`` back), or None."""
        changed = self.changes[name].upserts.get(key)
        if changed is not None:
            return dict(changed)
        if key not in self._loaded[name]:
            self.prefetch(name, [key])
        row = self._loaded[name][key]
        return None if row is None else dict(row)

    def put(self, name: str, row: Row) -> None:
        """Insert or replace the whole row (all columns)."""
        table = self._tables[name]
        self.changes[name].upserts[table.key_of(row)] = row

    def insert(self, name: str, row: Row) -> None:
        """Add a row to an append-only table (its key must be new)."""
        self.changes[name].inserts.append(row)

    @property
    def empty(self) -> bool:
        return not any(c.upserts or c.inserts for c in self.changes.values())


@dataclass(frozen=True, slots=True)
class Tracking:
    """How far one generation of a projection has applied the log.

    ``seq`` counts the commits that moved or re-asserted the row; a commit's compare-and-set
    checks it with the cursor, so a commit that changes view rows without moving the cursor (a
    quarantine retry) still makes a concurrent commit loaded before it fail (decisions §22)."""

    projection: str
    generation: int
    cursor: LogCursor
    seq: int = 0
    holds: bool = field(default=False, compare=False)
    """Whether the generation held quarantined events when the row was read (so a runner asks
    which of its sessions are held only then). Not part of the compare-and-set."""

    def moved(self, cursor: LogCursor) -> Tracking:
        """The row as a successful commit from this one to ``cursor`` leaves it."""
        return Tracking(self.projection, self.generation, cursor, self.seq + 1)


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An event one generation of a projection did not apply (docs/quarantine.md).

    The first event of a session that failed in that generation carries the ``error`` and no
    ``held_behind``; the session's later events wait behind it (``held_behind`` is its event
    id), so the view never shows a state that skipped an event."""

    projection: str
    generation: int
    event_id: UUID
    session_id: UUID
    position: int
    tx: int
    version: int
    topic: str
    error: str
    held_behind: UUID | None = None
    quarantined_at: datetime | None = None
    """Set by the store when it lists rows; None in rows about to be written."""

    @property
    def cursor(self) -> LogCursor:
        return LogCursor(self.tx, self.position)


class HandlerFailed(Exception):
    """A projection could not fold an event (``fold`` wraps whatever its code raised, except a
    transient StorageError). ``event`` is None when the failure belongs to no single event (a
    ``before_commit`` finisher, a rejected prefetch)."""

    def __init__(self, projection: str, event: RecordedEvent | None, error: Exception) -> None:
        self.projection, self.event, self.error = projection, event, error
        where = "" if event is None else f" event {event.event.event_id} ({event.event.topic})"
        super().__init__(
            f"projection {projection} failed on{where or ' a batch'}: {describe(error)}"
        )


def describe(error: BaseException) -> str:
    """``Type: message`` of an error, as stored with a quarantined event."""
    return f"{type(error).__name__}: {error}"


def transient(error: BaseException) -> bool:
    """A failure that may pass if the same work is tried again later (the database is down):
    those propagate instead of quarantining anything."""
    return isinstance(error, StorageError) and not isinstance(error, StorageRejected)


@dataclass(frozen=True, slots=True)
class Applied:
    """The last version of a session a Kafka-fed projection generation has applied."""

    projection: str
    generation: int
    session_id: UUID
    version: int


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    generation: int
    cursor: LogCursor
    head: LogCursor
    lag_events: int
    """Events in the log after this projection's position (what it has still to apply)."""
    building: int | None = None
    """Generation being rebuilt, if a rebuild is under way."""
    feed: Literal["log", "kafka"] = "log"
    """Where the active generation's events come from. Kafka-fed views leave their log position
    where their last rebuild put it, so ``lag_events`` counts from there; their real lag is
    their consumer group's (``sessionstore projections status --kafka``)."""
    quarantined: int = 0
    """Events the active generation holds in quarantine (it could not apply them, or they wait
    behind one it could not apply)."""


class ViewStore(Protocol):
    """Where projections keep their tables and tracking positions (one per backend)."""

    def ensure(self, projection: Projection) -> int:
        """Make sure the projection has an active generation with tables; return it."""
        ...

    def active_generation(self, name: str) -> int: ...

    def fingerprint(self, name: str) -> str:
        """The table fingerprint the active generation was built with ('' if unknown)."""
        ...

    def start_generation(self, projection: Projection) -> int:
        """Create empty tables and a tracking row at the log start for a new generation
        (for a rebuild); the active generation keeps serving queries."""
        ...

    def activate(self, projection: Projection, generation: int) -> None:
        """Point the projection's query names at ``generation`` and drop the older tables."""
        ...

    def tracking(self, name: str, generation: int) -> LogCursor: ...

    def tracking_of(self, name: str, generation: int) -> Tracking:
        """The whole tracking row (with its ``seq``) of one generation."""
        ...

    def positions(self, names: Sequence[str]) -> dict[str, Tracking]:
        """Each named projection's tracking row at its active generation, in one read."""
        ...

    def load(
        self, projection: str, generation: int, table: Table, keys: Sequence[Key]
    ) -> list[Row]: ...

    def commit(
        self,
        writes: Sequence[tuple[Projection, int, Batch]],
        moves: Sequence[tuple[Tracking, LogCursor]],
        applied: Sequence[Applied] = (),
        quarantined: Sequence[Quarantined] = (),
        released: Sequence[Quarantined] = (),
    ) -> None:
        """Write every batch's changes, move each tracking row from its old cursor to the new
        one (``seq`` + 1; a move to the same cursor re-asserts the row), record ``applied``
        session versions, write ``quarantined`` rows (replacing a row of the same event) and
        delete ``released`` ones, all in one transaction. Raises ProjectionConflict (and writes
        nothing) if any tracking row is no longer at its old cursor and seq (another runner got
        there first) or a released row is no longer there. StorageRejected if the database
        refused a value (nothing written either)."""
        ...

    def held(
        self, generations: Mapping[str, int], session_ids: Sequence[UUID]
    ) -> dict[str, dict[UUID, UUID]]:
        """For each projection at its generation, the sessions among these that it holds, each
        with the event id they are held behind (their first quarantined event); one read."""
        ...

    def quarantined(
        self, projection: str | None = None, session_id: UUID | None = None
    ) -> list[Quarantined]:
        """Quarantined events of every generation (or one projection's, or one session's), in
        (projection, generation, position) order."""
        ...

    def quarantine_counts(self, names: Sequence[str]) -> dict[str, int]:
        """How many events each named projection's active generation holds in quarantine."""
        ...

    def applied_versions(
        self, generations: Mapping[str, int], session_ids: Sequence[UUID]
    ) -> dict[str, dict[UUID, int]]:
        """For each projection at its generation, the last version of each of these sessions a
        Kafka-fed worker applied (sessions it has applied nothing of are left out); one read
        for all of them."""
        ...

    def fed_from_kafka(self, name: str, generation: int) -> bool:
        """Whether a Kafka-fed worker has applied anything to this generation."""
        ...

    def feed_lock(self) -> AbstractContextManager[None]:
        """Mutual exclusion between Kafka-fed workers (in any process) for one read-apply-write
        cycle: their partitions hold different sessions but share per-agent rows."""
        ...

    def close(self) -> None: ...


def view_loader(store: ViewStore, name: str, generation: int) -> Loader:
    """A ``Batch`` loader reading one generation of a projection's rows from ``store``."""

    def load(table: Table, keys: Sequence[Key]) -> list[Row]:
        return store.load(name, generation, table, keys)

    return load


def fold(
    store: ViewStore, projection: Projection, generation: int, events: Sequence[RecordedEvent]
) -> Batch:
    """Apply events (in order) to one generation of a projection: the rows they touch are
    loaded in one prefetch per table, and the changes are left in the returned batch for
    ``ViewStore.commit``. Events of topics the projection ignores are skipped. A failure of the
    projection's code raises HandlerFailed naming the event (the batch is then unusable)."""
    batch = Batch(projection.tables, view_loader(store, projection.name, generation))
    relevant = [r for r in events if r.event.topic in projection.topics]
    wanted: dict[str, list[Key]] = defaultdict(list)
    current: RecordedEvent | None = None
    try:
        for current in relevant:
            for table_name, key in projection.keys(current):
                wanted[table_name].append(key)
        current = None
        for table_name, keys in wanted.items():
            batch.prefetch(table_name, keys)
        for current in relevant:
            projection.apply(batch, current)
        current = None
        batch.finish()
    except Exception as e:
        # Whatever a projection's code raises names the event it was folding (the runner
        # quarantines it); only a database that may come back propagates as it is.
        if transient(e):
            raise
        raise HandlerFailed(projection.name, current, e) from e
    return batch
