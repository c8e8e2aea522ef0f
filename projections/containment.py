"""Poison containment: fold events into one projection generation so that an event it cannot
apply is quarantined, its session held behind it, and every other session keeps flowing.

An event is *poisoned* in a projection when the projection's code raises on it, when the
database refuses the rows it produced (``StorageRejected``), or when its stored row cannot be
decoded at all (``UndecodableEvent``). It is then written to the generation's quarantine with
the error instead of being applied, and its session is *held* there: the session's later events
in that projection are quarantined behind it (``held_behind``) rather than folded, so the view
never shows a state that skipped an event. Other projections, and other sessions of the same
projection, are not affected. ``sessionstore projections quarantine retry`` folds them later
(``projections/quarantine.py``).

The log-fed runner, the Kafka-fed feed and the retry all go through ``Containment``:

- ``prepare(items)`` folds the items into a batch. Events of held sessions become quarantine
  rows; a handler failure that names its event poisons that event and folds again from
  scratch without the session's events from there on (a failed fold leaves the batch unusable).
- ``apply_alone(items, commit)`` commits items on their own; if the database refuses a value
  (or a failure belongs to no single event), it splits them in halves and goes on with each,
  until the offending event is alone and can be quarantined. Equivalent to one event per
  commit, with a logarithmic number of commits per bad event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict, cast
from uuid import UUID

from sessionstore.domain.errors import StorageRejected, UndecodableEvent
from sessionstore.domain.ports import EventLog, LogCursor, RecordedEvent
from sessionstore.events.catalogue import EVENT_TYPES
from sessionstore.events.codec import CodecError
from sessionstore.projections.base import (
    Batch,
    HandlerFailed,
    Projection,
    Quarantined,
    ViewStore,
    describe,
    fold,
    transient,
)

log = logging.getLogger("sessionstore.projections")

Item = RecordedEvent | UndecodableEvent
"""An event read from the log, or a row of it that could not be decoded."""

KNOWN_TOPICS = frozenset(cls.topic for cls in EVENT_TYPES)
MAX_ERROR_CHARS = 2000


def cursor_of(item: Item) -> LogCursor:
    return item.cursor


def session_of(item: Item) -> UUID:
    return item.session_id if isinstance(item, UndecodableEvent) else item.event.session_id


def event_id_of(item: Item) -> UUID:
    return item.event_id if isinstance(item, UndecodableEvent) else item.event.event_id


def version_of(item: Item) -> int:
    return item.version if isinstance(item, UndecodableEvent) else item.event.version


def topic_of(item: Item) -> str:
    return item.topic if isinstance(item, UndecodableEvent) else item.event.topic


def clean(text: str) -> str:
    """Error text any database stores: no NUL, no lone surrogate, at most MAX_ERROR_CHARS."""
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def undecodable_error(item: UndecodableEvent) -> str:
    return f"UndecodableEvent: {item.reason}"


class Extra(TypedDict, total=False):
    quarantined: Sequence[Quarantined]


def extra(quarantined: Iterable[Quarantined]) -> Extra:
    """``ViewStore.commit``'s ``quarantined`` argument, only when there are rows: a healthy
    batch calls ``commit`` exactly as before quarantines existed (so do wrappers of it)."""
    rows = list(quarantined)
    return {"quarantined": rows} if rows else {}


def read_items(log_: EventLog, session_id: UUID, after: int, to: int) -> list[Item]:
    """A session's events after version ``after`` up to ``to``, with each row that cannot be
    decoded in its place (as an UndecodableEvent reporting it). ``read_session`` raises on such
    a row, so then the range is read again one version at a time, beside the stored rows."""
    try:
        return list(log_.read_session(session_id, after_version=after, to_version=to))
    except Exception as e:  # a transient database failure is not the rows' fault
        if transient(e):
            raise
    out: list[Item] = []
    for row in log_.stored_rows(session_id):
        if not after < row.version <= to:
            continue
        try:
            out.extend(
                log_.read_session(session_id, after_version=row.version - 1, to_version=row.version)
            )
        except Exception as e:
            if transient(e):
                raise
            reason = str(e) if isinstance(e, CodecError) else describe(e)
            out.append(
                UndecodableEvent(
                    decoded=[],
                    cursor=row.cursor,
                    session_id=row.session_id,
                    version=row.version,
                    event_id=row.event_id,
                    topic=row.topic,
                    reason=reason,
                    tenant_id=row.tenant_id,
                    class_version=row.class_version,
                    state=row.state,
                )
            )
    return out


@dataclass
class Prepared:
    """Items folded for one commit of one projection generation."""

    items: Sequence[Item]
    batch: Batch | None
    """The folded rows (None when no item was folded)."""
    folded: list[RecordedEvent]
    quarantine: list[Quarantined]
    """Rows to write: poisoned events and events of held sessions."""
    held: dict[UUID, UUID]
    """The held sessions (and the event each is held behind) once these items are committed."""


class Unattributable(Exception):
    """A fold failed in a way that names no single event (a ``before_commit`` finisher)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(describe(error))
        self.error = error


