"""Whatever Kafka does within its guarantees, the Kafka-fed views equal the views rebuilt from
the log.

A random history (the same generator as test_projection_replay) is delivered the way a relay
and a topic may deliver it: each session's events in order, sessions interleaved at random,
earlier messages delivered again (a relay or worker restart), cut into random polls, and now and
then one event held back until later (a produce that failed and was retried after later events
of its session were written: a gap the feed heals from the log). The messages go through the
Kafka encoding and back. Feeding the polls through DeliveredFeed must build exactly the rows a
rebuild from the log builds, and its counts must say what happened to each message.
"""

from __future__ import annotations

import itertools
from uuid import UUID

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sessionstore.adapters.kafka.messages import decode, encode
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.memory.views import MemoryViewStore
from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.store import SessionStore
from sessionstore.events.codec import EventCodec
from sessionstore.projections import all_projections
from sessionstore.projections.base import Row
from sessionstore.projections.feed import DeliveredFeed
from sessionstore.projections.runner import rebuild
from tests.property.test_projection_replay import START, Draw, _act, _create, gaps, micros

Snapshot = dict[tuple[str, str], list[Row]]
CODEC = EventCodec()


def _snapshot(views: MemoryViewStore) -> Snapshot:
    return {
        (p.name, t.name): views.rows(p.name, t.name) for p in all_projections() for t in p.tables
    }


def _history(draw: Draw) -> MemoryEventLog:
    clock_now = [START + draw(gaps)]
    ids = itertools.count(1)
    log = MemoryEventLog()
    store = SessionStore(log, clock=lambda: clock_now[0], new_id=lambda: UUID(int=next(ids)))
    sessions: list[UUID] = []
    for _ in range(draw(st.integers(1, 40), label="steps")):
        clock_now[0] += draw(gaps) + draw(micros)
        open_sessions = [s for s in sessions if not store.get(s).is_ended]
        if not open_sessions or (len(sessions) < 5 and draw(st.integers(0, 4)) == 0):
            sessions.append(_create(draw, store))
        else:
            _act(draw, store, store.get(draw(st.sampled_from(open_sessions))))
    return log


def _delivery(draw: Draw, log: list[RecordedEvent]) -> list[RecordedEvent]:
    """Per-session order, sessions interleaved at random, some events held back, some messages
    delivered again later."""
    queues: dict[UUID, list[RecordedEvent]] = {}
    for recorded in log:
        queues.setdefault(recorded.event.session_id, []).append(recorded)
    delivery: list[RecordedEvent] = []
    while queues:
        sid = draw(st.sampled_from(sorted(queues)), label="next session")
        delivery.append(queues[sid].pop(0))
        if not queues[sid]:
            del queues[sid]
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]), label="held back")):
        held = delivery.pop(draw(st.integers(0, len(delivery) - 1)))
        after = [  # anywhere after the next event of its session, if it has one
            k
            for k, r in enumerate(delivery)
            if r.event.session_id == held.event.session_id
            and r.event.version == held.event.version + 1
        ]
        j = draw(st.integers(after[0] + 1 if after else 0, len(delivery)))
        delivery.insert(j, held)
    for _ in range(draw(st.integers(0, 6), label="redelivered")):
        i = draw(st.integers(0, len(delivery) - 1))
        j = draw(st.integers(i + 1, len(delivery)))
        delivery.insert(j, delivery[i])
    return delivery


def _polls(draw: Draw, delivery: list[RecordedEvent]) -> list[list[RecordedEvent]]:
    cuts = sorted(
        draw(st.sets(st.integers(1, max(1, len(delivery) - 1)), max_size=8), label="polls")
    )
    bounds = [0, *cuts, len(delivery)]
    return [delivery[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def _healed(delivery: list[RecordedEvent]) -> int:
    """Events first delivered after a later event of their session: the feed must have read
    them from the log (to fill the gap) before that later one."""
    highest: dict[UUID, int] = {}
    seen: set[UUID] = set()
    healed = 0
    for recorded in delivery:
        sid, version = recorded.event.session_id, recorded.event.version
        if recorded.event.event_id not in seen:
            seen.add(recorded.event.event_id)
            healed += version < highest.get(sid, 0)
        highest[sid] = max(highest.get(sid, 0), version)
    return healed


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_any_at_least_once_per_session_delivery_builds_the_rebuilt_views(
    data: st.DataObject,
) -> None:
    draw: Draw = data.draw
    log = _history(draw)
    recorded = log.read_log(limit=1_000_000)
    delivery = _delivery(draw, recorded)
    polls = _polls(draw, delivery)
    expected_healed = _healed(delivery)
    event(f"healed: {min(expected_healed, 3)}")
    event(f"redelivered: {min(len(delivery) - len(recorded), 3)}")
    event(f"polls: {min(len(polls), 5)}")

    views = MemoryViewStore()
    projections = all_projections()
    for projection in projections:
        views.ensure(projection)
    feed = DeliveredFeed(log, views, projections)
    received = applied = duplicates = healed = 0
    for poll in polls:
        messages = [encode(r) for r in poll]
        result = feed.apply([decode(m.value, CODEC, m.key) for m in messages])
        assert result.received == len(poll)
        assert result.applied + result.duplicates == result.received
        received += result.received
        applied += result.applied
        duplicates += result.duplicates
        healed += result.healed

    reference = MemoryViewStore()
    rebuild(log, reference, all_projections())
    assert _snapshot(views) == _snapshot(reference)
    assert received == len(delivery)
    assert healed == expected_healed
    assert applied == len(recorded) - expected_healed  # each event applied exactly once
    assert duplicates == len(delivery) - applied
    # Delivering everything once more (a relay restarted from offset 0) changes nothing.
    again = feed.apply(recorded)
    assert (again.applied, again.duplicates, again.healed) == (0, len(recorded), 0)
    assert _snapshot(views) == _snapshot(reference)
