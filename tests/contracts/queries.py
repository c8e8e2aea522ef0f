"""The query API (``projections.queries.SessionQueries``) and the cleanup job, written once and
run on memory, SQLite and PostgreSQL.

A backend's test module subclasses ``QueriesContract`` and provides four fixtures on one
database: ``log``, ``views`` (every projection has an active generation), ``queries`` over
them, and ``new_log``, a factory for a *new* event log on the same database (what a second
"process" would open). Queries read views, so every scenario runs the projections
(``project``) before it asks.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from sessionstore.domain.errors import (
    InvalidInput,
    ProjectionTimeout,
    SessionNotFound,
    UnknownProjection,
)
from sessionstore.domain.ports import LOG_START, AppendResult, EventLog
from sessionstore.domain.session import SessionStatus
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import EndStatus, Role, SessionEnded
from sessionstore.projections import all_projections
from sessionstore.projections.base import Projection, ViewStore
from sessionstore.projections.expiry import IDLE_REASON, TTL_REASON, expire_idle_sessions
from sessionstore.projections.metrics import BUCKETS_MS, bucket_of
from sessionstore.projections.queries import SessionQueries, SessionSummary
from sessionstore.projections.runner import ProjectionRunner, rebuild
from tests.concurrency import run_together

T0 = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
"""An hour before midnight UTC, so a scenario can cross into the next day."""


class Clock:
    """A store clock under the test's control; each reading is 1 ms after the previous one,
    so every event has its own time and creation order is well defined."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Written:
    """The highest log position the test's stores have written."""

    def __init__(self) -> None:
        self.last = 0
        self._lock = threading.Lock()

    def saw(self, position: int) -> None:
        with self._lock:
            self.last = max(self.last, position)


class RecordingStore(SessionStore):
    """A SessionStore that notes the position of every append it makes."""

    def __init__(self, log: EventLog, *, clock: Callable[[], datetime], written: Written) -> None:
        super().__init__(log, clock=clock)
        self.written = written

    def execute(self, *args: Any, **kwargs: Any) -> AppendResult:
        result = super().execute(*args, **kwargs)
        self.written.saw(result.position)
        return result


OpenStore = Callable[[Callable[[], datetime]], SessionStore]


@dataclass
class World:
    """Sessions of two tenants, in every status, created in this order."""

    clock: Clock
    ids: dict[str, UUID] = field(default_factory=dict)
    tenants: dict[UUID, str] = field(default_factory=dict)

    def ordered(self, *names: str) -> list[UUID]:
        return [self.ids[name] for name in names]


NAMES = ("a-active", "a-interrupted", "a-completed", "a-expired", "b-active", "b-user2", "a-user2")


