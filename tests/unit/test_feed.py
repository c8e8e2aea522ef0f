"""DeliveredFeed on the memory backends: events delivered at least once, in per-session order but
not in global order (Kafka), build exactly the views a rebuild from the log builds — whatever the
redeliveries, interleavings, gaps, rebuilds and concurrent workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import pytest

from sessionstore.adapters.kafka.messages import decode, encode
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.memory.views import MemoryViewStore
from sessionstore.domain.errors import ProjectionFedFromKafka, ProjectionTimeout, StorageError
from sessionstore.domain.ports import LOG_START, RecordedEvent
from sessionstore.events.codec import EventCodec
from sessionstore.projections import all_projections
from sessionstore.projections.base import Applied, Batch, Key, Projection, Row, Table, Tracking
from sessionstore.projections.feed import DeliveredFeed, FeedResult
from sessionstore.projections.runner import ProjectionRunner, rebuild, wait_for_position
from tests.concurrency import run_together
from tests.unit.test_projections import WEATHER, Views, conversation

Snapshot = dict[tuple[str, str], list[Row]]


def snapshot(views: MemoryViewStore) -> Snapshot:
    """Every row of every table of every projection (active generations)."""
    return {
        (p.name, t.name): views.rows(p.name, t.name) for p in all_projections() for t in p.tables
    }


def reference(log: MemoryEventLog) -> Snapshot:
    """The views a log-fed rebuild builds on a fresh store: what the feed must build."""
    views = MemoryViewStore()
    rebuild(log, views, all_projections())
    return snapshot(views)


def history(v: Views) -> dict[str, UUID]:
    """Four sessions of two agents whose events interleave in the log, over two UTC days, with
    tool calls, an interruption, a resumption, context and two ends."""
    store, clock = v.store, v.clock
    a = conversation(v)  # acme / support-bot, 13 events
    b = store.create(tenant_id="acme", user_id="u-2", agent_id="support-bot").session_id
    c = store.create(tenant_id="beta", user_id="u-3", agent_id="sales-bot", channel="text")
    c_id = c.session_id
    for n in range(3):
        clock.advance(60)
        store.add_message(b, role="user", content=f"question {n}", input_tokens=n)
        store.add_message(c_id, role="user", content=f"price {n}?")
        store.record_turn(b, request_id=f"rb-{n}", duration_ms=100 * (n + 1), llm_ms=80)
        store.add_message(a, role="user", content=f"and {n}?")
    store.add_message(b, role="assistant", content="", tool_calls=[WEATHER])
    store.interrupt(b, reason="disconnect")
    clock.advance(12 * 3600)  # the next UTC day
    d = conversation(v, policy={"ttl_seconds": 3600, "retention_days": 3})
    store.resume(b)
    store.update_context(c_id, set={"cart": ["sku-9"]})
    store.record_turn(c_id, request_id="rc", duration_ms=2500, error=True, error_type="llm")
    store.end(c_id, status="abandoned", reason="hung up")
    store.add_message(d, role="assistant", content="", tool_calls=[WEATHER])
    store.end(d, status="failed")
    return {"a": a, "b": b, "c": c_id, "d": d}


@pytest.fixture
def v() -> Views:
    views = Views()
    history(views)
    return views


def feed_of(v: Views, views: MemoryViewStore | None = None) -> DeliveredFeed:
    return DeliveredFeed(v.log, views or v.views, v.projections)


def apply_all(feed: DeliveredFeed, events: Sequence[RecordedEvent], size: int) -> FeedResult:
    """Apply in batches of ``size``; the results summed."""
    totals = [0, 0, 0, 0]
    for start in range(0, len(events), size):
        result = feed.apply(events[start : start + size])
        for i, n in enumerate((result.received, result.applied, result.duplicates, result.healed)):
            totals[i] += n
    return FeedResult(*totals)


def by_session(events: Sequence[RecordedEvent]) -> dict[UUID, list[RecordedEvent]]:
    out: dict[UUID, list[RecordedEvent]] = {}
    for r in events:
        out.setdefault(r.event.session_id, []).append(r)
    return out


def test_the_history_is_worth_testing(v: Views) -> None:
    events = v.events()
    expected = reference(v.log)

    assert len(events) == 48
    assert all(expected.values()), "every table has rows"
    assert len(expected[("metrics", "agent_daily_metrics")]) == 4  # 2 agents, 2 days each
    assert [e.event.session_id for e in events] != [
        e.event.session_id for s in by_session(events).values() for e in s
    ], "sessions interleave in the log"


# ---------------------------------------------------------------------------------------------
# Once, twice, in any per-session order


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_every_event_delivered_once_in_log_order_builds_the_reference(v: Views, size: int) -> None:
    events = v.events()

    result = apply_all(feed_of(v), events, size)

    assert result == FeedResult(received=len(events), applied=len(events), duplicates=0, healed=0)
    assert snapshot(v.views) == reference(v.log)


def test_an_empty_delivery_changes_nothing(v: Views) -> None:
    feed = feed_of(v)

    assert feed.apply([]) == FeedResult(0, 0, 0, 0)
    assert not any(snapshot(v.views).values())


def test_a_whole_delivery_repeated_is_applied_once(v: Views) -> None:
    events = v.events()
    feed = feed_of(v)
    feed.apply(events)
    once = snapshot(v.views)

    again = feed.apply(events)

    assert again == FeedResult(received=len(events), applied=0, duplicates=len(events), healed=0)
    assert snapshot(v.views) == once == reference(v.log)


def test_duplicates_inside_one_batch_are_applied_once_and_counted(v: Views) -> None:
    events = v.events()

    result = feed_of(v).apply([e for r in events for e in (r, r)])

    assert result == FeedResult(
        received=2 * len(events), applied=len(events), duplicates=len(events), healed=0
    )
    assert snapshot(v.views) == reference(v.log)


def test_the_whole_batch_twice_in_one_delivery_is_applied_once(v: Views) -> None:
    events = v.events()

    result = feed_of(v).apply(events + events)

    assert (result.applied, result.duplicates) == (len(events), len(events))
    assert snapshot(v.views) == reference(v.log)


def test_redeliveries_of_parts_already_applied_are_skipped(v: Views) -> None:
    events = v.events()
    feed = feed_of(v)
    half = len(events) // 2

    first = feed.apply(events[:half])
    second = feed.apply(events[half // 2 :])  # a restart redelivers from an older offset

    assert first.applied + second.applied == len(events)
    assert second.duplicates == half - half // 2
    assert snapshot(v.views) == reference(v.log)


def _round_robin(sessions: list[list[RecordedEvent]]) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    queues = [list(s) for s in sessions]
    while any(queues):
        out.extend(queue.pop(0) for queue in queues if queue)
    return out


@pytest.mark.parametrize("order", ["sessions one after another", "reversed", "round robin"])
def test_sessions_interleaved_in_any_way_build_the_reference(v: Views, order: str) -> None:
    events = v.events()
    sessions = list(by_session(events).values())
    delivery = {
        "sessions one after another": [r for s in sessions for r in s],
        "reversed": [r for s in reversed(sessions) for r in s],
        "round robin": _round_robin(list(reversed(sessions))),
    }[order]
    assert delivery != events
    assert sorted(r.position for r in delivery) == [r.position for r in events]

    result = apply_all(feed_of(v), delivery, 5)

    assert result == FeedResult(len(events), len(events), 0, 0)
    assert snapshot(v.views) == reference(v.log)


def test_events_decoded_from_kafka_messages_build_the_reference(v: Views) -> None:
    codec = EventCodec()
    messages = [encode(r) for r in v.events()]

    apply_all(feed_of(v), [decode(m.value, codec, m.key) for m in messages], 10)

    assert snapshot(v.views) == reference(v.log)


# ---------------------------------------------------------------------------------------------
# Gaps are healed from the log


def _without(events: list[RecordedEvent], sid: UUID, version: int) -> list[RecordedEvent]:
    return [r for r in events if (r.event.session_id, r.event.version) != (sid, version)]


def _one(events: list[RecordedEvent], sid: UUID, version: int) -> RecordedEvent:
    [found] = [r for r in events if (r.event.session_id, r.event.version) == (sid, version)]
    return found


def test_a_missing_event_is_read_from_the_log_before_the_next_one(
    v: Views, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = v.events()
    sid = events[0].event.session_id
    v4 = _one(events, sid, 4)
    reads: list[tuple[UUID, int, int | None]] = []
    read_session = v.log.read_session

    def spy(session_id: UUID, **kw: Any) -> list[RecordedEvent]:
        reads.append((session_id, kw.get("after_version", 0), kw.get("to_version")))
        return read_session(session_id, **kw)

    monkeypatch.setattr(v.log, "read_session", spy)
    feed = feed_of(v)

    early = feed.apply(_without(events, sid, 4))  # v5 arrives, v4 not (yet)
    assert early == FeedResult(len(events) - 1, len(events) - 1, 0, healed=1)
    assert reads == [(sid, 3, 4)]  # exactly the gap, once
    assert snapshot(v.views) == reference(v.log)

    late = feed.apply([v4])  # v4 arrives after all: it was applied already
    assert late == FeedResult(1, 0, 1, 0)
    assert snapshot(v.views) == reference(v.log)


def test_a_late_event_in_the_same_batch_is_healed_then_skipped(v: Views) -> None:
    events = v.events()
    sid = events[0].event.session_id
    v4 = _one(events, sid, 4)
    delivery = _without(events, sid, 4)
    at_v5 = delivery.index(_one(events, sid, 5))
    delivery.insert(at_v5 + 1, v4)  # v5 then v4

    result = feed_of(v).apply(delivery)

    assert result == FeedResult(len(events), len(events) - 1, 1, healed=1)
    assert snapshot(v.views) == reference(v.log)


def test_a_session_delivered_from_its_last_event_is_healed_whole(v: Views) -> None:
    events = v.events()
    sid = events[0].event.session_id
    session = by_session(events)[sid]
    others = [r for r in events if r.event.session_id != sid]

    result = feed_of(v).apply([session[-1], *others, *session[:-1]])

    assert result.healed == len(session) - 1
    assert result.applied == len(others) + 1
    assert result.duplicates == len(session) - 1
    assert snapshot(v.views) == reference(v.log)


def test_an_event_never_delivered_is_still_applied_when_a_later_one_arrives(v: Views) -> None:
    events = v.events()
    sessions = by_session(events)
    lost = [s[len(s) // 2] for s in sessions.values()]  # one per session, never delivered
    delivery = [r for r in events if r not in lost]

    result = apply_all(feed_of(v), delivery, 3)

    assert result.healed == len(lost)
    assert result.applied + result.healed == len(events)
    assert snapshot(v.views) == reference(v.log)


# ---------------------------------------------------------------------------------------------
# Rebuilds from the log, and the log-fed runner


def _more(v: Views, sids: dict[str, UUID]) -> None:
    """New events after the first history: two old sessions go on, a new one starts."""
    v.clock.advance(90)
    v.store.add_message(sids["a"], role="assistant", content="Anything else?")
    v.store.end(sids["b"], status="completed")
    e = v.store.create(tenant_id="acme", user_id="u-9", agent_id="support-bot").session_id
    v.store.record_turn(e, request_id="re", duration_ms=42)
    v.store.record_turn(sids["a"], request_id="ra", duration_ms=7, output_tokens=3)


@pytest.mark.parametrize("rebuilt", ["metrics", "all"])
def test_after_a_rebuild_a_relay_restart_changes_nothing_and_new_events_apply(
    rebuilt: str,
) -> None:
    v = Views()
    sids = history(v)
    feed = feed_of(v)
    events = v.events()
    feed.apply(events)
    chosen = [p for p in v.projections if rebuilt in {"all", p.name}]

    rebuild(v.log, v.views, chosen)

    head = v.log.head()
    for p in chosen:
        generation = v.views.active_generation(p.name)
        assert generation == 2
        assert v.views.tracking(p.name, generation) == head
        assert not v.views.fed_from_kafka(p.name, generation)
    assert snapshot(v.views) == reference(v.log)

    again = apply_all(feed, events, 11)  # the relay restarted from the first offset

    assert again == FeedResult(len(events), 0, len(events), 0)
    assert snapshot(v.views) == reference(v.log)

    _more(v, sids)
    everything = v.events()
    new = everything[len(events) :]
    result = apply_all(feed, everything, 9)  # redelivered from the start, plus the new ones

    assert result == FeedResult(len(everything), len(new), len(events), 0)
    assert snapshot(v.views) == reference(v.log)
    assert all(v.views.fed_from_kafka(p.name, 2) for p in chosen)


def test_a_rebuild_while_the_feed_lags_is_not_applied_twice() -> None:
    v = Views()
    sids = history(v)
    events = v.events()
    feed = feed_of(v)
    feed.apply(events[: len(events) // 3])  # the relay is behind the log

    rebuild(v.log, v.views, v.projections)  # the rebuild reads everything the log has
    assert snapshot(v.views) == reference(v.log)

    _more(v, sids)
    rest = feed.apply(v.events()[len(events) // 3 :])

    assert rest.applied == len(v.events()) - len(events)
    assert rest.healed == 0
    assert snapshot(v.views) == reference(v.log)


def test_a_new_event_after_a_rebuild_heals_only_what_the_rebuild_did_not_read() -> None:
    v = Views()
    sids = history(v)
    feed = feed_of(v)
    rebuild(v.log, v.views, v.projections)
    before = len(v.events())
    _more(v, sids)
    new = v.events()[before:]

    first = feed.apply(new[-1:])  # only the last new event arrives (of session a)
    rest = feed.apply(new)

    assert first == FeedResult(1, 1, 0, healed=1)  # a's older events the rebuild applied
    assert rest == FeedResult(len(new), len(new) - 2, 2, 0)
    assert snapshot(v.views) == reference(v.log)


class HookedViews(MemoryViewStore):
    """Runs ``hook`` inside ``activate``, once: what a Kafka-fed worker might do right then."""

    hook: Any = None

    def activate(self, projection: Projection, generation: int) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        super().activate(projection, generation)


def test_an_event_fed_while_a_rebuild_switches_generations_is_not_lost() -> None:
    hooked = HookedViews()
    v = Views(views=hooked)
    sids = history(v)
    feed = feed_of(v)
    feed.apply(v.events())
    worker: list[threading.Thread] = []

    def end_and_feed_now() -> None:
        # After the rebuild's last catch-up and before its switch: a new event is appended and
        # a worker delivers it. Held back by the feed lock, it lands in the new generation.
        assert hooked._feed_lock.locked(), "the rebuild switches generations unlocked"
        v.store.end(sids["a"], status="completed")
        thread = threading.Thread(target=feed.apply, args=(v.events()[-1:],))
        thread.start()
        worker.append(thread)

    hooked.hook = end_and_feed_now
    rebuild(v.log, v.views, v.projections)
    worker[0].join(timeout=30)

    assert not worker[0].is_alive()
    assert snapshot(v.views) == reference(v.log)


class SwitchingViews(MemoryViewStore):
    """At the first load after ``armed`` is set, rebuilds every projection into a new generation
    and switches to it (dropping the old tables): what a rebuild that skipped the feed lock would
    do in the middle of a feed cycle."""

    log: Any = None
    armed = False

    def load(
        self, projection: str, generation: int, table: Table, keys: Sequence[Key]
    ) -> list[Row]:
        if self.armed:
            self.armed = False
            chosen = all_projections()
            generations = {p.name: self.start_generation(p) for p in chosen}
            ProjectionRunner(self.log, self, chosen, generations=generations).catch_up()
            for p in chosen:
                self.activate(p, generations[p.name])
        return super().load(projection, generation, table, keys)


def test_a_generation_switched_in_the_middle_of_a_cycle_is_retried_on_the_new_one() -> None:
    switching = SwitchingViews()
    v = Views(views=switching)
    history(v)
    switching.log = v.log
    feed = feed_of(v)
    events = v.events()
    feed.apply(events[:10])

    switching.armed = True
    result = feed.apply(events[10:])

    assert not switching.armed  # the switch happened inside the cycle
    state = next(p for p in v.projections if p.name == "session_state")
    with pytest.raises(StorageError, match="generation 1 does not exist"):
        switching.load(state.name, 1, state.tables[0], [])  # what the first try met
    assert {p.name: switching.active_generation(p.name) for p in v.projections} == dict.fromkeys(
        [p.name for p in v.projections], 2
    )
    # The new generation was built from the whole log: the retried cycle skips everything.
    assert result == FeedResult(len(events) - 10, 0, len(events) - 10, 0)
    assert snapshot(switching) == reference(v.log)


def test_the_log_fed_runner_refuses_generations_the_feed_wrote(v: Views) -> None:
    feed_of(v).apply(v.events()[:5])
    fed = snapshot(v.views)

    with pytest.raises(ProjectionFedFromKafka) as caught:
        ProjectionRunner(v.log, v.views, v.projections).catch_up()

    assert caught.value.projection == "session_state"
    assert caught.value.generation == 1
    assert snapshot(v.views) == fed  # nothing was applied twice
    for projection in v.projections:  # each one refuses on its own too
        with pytest.raises(ProjectionFedFromKafka):
            ProjectionRunner(v.log, v.views, [projection]).step()


def test_a_rebuild_switches_back_to_the_log_fed_runner(v: Views) -> None:
    first_session = v.events()[0].event.session_id
    feed_of(v).apply(v.events())

    assert rebuild(v.log, v.views, v.projections) == len(v.events())

    runner = ProjectionRunner(v.log, v.views, v.projections)
    assert runner.catch_up() == 0
    v.store.add_message(first_session, role="user", content="one more")
    assert runner.catch_up() == 1
    assert snapshot(v.views) == reference(v.log)
    assert not any(v.views.fed_from_kafka(p.name, 2) for p in v.projections)


def test_the_runner_refuses_only_the_projections_the_feed_wrote(v: Views) -> None:
    metrics = [p for p in v.projections if p.name == "metrics"]
    others = [p for p in v.projections if p.name != "metrics"]
    DeliveredFeed(v.log, v.views, metrics).apply(v.events())

    assert ProjectionRunner(v.log, v.views, others).catch_up() == len(v.events())
    with pytest.raises(ProjectionFedFromKafka):
        ProjectionRunner(v.log, v.views, v.projections).catch_up()
    assert snapshot(v.views) == reference(v.log)


# ---------------------------------------------------------------------------------------------
# Concurrent workers share per-agent rows under the feed lock


class WatchedViews(MemoryViewStore):
    """A memory view store that counts view reads and writes made outside the feed lock."""

    def __init__(self) -> None:
        super().__init__()
        self._owner: int | None = None
        self.unguarded = 0
        self.commits = 0

    @contextmanager
    def feed_lock(self) -> Iterator[None]:
        with super().feed_lock():
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None

    def _check(self) -> None:
        if self._owner != threading.get_ident():
            self.unguarded += 1

    def applied_versions(
        self, generations: Mapping[str, int], session_ids: Sequence[UUID]
    ) -> dict[str, dict[UUID, int]]:
        self._check()
        return super().applied_versions(generations, session_ids)

    def load(
        self, projection: str, generation: int, table: Table, keys: Sequence[Key]
    ) -> list[Row]:
        self._check()
        return super().load(projection, generation, table, keys)

    def commit(
        self,
        writes: Sequence[tuple[Projection, int, Batch]],
        moves: Sequence[tuple[Tracking, Any]],
        applied: Sequence[Applied] = (),
    ) -> None:
        self._check()
        self.commits += 1
        super().commit(writes, moves, applied)


def test_two_workers_on_disjoint_sessions_lose_no_shared_update(v: Views) -> None:
    events = v.events()
    sessions = list(by_session(events).values())
    # Each worker owns two sessions (its "partitions"); both write both agents' daily rows.
    mine = [
        r for r in events if r.event.session_id in {s[0].event.session_id for s in sessions[::2]}
    ]
    theirs = [r for r in events if r not in mine]
    views = WatchedViews()
    for projection in v.projections:
        views.ensure(projection)
    first, second = feed_of(v, views), feed_of(v, views)

    def deliver(feed: DeliveredFeed, delivery: list[RecordedEvent]) -> FeedResult:
        return apply_all(feed, delivery, 1)  # many small cycles: many chances to race

    results = run_together(lambda: deliver(first, mine), lambda: deliver(second, theirs))

    assert results == [
        FeedResult(len(mine), len(mine), 0, 0),
        FeedResult(len(theirs), len(theirs), 0, 0),
    ]
    assert views.unguarded == 0
    assert views.commits == len(events)
    assert snapshot(views) == reference(v.log)


def test_read_your_writes_waits_on_the_sessions_version_in_kafka_fed_views(v: Views) -> None:
    events = v.events()
    feed = feed_of(v)
    fed, held_back = events[:-1], events[-1]
    feed.apply(fed)
    last_fed = fed[-1]

    # The log position of Kafka-fed views does not move; the session's version does.
    assert v.views.tracking("session_state", 1) == LOG_START
    wait_for_position(v.log, v.views, "session_state", last_fed.position, timeout=1)
    with pytest.raises(ProjectionTimeout):
        wait_for_position(v.log, v.views, "session_state", held_back.position, timeout=0.05)

    feed.apply([held_back])
    wait_for_position(v.log, v.views, "session_state", held_back.position, timeout=1)