Commit = Callable[[Prepared], None]
"""Writes a Prepared in one transaction (raising StorageRejected if a value is refused)."""


class Containment:
    """One projection generation's share of a run (see the module docstring).

    ``held`` maps each session the generation holds to the event it is held behind. It starts
    from the store and follows the commits made through this object."""

    def __init__(
        self,
        store: ViewStore,
        projection: Projection,
        generation: int,
        held: dict[UUID, UUID],
        *,
        report: bool = True,
    ) -> None:
        self.store = store
        self.report = report
        """Log a warning for each event quarantined (the retry reports by itself instead)."""
        self.projection = projection
        self.generation = generation
        self.held = dict(held)
        self.poisoned: dict[UUID, str] = {}
        """Events found poisoned during this run (event id -> error), not yet committed."""
        self.contained = 0
        """Quarantine rows committed through this object."""

    def relevant(self, item: Item) -> bool:
        """Whether the projection folds this item. A row that cannot be decoded counts when its
        topic is one the projection folds or one no code knows (it might be anything)."""
        topic = topic_of(item)
        return topic in self.projection.topics or (
            isinstance(item, UndecodableEvent) and topic not in KNOWN_TOPICS
        )

    def prepare(self, items: Sequence[Item]) -> Prepared:
        """Fold ``items``; raises Unattributable if a failure names no event."""
        while True:
            folded, rows, held = self._plan(items)
            if not folded:
                return Prepared(items, None, folded, rows, held)
            try:
                batch = fold(self.store, self.projection, self.generation, folded)
            except HandlerFailed as e:
                if e.event is None:
                    raise Unattributable(e.error) from e
                self._poison(e.event, describe(e.error))
                continue  # fold again from scratch, without that session from there on
            return Prepared(items, batch, folded, rows, held)

    def accept(self, prepared: Prepared) -> None:
        """Take note that ``prepared`` was committed (and report what it quarantined)."""
        self.held = prepared.held
        self.contained += len(prepared.quarantine)
        for row in prepared.quarantine:
            self.poisoned.pop(row.event_id, None)
            if row.held_behind is None and self.report:
                log.warning(
                    "view %s (generation %d) cannot apply event %s (session %s v%d, position "
                    "%d, %s): %s; it is quarantined and the session is held in this view (see "
                    "`sessionstore projections quarantine list`)",
                    row.projection,
                    row.generation,
                    row.event_id,
                    row.session_id,
                    row.version,
                    row.position,
                    row.topic,
                    row.error,
                )

    def apply_alone(self, items: Sequence[Item], commit: Commit) -> None:
        """Commit ``items`` apart from any other projection's; split on a refused value."""
        failure: Exception
        try:
            prepared = self.prepare(items)
        except Unattributable as e:
            failure = e.error
        else:
            try:
                commit(prepared)
            except StorageRejected as e:
                failure = e
            else:
                self.accept(prepared)
                return
        folded = [event for event in self._plan(items)[0] if self.relevant(event)]
        if not folded:
            raise failure  # nothing of these items' own was written: not an event's fault
        if len(folded) == 1:
            self._poison(folded[0], describe(failure))
            prepared = self.prepare(items)
            commit(prepared)  # only quarantine rows and moves now: a failure here is real
            self.accept(prepared)
            return
        middle = folded[len(folded) // 2]
        split = next(n for n, item in enumerate(items) if item is middle)
        self.apply_alone(items[:split], commit)
        self.apply_alone(items[split:], commit)

    # -------------------------------------------------------------------------------------------

    def _plan(
        self, items: Sequence[Item]
    ) -> tuple[list[RecordedEvent], list[Quarantined], dict[UUID, UUID]]:
        """Which items to fold, which to quarantine, and the held sessions after them."""
        if not self.held and not self.poisoned and UndecodableEvent not in map(type, items):
            # The common case: nothing held or poisoned. fold() skips foreign topics itself.
            return cast("list[RecordedEvent]", list(items)), [], {}
        held = dict(self.held)
        folded: list[RecordedEvent] = []
        rows: list[Quarantined] = []
        for item in items:
            if not self.relevant(item):
                continue
            sid = session_of(item)
            head = held.get(sid)
            if head is not None:
                rows.append(self._row(item, f"held behind event {head}", head))
                continue
            if isinstance(item, UndecodableEvent):
                rows.append(self._row(item, undecodable_error(item), None))
                held[sid] = item.event_id
                continue
            error = self.poisoned.get(item.event.event_id)
            if error is not None:
                rows.append(self._row(item, error, None))
                held[sid] = item.event.event_id
                continue
            folded.append(item)
        return folded, rows, held

    def _poison(self, event: RecordedEvent, error: str) -> None:
        self.poisoned[event.event.event_id] = error

    def _row(self, item: Item, error: str, held_behind: UUID | None) -> Quarantined:
        cursor = cursor_of(item)
        return Quarantined(
            projection=self.projection.name,
            generation=self.generation,
            event_id=event_id_of(item),
            session_id=session_of(item),
            position=cursor.position,
            tx=cursor.tx,
            version=version_of(item),
            topic=clean(topic_of(item)),
            error=clean(error),
            held_behind=held_behind,
        )
