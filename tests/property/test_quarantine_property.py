"""Poison containment as a property: random histories with random poison injected (handler bugs
on random events in random views, rows no code can decode, values the database refuses), applied
incrementally in small random batches and rebuilt from zero.

- The incremental views and their quarantine equal the rebuilt ones.
- For every view, a session it does not hold has exactly the rows a fold of its events gives.
- A session a view holds shows its state just before the first event the view could not apply:
  never a state that skipped an event.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.serialization import SessionStoredEvent
from sessionstore.domain.errors import UndecodableEvent
from sessionstore.domain.ports import LOG_START, RecordedEvent
from sessionstore.domain.session import SessionStatus
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import MessageAdded
from sessionstore.projections import all_projections
from sessionstore.projections.base import Projection, Row
from sessionstore.projections.runner import ProjectionRunner, rebuild
from sessionstore.projections.tables import (
    SESSION_CLEANUP,
    SESSION_METRICS,
    SESSION_STATE,
    TRANSCRIPT,
)
from tests.poison import GARBAGE, Failing, RejectingViews, stored
from tests.property.test_projection_replay import (
    START,
    Draw,
    _act,
    _create,
    expected_cleanup,
    expected_session_metrics,
    expected_state,
    expected_transcript,
    gaps,
    micros,
)

PER_SESSION: dict[str, tuple[str, Callable[[list[RecordedEvent]], dict[Any, Row]]]] = {
    # view -> (its per-session table, the rows a fold of events gives)
    "session_state": (SESSION_STATE.name, expected_state),
    "transcript": (TRANSCRIPT.name, expected_transcript),
    "metrics": (SESSION_METRICS.name, expected_session_metrics),
    "cleanup": (SESSION_CLEANUP.name, expected_cleanup),
}


def decoded(log: MemoryEventLog) -> list[RecordedEvent]:
    """Every event of the log that can be decoded, in log order."""
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


def snapshot(views: RejectingViews, projections: list[Projection]) -> dict[str, list[Row]]:
    return {t.name: views.rows(p.name, t.name) for p in projections for t in p.tables}


def quarantine(views: RejectingViews) -> list[tuple[str, UUID, UUID | None, str]]:
    return [(q.projection, q.event_id, q.held_behind, q.error) for q in views.quarantined()]


class History:
    """A log written through a store, with poison injected now and then."""

    def __init__(self, draw: Draw) -> None:
        self.draw = draw
        self.now = START + draw(gaps)
        self.ids = itertools.count(1)
        self.log = MemoryEventLog()
        self.store = SessionStore(
            self.log, clock=lambda: self.now, new_id=lambda: UUID(int=next(self.ids))
        )
        self.bugs: dict[str, set[UUID]] = {p.name: set() for p in all_projections()}
        self.sessions: list[UUID] = []
        self.frozen: set[UUID] = set()
        """Sessions behind a row the store itself cannot read any more."""

    def step(self) -> None:
        draw, store = self.draw, self.store
        self.now += draw(gaps) + draw(micros)
        live = [s for s in self.sessions if s not in self.frozen and not store.get(s).is_ended]
        poison = draw(st.sampled_from(["none"] * 6 + ["bug", "garbage", "refused"]))
        if not live or (len(self.sessions) < 5 and draw(st.integers(0, 5)) == 0):
            self.sessions.append(_create(draw, store))
            return
        sid = draw(st.sampled_from(live))
        state = store.get(sid)
        if poison == "garbage":
            topic = draw(st.sampled_from(["MessageAdded", "TurnRecorded", "NoSuchEvent"]))
            self.raw(garbage(sid, state.version + 1, topic, self.new_id(), self.now), sid)
            if draw(st.booleans()):  # an event after it, which must wait behind it
                after = later(sid, state.version + 2, self.new_id(), self.now)
                self.raw(stored(after), sid)
            self.frozen.add(sid)
        elif poison == "refused" and state.status is SessionStatus.ACTIVE:
            # A message's own token count is stored as it is (in the transcript), where 2^63
            # does not fit; the sums of the state and the metrics saturate instead.
            message = refused_message(sid, state.version + 1, self.new_id(), self.now)
            self.raw(stored(message, input_tokens=2**63), sid)
        else:
            _act(draw, store, state)
            if poison == "bug":  # the event just written breaks one view's code
                (last,) = self.log.read_session(sid, after_version=state.version, limit=1)
                self.bugs[draw(st.sampled_from(sorted(self.bugs)))].add(last.event.event_id)

    def new_id(self) -> UUID:
        return UUID(int=next(self.ids))

    def raw(self, row: SessionStoredEvent, sid: UUID) -> None:
        (first,) = self.log.read_session(sid, limit=1)
        self.log.append_stored(row, tenant_id=first.tenant_id)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_poison_holds_only_its_sessions_and_incremental_equals_rebuilt(
    data: st.DataObject,
) -> None:
    draw: Draw = data.draw
    history = History(draw)
    log = history.log
    views = RejectingViews()
    projections: list[Projection] = [Failing(p, history.bugs[p.name]) for p in all_projections()]
    for projection in projections:
        views.ensure(projection)

    for _ in range(draw(st.integers(1, 40), label="steps")):
        history.step()
        if draw(st.integers(0, 3)) == 0:  # now and then, part of the way, in small batches
            runner = ProjectionRunner(
                log, views, projections, batch_size=draw(st.integers(1, 4), label="batch")
            )
            for _ in range(draw(st.integers(1, 3))):
                runner.step()

    ProjectionRunner(log, views, projections, batch_size=draw(st.integers(1, 6))).catch_up()
    incremental, held = snapshot(views, projections), quarantine(views)
    event("quarantined" if held else "nothing quarantined")
    rebuild(log, views, projections, batch_size=draw(st.integers(1, 50), label="rebuild batch"))
    assert snapshot(views, projections) == incremental
    assert quarantine(views) == held

    events = decoded(log)
    for projection in projections:
        table, expected = PER_SESSION[projection.name]
        heads = views.held({projection.name: 2}, history.sessions)[projection.name]
        for sid in history.sessions:
            mine = [e for e in events if e.event.session_id == sid]
            if sid in heads:  # its state just before the first event the view could not apply
                stop = next(q.version for q in views.quarantined(projection.name, sid))
                mine = [e for e in mine if e.event.version < stop]
            want = list(expected(mine).values()) if mine else []
            got = [r for r in incremental[table] if r["session_id"] == sid]
            assert got == want, (projection.name, sid, sid in heads)


def garbage(
    sid: UUID, version: int, topic: str, event_id: UUID, at: datetime
) -> SessionStoredEvent:
    return SessionStoredEvent(
        originator_id=sid,
        originator_version=version,
        topic=topic,
        state=GARBAGE,
        event_id=event_id,
        occurred_at=at,
        class_version=1,
    )


def later(sid: UUID, version: int, event_id: UUID, at: datetime) -> MessageAdded:
    return MessageAdded(
        session_id=sid,
        version=version,
        occurred_at=at,
        event_id=event_id,
        message_id=f"m{version}",
        role="user",
        content="behind the bad row",
    )


def refused_message(sid: UUID, version: int, event_id: UUID, at: datetime) -> MessageAdded:
    return MessageAdded(
        session_id=sid,
        version=version,
        occurred_at=at,
        event_id=event_id,
        message_id=f"m{version}",
        role="user",
        content="tokens beyond 64 bits",
        input_tokens=1,
    )