class QueriesContract:
    # -- fixtures and helpers ---------------------------------------------------------------------

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def written(self) -> Written:
        self._written = Written()  # pytest runs a class's fixtures on the test's own instance
        return self._written

    @pytest.fixture
    def open_store(self, new_log: Callable[[], EventLog], written: Written) -> Iterator[OpenStore]:
        """A factory of SessionStores on the same database, each with a log of its own."""
        opened: list[SessionStore] = []

        def open_store(clock: Callable[[], datetime]) -> SessionStore:
            store = RecordingStore(new_log(), clock=clock, written=written)
            opened.append(store)
            return store

        yield open_store
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, open_store: OpenStore, clock: Clock) -> SessionStore:
        return open_store(clock)

    def project(
        self, log: EventLog, views: ViewStore, projections: Sequence[Projection] = ()
    ) -> int:
        """Run the projections until they have applied everything the test's stores wrote;
        return the number of events read.

        One catch-up is not always enough on PostgreSQL: a reader sees a committed event only
        once every older transaction in the cluster has finished (docs/decisions.md, "Global
        order without a table lock"), so while another client holds one open, the latest
        events are not readable yet. Poll until they are, with a deadline."""
        runner = ProjectionRunner(log, views, projections or all_projections())
        target = self._written.last
        deadline = time.monotonic() + 30
        read = 0
        while True:
            read += runner.catch_up()
            cursor = log.cursor_of(target) if target else LOG_START
            if cursor is not None and all(s.cursor >= cursor for s in runner.status()):
                return read
            if time.monotonic() > deadline:
                pytest.fail(f"the views did not reach position {target} within 30 s")

    @pytest.fixture
    def world(self, store: SessionStore, clock: Clock, log: EventLog, views: ViewStore) -> World:
        """Seven sessions (see NAMES), created a second apart, projected."""
        w = World(clock)

        def create(name: str, tenant: str, user: str = "u1", agent: str = "bot") -> UUID:
            clock.advance(seconds=1)
            sid = store.create(tenant_id=tenant, user_id=user, agent_id=agent).session_id
            w.ids[name], w.tenants[sid] = sid, tenant
            store.add_message(sid, role="user", content=f"hello from {name}")
            return sid

        create("a-active", "tenant-a")
        store.interrupt(create("a-interrupted", "tenant-a"), reason="disconnect")
        store.end(create("a-completed", "tenant-a", agent="other-bot"), status="completed")
        store.end(create("a-expired", "tenant-a"), status="expired", reason="idle timeout")
        create("b-active", "tenant-b")
        create("b-user2", "tenant-b", user="u2")
        create("a-user2", "tenant-a", user="u2")
        self.project(log, views)
        return w

    def page_through(self, queries: SessionQueries, limit: int, **filters: Any) -> list[UUID]:
        seen: list[UUID] = []
        cursor = None
        for _ in range(100):
            page = queries.list_sessions(limit=limit, cursor=cursor, **filters)
            assert len(page.items) <= limit
            seen += [s.session_id for s in page.items]
            cursor = page.next_cursor
            if cursor is None:
                return seen
        pytest.fail("paging never ended")

    # -- get_session ------------------------------------------------------------------------------

    def test_get_session_is_the_fold_of_the_log_with_the_last_position(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        sid = store.create(tenant_id="t", user_id="u", agent_id="a", metadata={"k": [1]}).session_id
        store.add_message(
            sid, role="assistant", tool_calls=[{"id": "c1", "name": "lookup", "arguments": {}}]
        )
        store.update_context(sid, set={"step": 2})
        last = store.record_turn(sid, request_id="r1", duration_ms=120.5, input_tokens=9)
        self.project(log, views)

        found = queries.get_session(sid)

        assert found.state == store.get(sid)
        assert found.last_position == last.position
        assert found.state.open_tool_call_ids == ("c1",)
        assert queries.get_session(str(sid), tenant_id="t").state.version == 4

    def test_get_session_of_an_unknown_or_other_tenants_session_is_not_found(
        self, world: World, queries: SessionQueries
    ) -> None:
        with pytest.raises(SessionNotFound):
            queries.get_session(uuid4())
        with pytest.raises(SessionNotFound):
            queries.get_session(world.ids["b-active"], tenant_id="tenant-a")
        with pytest.raises(InvalidInput, match="session_id"):
            queries.get_session("not-a-uuid")

    # -- list_sessions ----------------------------------------------------------------------------

    def test_list_without_filters_is_every_session_in_creation_order(
        self, world: World, queries: SessionQueries
    ) -> None:
        page = queries.list_sessions()
        assert [s.session_id for s in page.items] == world.ordered(*NAMES)
        assert page.next_cursor is None
        first = page.items[0]
        assert isinstance(first, SessionSummary)
        assert (first.tenant_id, first.user_id, first.agent_id) == ("tenant-a", "u1", "bot")
        assert (first.status, first.version, first.message_count) == (SessionStatus.ACTIVE, 2, 1)
        assert first.last_message_role is Role.USER
        assert first.last_message_preview == "hello from a-active"

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"status": "active"}, ("a-active", "b-active", "b-user2", "a-user2")),
            ({"status": "interrupted"}, ("a-interrupted",)),
            ({"status": "ended"}, ("a-completed", "a-expired")),
            ({"status": "expired"}, ("a-expired",)),
            ({"status": "completed"}, ("a-completed",)),
            ({"status": "failed"}, ()),
            ({"user_id": "u2"}, ("b-user2", "a-user2")),
            ({"agent_id": "other-bot"}, ("a-completed",)),
            ({"tenant_id": "tenant-b"}, ("b-active", "b-user2")),
            ({"tenant_id": "tenant-a", "status": "active"}, ("a-active", "a-user2")),
            ({"tenant_id": "tenant-a", "user_id": "u2", "agent_id": "bot"}, ("a-user2",)),
            ({"tenant_id": "nobody"}, ()),
        ],
    )
    def test_list_filters(
        self,
        world: World,
        queries: SessionQueries,
        filters: dict[str, Any],
        expected: tuple[str, ...],
    ) -> None:
        page = queries.list_sessions(**filters)
        assert [s.session_id for s in page.items] == world.ordered(*expected)

    def test_list_idle_for_compares_last_activity_with_now(
        self, world: World, queries: SessionQueries, store: SessionStore, clock: Clock
    ) -> None:
        # The sessions' last activity: 1 s apart, the newest is a-user2's message.
        newest = queries.get_session(world.ids["a-user2"]).state.last_activity_at
        oldest = queries.get_session(world.ids["a-active"]).state.last_activity_at
        assert newest is not None
        assert oldest is not None
        now = newest + timedelta(minutes=10)

        everything = queries.list_sessions(idle_for=timedelta(minutes=10), now=now)
        assert len(everything.items) == len(NAMES)  # last_activity_at <= now - idle_for
        longer = queries.list_sessions(idle_for=timedelta(minutes=10, microseconds=1), now=now)
        assert [s.session_id for s in longer.items] == world.ordered(*NAMES[:-1])
        nothing = queries.list_sessions(idle_for=timedelta(hours=1), now=now)
        assert nothing.items == ()
        only_first = queries.list_sessions(idle_for=now - oldest, now=now, status="active")
        assert [s.session_id for s in only_first.items] == world.ordered("a-active")

    @pytest.mark.parametrize("limit", [1, 2, 3, 7, 500])
    def test_paging_yields_every_session_exactly_once_in_order(
        self, world: World, queries: SessionQueries, limit: int
    ) -> None:
        assert self.page_through(queries, limit) == world.ordered(*NAMES)
        assert self.page_through(queries, limit, tenant_id="tenant-a", status="active") == (
            world.ordered("a-active", "a-user2")
        )

    def test_paging_is_stable_when_sessions_share_a_creation_time(
        self, open_store: OpenStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        frozen = datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
        same_time = open_store(lambda: frozen)
        ids = [
            same_time.create(tenant_id="t", user_id="u", agent_id="a").session_id for _ in range(9)
        ]
        self.project(log, views)
        assert self.page_through(queries, 2, tenant_id="t") == sorted(ids)  # then by id

    def test_a_page_ends_with_a_cursor_only_when_more_follow(
        self, world: World, queries: SessionQueries
    ) -> None:
        full = queries.list_sessions(limit=len(NAMES))
        assert len(full.items) == len(NAMES)
        assert full.next_cursor is None
        partial = queries.list_sessions(limit=len(NAMES) - 1)
        assert partial.next_cursor is not None
        rest = queries.list_sessions(cursor=partial.next_cursor)
        assert [s.session_id for s in rest.items] == world.ordered(NAMES[-1])
        assert rest.next_cursor is None

    @pytest.mark.parametrize(
        ("filters", "field"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"status": "sleeping"}, "status"),
            ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
            ({"cursor": "%%%"}, "cursor"),
            ({"idle_for": timedelta(seconds=-1)}, "idle_for"),
            ({"idle_for": timedelta(1), "now": datetime(2026, 1, 1)}, "now"),  # noqa: DTZ001
            ({"idle_for": timedelta.max}, "idle_for"),
            ({"user_id": "u\x00"}, "user_id"),
            ({"agent_id": "\x00"}, "agent_id"),
            ({"tenant_id": "t\x00"}, "tenant_id"),
            ({"tenant_id": "t\ud800"}, "tenant_id"),
        ],
    )
    def test_list_rejects_bad_requests_naming_the_field(
        self, queries: SessionQueries, filters: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(InvalidInput) as raised:
            queries.list_sessions(**filters)
        assert raised.value.errors[0]["field"] == field

    def test_every_query_refuses_text_the_contract_refuses(
        self, world: World, queries: SessionQueries
    ) -> None:
        """A NUL in a filter is the caller's mistake (InvalidInput), never a storage error."""
        sid = world.ids[NAMES[0]]
        calls: list[Callable[[], object]] = [
            lambda: queries.get_session(sid, tenant_id="t\x00"),
            lambda: queries.transcript(sid, tenant_id="t\x00"),
            lambda: queries.last_messages(sid, 5, tenant_id="t\x00"),
            lambda: queries.session_metrics(sid, tenant_id="t\x00"),
            lambda: queries.agent_metrics("a\x00"),
            lambda: queries.agent_metrics("a", tenant_id="\x00"),
            lambda: queries.cleanup_candidates(now=datetime.now(UTC), tenant_id="\x00"),
        ]
        for call in calls:
            with pytest.raises(InvalidInput) as raised:
                call()
            assert "NUL" in raised.value.errors[0]["message"]

    # -- transcripts ------------------------------------------------------------------------------

    def conversation(self, store: SessionStore, tenant: str = "t") -> tuple[UUID, int]:
        """A session whose interruption aborts an open tool call; returns (id, last position)."""
        sid = store.create(tenant_id=tenant, user_id="u", agent_id="a").session_id
        store.add_message(sid, role="system", content="be brief")
        store.add_message(sid, role="user", content="book a table")
        store.add_message(
            sid,
            role="assistant",
            tool_calls=[
                {"id": "c1", "name": "check", "arguments": {"day": "Fri"}},
                {"id": "c2", "name": "hold", "arguments": {}},
            ],
        )
        store.add_message(sid, role="tool", tool_call_id="c1", content='{"free": true}')
        store.interrupt(sid, reason="disconnect")  # aborts c2
        store.resume(sid)
        store.add_message(sid, role="user", content="still there?", input_tokens=3)
        last = store.add_message(sid, role="assistant", content="yes", output_tokens=1)
        return sid, last.position

    def test_transcript_is_every_message_in_order_with_aborted_tool_calls(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        sid, last_position = self.conversation(store)
        self.project(log, views)

        entries = queries.transcript(sid)

        assert [(e.version, e.seq, e.role.value) for e in entries] == [
            (2, 0, "system"),
            (3, 0, "user"),
            (4, 0, "assistant"),
            (5, 0, "tool"),
            (6, 1, "tool"),
            (8, 0, "user"),
            (9, 0, "assistant"),
        ]
        call = entries[2]
        assert [dict(c) for c in call.tool_calls] == [
            {"id": "c1", "name": "check", "arguments": {"day": "Fri"}},
            {"id": "c2", "name": "hold", "arguments": {}},
        ]
        aborted = entries[4]
        assert (aborted.aborted, aborted.tool_call_id, aborted.message_id) == (True, "c2", None)
        assert "aborted" in aborted.content
        assert entries[1].content == "book a table"
        assert entries[3].aborted is False
        assert entries[5].input_tokens == 3
        assert entries[-1].output_tokens == 1
        assert entries[-1].position == last_position
        assert all(e.session_id == sid for e in entries)
        assert entries[0].occurred_at.tzinfo is not None

    def test_last_messages_are_the_newest_n_oldest_first(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        sid, _ = self.conversation(store)
        self.project(log, views)
        everything = queries.transcript(sid)

        assert queries.last_messages(sid, 3) == everything[-3:]
        assert queries.last_messages(sid, 1) == everything[-1:]
        assert queries.last_messages(sid, 100) == everything
        assert [e.content for e in queries.last_messages(sid, 2)] == ["still there?", "yes"]

    def test_a_long_transcript_tail(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        sid = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        for n in range(1, 121):
            store.add_message(sid, role="user" if n % 2 else "assistant", content=f"m{n}")
        self.project(log, views)

        assert [e.content for e in queries.last_messages(sid, 20)] == [
            f"m{n}" for n in range(101, 121)
        ]
        assert [e.version for e in queries.transcript(sid)] == list(range(2, 122))

    def test_transcript_of_a_session_without_messages_is_empty_of_an_unknown_one_not_found(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        sid = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        self.project(log, views)
        assert queries.transcript(sid) == []
        assert queries.last_messages(sid, 5) == []
        with pytest.raises(SessionNotFound):
            queries.transcript(uuid4())
        with pytest.raises(SessionNotFound):
            queries.last_messages(uuid4(), 5)
        with pytest.raises(SessionNotFound):
            queries.transcript(sid, tenant_id="someone-else")
        for bad in (0, -1, 10_001):
            with pytest.raises(InvalidInput, match="n: must be an integer from 1 to 10000"):
                queries.last_messages(sid, bad)

    # -- metrics ----------------------------------------------------------------------------------

    def test_session_metrics(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        sid = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        store.record_turn(sid, request_id="r1", duration_ms=100, llm_ms=60, stt_ms=10)
        store.record_turn(sid, request_id="r2", duration_ms=300, llm_ms=200, input_tokens=7)
        store.record_turn(sid, request_id="r3", duration_ms=50.5, error=True, error_type="timeout")
        quiet = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        self.project(log, views)

        m = queries.session_metrics(sid)

        assert (m.session_id, m.tenant_id, m.agent_id) == (sid, "t", "a")
        assert (m.requests, m.errors) == (3, 1)
        assert m.error_rate == pytest.approx(1 / 3)
        assert m.total_ms == pytest.approx(450.5)
        assert m.mean_ms == pytest.approx(450.5 / 3, abs=0.001)
        assert m.stages.llm_ms == pytest.approx(130)
        assert m.stages.stt_ms == pytest.approx(10)
        assert m.stages.tts_ms is None
        assert (m.input_tokens, m.output_tokens) == (7, 0)
        assert m.first_turn_at is not None
        assert m.last_turn_at is not None
        assert m.first_turn_at < m.last_turn_at

        none = queries.session_metrics(quiet)
        assert (none.requests, none.error_rate, none.mean_ms) == (0, None, None)
        with pytest.raises(SessionNotFound):
            queries.session_metrics(uuid4())
        with pytest.raises(SessionNotFound):
            queries.session_metrics(sid, tenant_id="other")

    def test_agent_metrics_sum_days_and_merge_histograms(
        self,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        day1, day2 = T0.date(), T0.date() + timedelta(days=1)
        durations = {day1: [12.0, 95.0, 110.0, 2400.0], day2: [30.0, 31.0, 8000.0]}
        for day, values in durations.items():
            clock.now = datetime(day.year, day.month, day.day, 23, 0, tzinfo=UTC)
            sid = store.create(tenant_id="t", user_id="u", agent_id="voice").session_id
            for n, ms in enumerate(values):
                store.record_turn(sid, request_id=f"r{n}", duration_ms=ms, error=ms > 5000)
            store.interrupt(sid, reason="disconnect")
            if day == day1:
                store.resume(sid)
                store.end(sid, status="completed")
        other = store.create(tenant_id="t2", user_id="u", agent_id="voice").session_id
        store.record_turn(other, request_id="x", duration_ms=1.0)
        store.create(tenant_id="t", user_id="u", agent_id="chat")
        self.project(log, views)

        both = queries.agent_metrics("voice", tenant_id="t")
        assert (both.agent_id, both.tenant_id, both.days) == ("voice", "t", 2)
        assert (both.sessions_started, both.sessions_completed) == (2, 1)
        assert (both.turns, both.error_turns, both.interrupts, both.resumes) == (7, 1, 2, 1)
        assert both.error_rate == pytest.approx(1 / 7)
        assert both.resume_rate == pytest.approx(1 / 2)
        assert both.total_ms == pytest.approx(sum(durations[day1] + durations[day2]))
        everything = sorted(durations[day1] + durations[day2])
        for p, got in ((50, both.p50_ms), (95, both.p95_ms), (99, both.p99_ms)):
            nth = everything[math.ceil(p * len(everything) / 100) - 1]
            assert got == BUCKETS_MS[bucket_of(nth)], p  # the bucket holding the p-th value
            assert got >= nth
        assert sum(both.latency_histogram) == 7

        first = queries.agent_metrics("voice", tenant_id="t", from_day=day1, to_day=day1)
        assert (first.days, first.turns, first.sessions_started) == (1, 4, 1)
        assert first.p99_ms == BUCKETS_MS[bucket_of(2400.0)]
        second = queries.agent_metrics("voice", tenant_id="t", from_day=day2)
        assert (second.turns, second.resumes, second.resume_rate) == (3, 0, 0.0)

        all_tenants = queries.agent_metrics("voice")
        assert (all_tenants.tenant_id, all_tenants.turns, all_tenants.sessions_started) == (
            None,
            8,
            3,
        )
        assert all_tenants.days == 2  # distinct days, though two tenants were active on one

        idle = queries.agent_metrics("voice", tenant_id="t", to_day=day1 - timedelta(days=1))
        assert (idle.days, idle.turns, idle.error_rate, idle.resume_rate) == (0, 0, None, None)
        assert (idle.p50_ms, idle.p95_ms, idle.p99_ms, idle.mean_ms) == (None, None, None, None)
        assert queries.agent_metrics("chat").sessions_started == 1
        with pytest.raises(InvalidInput, match="from_day"):
            queries.agent_metrics("voice", from_day=day2, to_day=day1)

    # -- cleanup candidates -----------------------------------------------------------------------

    def test_cleanup_candidates_idle_expirable_and_past_retention(
        self,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        def create(**policy: int | None) -> UUID:
            return store.create(tenant_id="t", user_id="u", agent_id="a", policy=policy).session_id

        idle = create(idle_timeout_seconds=60)
        idle_later = create(idle_timeout_seconds=120)
        ttl = create(idle_timeout_seconds=None, ttl_seconds=90)
        kept = create(idle_timeout_seconds=None, retention_days=None)
        retained = create(idle_timeout_seconds=60, retention_days=1)
        store.end(retained, status="completed")
        clock.advance(seconds=30)
        busy = create(idle_timeout_seconds=60)
        store.interrupt(create(idle_timeout_seconds=60), reason="timeout")
        self.project(log, views)

        early = queries.cleanup_candidates(now=T0 + timedelta(seconds=50))
        assert (early.idle, early.expirable, early.past_retention) == ((), (), ())

        later = T0 + timedelta(seconds=100)
        due = queries.cleanup_candidates(now=later)
        assert due.now == later
        assert [c.session_id for c in due.idle] == [idle, busy, due.idle[2].session_id]
        assert due.idle[2].status is SessionStatus.INTERRUPTED
        assert [c.session_id for c in due.expirable] == [ttl]
        assert due.past_retention == ()
        first = due.idle[0]
        assert (first.tenant_id, first.status, first.version) == ("t", SessionStatus.ACTIVE, 1)
        assert first.idle_deadline is not None
        assert first.idle_deadline <= later
        assert due.expirable[0].expires_at is not None

        much_later = queries.cleanup_candidates(now=T0 + timedelta(days=2), limit=2)
        assert [c.session_id for c in much_later.idle] == [idle, busy]  # the limit is per list
        everything = queries.cleanup_candidates(now=T0 + timedelta(days=2))
        assert [c.session_id for c in everything.idle][:4] == [
            idle,
            busy,
            everything.idle[2].session_id,
            idle_later,
        ]
        assert [c.session_id for c in much_later.past_retention] == [retained]
        assert much_later.past_retention[0].status is SessionStatus.ENDED
        assert kept not in {c.session_id for c in much_later.idle + much_later.expirable}
        with pytest.raises(InvalidInput, match="now"):
            queries.cleanup_candidates(now=datetime(2026, 1, 1))  # noqa: DTZ001

    # -- tenant isolation -------------------------------------------------------------------------

    def test_a_tenants_queries_never_return_another_tenants_rows(
        self,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        own, _ = self.conversation(store, tenant="tenant-a")
        theirs, _ = self.conversation(store, tenant="tenant-b")
        for sid in (own, theirs):  # same user, agent and policy on both sides
            store.record_turn(sid, request_id="r", duration_ms=10)
        self.project(log, views)
        later = clock.now + timedelta(days=30)

        assert self.page_through(queries, 1, tenant_id="tenant-a") == [own]
        same_user = queries.list_sessions(tenant_id="tenant-a", user_id="u", agent_id="a")
        assert [s.session_id for s in same_user.items] == [own]
        for call in (
            queries.get_session,
            queries.transcript,
            queries.session_metrics,
            lambda sid, tenant_id: queries.last_messages(sid, 5, tenant_id=tenant_id),
        ):
            with pytest.raises(SessionNotFound):
                call(theirs, tenant_id="tenant-a")
            assert call(own, tenant_id="tenant-a")
        assert queries.agent_metrics("a", tenant_id="tenant-a").sessions_started == 1
        assert queries.agent_metrics("a").sessions_started == 2
        due = queries.cleanup_candidates(now=later, tenant_id="tenant-a")
        assert {c.tenant_id for c in due.idle} == {"tenant-a"}
        assert [c.session_id for c in due.idle] == [own]

    # -- read-your-writes -------------------------------------------------------------------------

    def test_wait_for_returns_once_a_runner_in_another_thread_catches_up(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        sid = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        written = store.add_message(sid, role="user", content="read me back")
        with pytest.raises(ProjectionTimeout):
            queries.wait_for(written.position, timeout=0)  # nobody has run the views yet

        go = threading.Event()
        caught_up: list[int] = []

        def runner() -> None:
            go.wait(10)
            caught_up.append(self.project(log, views))

        thread = threading.Thread(target=runner)
        thread.start()
        try:
            go.set()
            queries.wait_for(written.position, timeout=30)
        finally:
            thread.join(30)
        assert caught_up == [2]
        assert queries.get_session(sid).state.version == written.version
        assert queries.last_messages(sid, 1)[0].content == "read me back"
        queries.wait_for(0, timeout=0)  # the log start is always reached

    def test_wait_for_times_out_with_the_view_and_positions_when_nobody_runs_it(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        first = store.create(tenant_id="t", user_id="u", agent_id="a")
        self.project(log, views)
        second = store.add_message(first.session_id, role="user", content="unseen")

        with pytest.raises(ProjectionTimeout) as raised:
            queries.wait_for(second.position, views=["transcript"], timeout=0.05)

        e = raised.value
        assert (e.projection, e.position, e.reached) == ("transcript", second.position, 1)
        assert "did not reach position" in e.message
        assert "sessionstore projections run" in e.message
        assert queries.get_session(first.session_id).state.version == 1  # still the old view

    def test_wait_for_only_the_named_views(
        self, store: SessionStore, queries: SessionQueries, log: EventLog, views: ViewStore
    ) -> None:
        written = store.create(tenant_id="t", user_id="u", agent_id="a")
        transcript = [p for p in all_projections() if p.name == "transcript"]
        self.project(log, views, transcript)

        queries.wait_for(written.position, views=["transcript"], timeout=5)
        with pytest.raises(ProjectionTimeout) as raised:
            queries.wait_for(written.position, timeout=0.01)  # every view: the others lag
        assert raised.value.projection == "session_state"
        with pytest.raises(UnknownProjection, match="nope"):
            queries.wait_for(written.position, views=["nope"], timeout=1)
        with pytest.raises(InvalidInput, match="position"):
            queries.wait_for(-1)

    # -- rebuilds ---------------------------------------------------------------------------------

    def test_queries_answer_from_the_active_generation_during_a_rebuild(
        self,
        world: World,
        store: SessionStore,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        before = queries.list_sessions()
        state = next(p for p in all_projections() if p.name == "session_state")
        fresh = views.start_generation(state)  # a rebuild has started: its tables are empty
        assert queries.list_sessions() == before
        assert queries.get_session(world.ids["a-active"]).state.version == 2

        ProjectionRunner(log, views, [state], generations={state.name: fresh}).catch_up()
        views.activate(state, fresh)
        assert queries.list_sessions() == before
        rebuild(log, views, state)
        assert queries.list_sessions() == before

    # -- the cleanup job --------------------------------------------------------------------------

    def idle_sessions(
        self, store: SessionStore, clock: Clock, count: int, **policy: int | None
    ) -> list[UUID]:
        ids = []
        for n in range(count):
            sid = store.create(
                tenant_id="t",
                user_id=f"u{n}",
                agent_id="a",
                policy={"idle_timeout_seconds": 60, **policy},
            ).session_id
            store.add_message(sid, role="user", content="hi")
            ids.append(sid)
        clock.advance(minutes=5)
        return ids

    def ended(self, store: SessionStore, sid: UUID) -> list[SessionEnded]:
        return [r.event for r in store.history(sid) if isinstance(r.event, SessionEnded)]

    def test_cleanup_expires_idle_sessions_through_the_domain(
        self,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        ids = self.idle_sessions(store, clock, 3)
        fresh = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        self.project(log, views)
        now = clock.now

        report = expire_idle_sessions(store, queries, now=now)

        assert (report.expired, report.skipped, report.already_done) == (3, 0, 0)
        assert {r.session_id for r in report.results} == set(ids)
        assert {r.reason for r in report.results} == {IDLE_REASON}
        for sid in ids:
            (end,) = self.ended(store, sid)
            assert (end.status, end.reason, end.version) == (EndStatus.EXPIRED, IDLE_REASON, 3)
        assert store.get(fresh).status is SessionStatus.ACTIVE
        assert report.last_position == max(store.history(sid)[-1].position for sid in ids)
        assert report.now == now

        self.project(log, views)
        queries.wait_for(report.last_position, timeout=0)  # read-your-writes: views have it
        assert [s.session_id for s in queries.list_sessions(status="expired").items] == ids
        again = expire_idle_sessions(store, queries, now=clock.now)
        assert again.results == ()

    def test_cleanup_expires_sessions_past_their_ttl_and_reports_retention(
        self,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        (ttl,) = self.idle_sessions(store, clock, 1, idle_timeout_seconds=None, ttl_seconds=60)
        (both,) = self.idle_sessions(store, clock, 1, ttl_seconds=30)  # TTL passed first
        old = store.create(
            tenant_id="t", user_id="u", agent_id="a", policy={"retention_days": 1}
        ).session_id
        store.end(old, status="completed")
        clock.advance(days=2)
        self.project(log, views)

        report = expire_idle_sessions(store, queries, now=clock.now)

        assert {r.session_id: r.reason for r in report.results} == {
            ttl: TTL_REASON,
            both: TTL_REASON,
        }
        assert [c.session_id for c in report.past_retention] == [old]
        assert [len(store.history(sid)) for sid in (ttl, both, old)] == [3, 3, 2]
        assert self.ended(store, old)[0].status is EndStatus.COMPLETED  # reported only

    def test_cleanup_skips_a_session_that_changed_after_the_view_was_read(
        self,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        quiet, woken = self.idle_sessions(store, clock, 2)
        self.project(log, views)
        store.add_message(woken, role="user", content="I'm back")  # the view has not seen it

        report = expire_idle_sessions(store, queries, now=clock.now)

        assert (report.expired, report.skipped, report.already_done) == (1, 1, 0)
        skipped = next(r for r in report.results if r.outcome == "skipped")
        assert skipped.session_id == woken
        assert "expected version 2" in skipped.detail
        assert store.get(woken).status is SessionStatus.ACTIVE
        assert store.get(quiet).end_status is EndStatus.EXPIRED

    def test_cleanup_run_again_before_the_view_catches_up_replays_instead_of_appending(
        self,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        ids = self.idle_sessions(store, clock, 2)
        self.project(log, views)
        first = expire_idle_sessions(store, queries, now=clock.now)

        second = expire_idle_sessions(store, queries, now=clock.now + timedelta(hours=1))

        assert (first.expired, second.expired, second.already_done) == (2, 0, 2)
        assert [r.position for r in second.results] == [r.position for r in first.results]
        assert [len(store.history(sid)) for sid in ids] == [3, 3]  # nothing appended twice
        assert all(len(self.ended(store, sid)) == 1 for sid in ids)

    def test_two_cleanup_jobs_at_once_append_one_end_per_session(
        self,
        open_store: OpenStore,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        *,
        views: ViewStore,
    ) -> None:
        ids = self.idle_sessions(store, clock, 12)
        self.project(log, views)
        one, two = open_store(Clock(clock.now)), open_store(Clock(clock.now))

        reports = run_together(
            lambda: expire_idle_sessions(one, queries, now=clock.now),
            lambda: expire_idle_sessions(two, queries, now=clock.now),
        )

        a, b = reports
        assert not isinstance(a, BaseException), a
        assert not isinstance(b, BaseException), b
        assert a.expired + b.expired == 12
        assert a.already_done + b.already_done == 12
        assert a.skipped == b.skipped == 0
        for sid in ids:
            history = store.history(sid)
            assert len(history) == 3  # created, a message, one end
            (end,) = self.ended(store, sid)
            assert end.status is EndStatus.EXPIRED

    def test_cleanup_only_touches_the_given_tenant(
        self,
        store: SessionStore,
        clock: Clock,
        queries: SessionQueries,
        log: EventLog,
        views: ViewStore,
    ) -> None:
        mine = store.create(tenant_id="a", user_id="u", agent_id="x").session_id
        theirs = store.create(tenant_id="b", user_id="u", agent_id="x").session_id
        clock.advance(hours=1)
        self.project(log, views)

        report = expire_idle_sessions(store, queries, now=clock.now, tenant_id="a", limit=5)

        assert [r.session_id for r in report.results] == [mine]
        assert store.get(theirs).status is SessionStatus.ACTIVE
