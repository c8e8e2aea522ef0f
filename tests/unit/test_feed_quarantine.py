"""Poison containment in the Kafka-fed feed (memory backends): an event a projection cannot
apply is quarantined there and its session held, every other session keeps flowing, and the
views end exactly as a log-fed rebuild leaves them (with the same quarantine). A quarantined
event counts as applied, so redeliveries and gap heals do not try it again; a retry does."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import pytest

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.memory.views import MemoryViewStore
from sessionstore.domain.errors import UndecodableEvent
from sessionstore.domain.ports import LOG_START, RecordedEvent
from sessionstore.projections import all_projections
from sessionstore.projections.base import Projection
from sessionstore.projections.feed import DeliveredFeed, FeedResult
from sessionstore.projections.quarantine import retry
from sessionstore.projections.runner import rebuild
from tests.poison import Failing, RawLog, RejectingViews, message, stored, undecodable
from tests.unit.test_feed import by_session, history
from tests.unit.test_projections import Views

Snapshot = dict[tuple[str, str], list[dict[str, object]]]


def snapshot(views: MemoryViewStore, projections: Sequence[Projection]) -> Snapshot:
    return {(p.name, t.name): views.rows(p.name, t.name) for p in projections for t in p.tables}


def quarantine(views: MemoryViewStore) -> list[tuple[str, UUID, UUID | None, str]]:
    """The quarantine, generation and time aside."""
    return [(q.projection, q.event_id, q.held_behind, q.error) for q in views.quarantined()]


def reference(
    v: Views, projections: Sequence[Projection], views: MemoryViewStore | None = None
) -> tuple[Snapshot, list[tuple[str, UUID, UUID | None, str]]]:
    """What a log-fed rebuild builds (quarantine included) on a fresh store."""
    views = views or MemoryViewStore()
    rebuild(v.log, views, projections)
    return snapshot(views, projections), quarantine(views)


def apply_all(feed: DeliveredFeed, events: Sequence[RecordedEvent], size: int) -> FeedResult:
    """Apply in deliveries of ``size``; the results summed."""
    results = [feed.apply(events[n : n + size]) for n in range(0, len(events), size)]
    return FeedResult(*(sum(getattr(r, f) for r in results) for f in FeedResult.__slots__))


def rows_of(snap: Snapshot, sid: UUID) -> Snapshot:
    return {k: [r for r in rows if r.get("session_id") == sid] for k, rows in snap.items()}


@pytest.fixture
def v() -> Views:
    views = Views()
    views.sessions = history(views)  # type: ignore[attr-defined]
    return views


def test_an_event_a_projection_cannot_fold_holds_its_session_there_only(v: Views) -> None:
    events = v.events()
    sessions = by_session(events)
    a = v.sessions["a"]  # type: ignore[attr-defined]
    bad = sessions[a][4]  # the session's fifth event, a message
    projections = [
        Failing(p, [bad.event.event_id]) if p.name == "transcript" else p for p in all_projections()
    ]
    feed = DeliveredFeed(v.log, v.views, projections)

    result = apply_all(feed, events, 7)

    later = [e for e in sessions[a] if e.event.version > bad.event.version]
    relevant_later = [e for e in later if e.event.topic in projections[1].topics]
    assert result == FeedResult(
        received=len(events),
        applied=len(events),
        duplicates=0,
        healed=0,
        quarantined=1 + len(relevant_later),
    )
    assert (snapshot(v.views, projections), quarantine(v.views)) == reference(v, projections)
    held = v.views.quarantined("transcript")
    assert [q.event_id for q in held] == [bad.event.event_id] + [
        e.event.event_id for e in relevant_later
    ]
    assert held[0].error == f"RuntimeError: bug on {bad.event.event_id}"
    assert {q.held_behind for q in held[1:]} == {bad.event.event_id}
    assert v.views.quarantine_counts(["transcript", "session_state"]) == {
        "transcript": len(held),
        "session_state": 0,
    }
    # Quarantined events count as applied: a redelivery tries nothing again.
    assert v.views.applied_versions({"transcript": 1}, [a])["transcript"][a] == len(sessions[a])
    again = feed.apply(events)
    assert (again.applied, again.duplicates, again.quarantined) == (0, len(events), 0)
    assert len(v.views.quarantined()) == len(held)

    # The fixed code releases them: the views are what a rebuild with it builds.
    (done,) = retry(v.log, v.views, [all_projections()[1]])
    assert (done.released, done.remaining) == (len(held), 0)
    assert snapshot(v.views, all_projections()) == reference(v, all_projections())[0]


def test_a_refused_value_is_found_by_committing_alone_and_only_its_session_waits(
    v: Views,
) -> None:
    views = RejectingViews()
    for p in all_projections():
        views.ensure(p)
    raw = RawLog(memory=v.log)
    a, b = v.sessions["a"], v.sessions["b"]  # type: ignore[attr-defined]
    poison = v.log.read_session(a)[-1].event.version + 1
    raw.insert(stored(message(a, poison), content="be\x00fore"))  # a's last event: persists
    v.store.add_message(b, role="user", content="after the poison")
    events = v.events()

    result = apply_all(DeliveredFeed(v.log, views, all_projections()), events, 1000)

    assert result.quarantined == 1  # one event, in session_state (preview) and transcript
    fed, held = snapshot(views, all_projections()), quarantine(views)
    assert (fed, held) == reference(v, all_projections(), RejectingViews())
    assert {(name, q_id) for name, q_id, _, _ in held} == {
        ("session_state", events[-2].event.event_id),
        ("transcript", events[-2].event.event_id),
    }
    assert all(error.startswith("StorageRejected: ") for *_, error in held)
    # b (after the poison in the same delivery) is complete; a shows its state before it.
    assert rows_of(fed, b) == rows_of(reference(v, all_projections())[0], b)
    (state,) = rows_of(fed, a)[("session_state", "session_state")]
    assert state["version"] == poison - 1


def test_a_gap_heal_meets_the_row_the_relay_could_not_decode(v: Views) -> None:
    raw = RawLog(memory=v.log)
    a, b = v.sessions["a"], v.sessions["b"]  # type: ignore[attr-defined]
    after = v.log.read_session(a)[-1].event.version
    raw.insert(undecodable(message(a, after + 1)))
    raw.insert(stored(message(a, after + 2, "behind the bad row")))  # the store cannot: it
    # would have to read the bad row to decide
    v.store.add_message(b, role="user", content="another session")
    # The relay dead-letters what it cannot decode: the workers never receive it.
    delivered = decodable(v.log)
    assert len(delivered) == len(v.log.stored_rows(limit=10_000)) - 1
    feed = DeliveredFeed(v.log, v.views, all_projections())

    result = apply_all(feed, delivered, 5)

    assert result.healed == 1  # read from the log to fill the gap before a's next message
    assert result.quarantined == 2  # the bad row, and the message held behind it
    assert (snapshot(v.views, all_projections()), quarantine(v.views)) == reference(
        v, all_projections()
    )
    rows = v.views.quarantined(session_id=a)
    assert {q.projection for q in rows} == {p.name for p in all_projections()}
    heads = [q for q in rows if q.held_behind is None]
    assert {q.version for q in heads} == {after + 1}
    assert all(q.error.startswith("UndecodableEvent: ") for q in heads)
    assert {q.version for q in rows if q.held_behind is not None} == {after + 2}


def decodable(log: MemoryEventLog) -> list[RecordedEvent]:
    """Every event of the log the relay publishes (it dead-letters the rows it cannot decode)."""
    out: list[RecordedEvent] = []
    cursor = LOG_START
    while True:
        try:
            batch = log.read_log(cursor)
        except UndecodableEvent as e:
            out.extend(e.decoded)
            cursor = e.cursor
            continue
        if not batch:
            return out
        out.extend(batch)
        cursor = batch[-1].cursor
