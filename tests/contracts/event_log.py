"""Behaviour every backend must share, written once and run on memory, SQLite and PostgreSQL.

A backend's test module subclasses ``EventLogContract`` and provides ``open_log``: a fixture
returning a factory that opens a *new* log object on the same storage (a second "process").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from sessionstore.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidTransition,
    SessionAlreadyExists,
    SessionNotFound,
    StreamVersionTaken,
)
from sessionstore.domain.ports import (
    LOG_START,
    EventLog,
    IdempotencyClaim,
    IdempotencyKeyExists,
    LogCursor,
)
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import MessageAdded, Role, SessionCreated, SessionEvent

OpenLog = Callable[[], EventLog]
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def created(session_id: UUID, tenant: str = "acme") -> SessionCreated:
    return SessionCreated(
        session_id=session_id,
        version=1,
        occurred_at=T0,
        event_id=uuid4(),
        tenant_id=tenant,
        user_id="user-1",
        agent_id="agent-1",
        channel="voice",
        metadata={"locale": "de-DE", "nested": {"ok": True, "n": [1, 2.5, None]}},
    )


def message(session_id: UUID, version: int, content: str = "hello") -> MessageAdded:
    return MessageAdded(
        session_id=session_id,
        version=version,
        occurred_at=T0 + timedelta(seconds=version),
        event_id=uuid4(),
        message_id=f"m{version}",
        role=Role.USER,
        content=content,
    )


def whole_log(log: EventLog) -> list[tuple[UUID, int]]:
    """Every event in the log as (session_id, version), read page by page."""
    seen: list[tuple[UUID, int]] = []
    cursor = LOG_START
    while page := log.read_log(cursor, limit=3):
        seen.extend((r.event.session_id, r.event.version) for r in page)
        cursor = page[-1].cursor
    return seen


class EventLogContract:
    @pytest.fixture
    def log(self, open_log: OpenLog) -> Iterator[EventLog]:
        log = open_log()
        yield log
        log.close()

    @pytest.fixture
    def store(self, log: EventLog) -> SessionStore:
        return SessionStore(log)

    # --- the log itself ----------------------------------------------------------------------

    def test_appended_events_read_back_equal_in_version_order(self, log: EventLog) -> None:
        sid = uuid4()
        events: list[SessionEvent] = [
            created(sid),
            message(sid, 2, "grüß dich 👋"),
            message(sid, 3),
        ]
        first = log.append(events[:1], tenant_id="acme")
        rest = log.append(events[1:], tenant_id="acme")

        assert (first.version, first.events) == (1, 1)
        assert (rest.version, rest.events) == (3, 2)
        recorded = log.read_session(sid)
        assert [r.event for r in recorded] == events
        assert [r.tenant_id for r in recorded] == ["acme"] * 3
        positions = [r.position for r in recorded]
        assert positions == sorted(positions)
        assert len(set(positions)) == 3
        assert rest.position == positions[-1]
        assert all(r.recorded_at.tzinfo is not None for r in recorded)

    def test_no_append_in_flight_has_no_age(self, log: EventLog, store: SessionStore) -> None:
        assert log.oldest_append_seconds() is None
        store.create(tenant_id="t", user_id="u", agent_id="a")
        assert log.oldest_append_seconds() is None  # the append ended with its statement

    def test_read_session_windows(self, log: EventLog) -> None:
        sid = uuid4()
        log.append([created(sid), *[message(sid, v) for v in range(2, 8)]], tenant_id="acme")

        def versions(**kwargs: int) -> list[int]:
            return [r.event.version for r in log.read_session(sid, **kwargs)]

        assert versions(after_version=4) == [5, 6, 7]
        assert versions(to_version=3) == [1, 2, 3]
        assert versions(after_version=2, to_version=5) == [3, 4, 5]
        assert versions(after_version=1, limit=2) == [2, 3]
        assert log.read_session(uuid4()) == []

    def test_a_taken_version_is_refused_and_nothing_is_written(self, log: EventLog) -> None:
        sid = uuid4()
        log.append([created(sid), message(sid, 2)], tenant_id="acme")
        before = whole_log(log)

        with pytest.raises(StreamVersionTaken) as caught:
            log.append([message(sid, 2, "again")], tenant_id="acme")
        assert caught.value.session_id == sid
        # A batch whose second event collides writes neither event.
        with pytest.raises(StreamVersionTaken):
            log.append([message(sid, 3), message(sid, 2)], tenant_id="acme")

        assert whole_log(log) == before
        assert [r.event.content for r in log.read_session(sid, after_version=1)] == ["hello"]  # type: ignore[attr-defined]

    def test_idempotency_key_is_stored_with_the_events_and_refused_twice(
        self, log: EventLog
    ) -> None:
        sid = uuid4()
        log.append([created(sid)], tenant_id="acme")
        claim = IdempotencyClaim(key="req-1", request_hash="h1")
        result = log.append([message(sid, 2)], tenant_id="acme", idempotency=claim)

        stored = log.find_idempotency("req-1")
        assert stored is not None
        assert (stored.session_id, stored.request_hash) == (sid, "h1")
        assert (stored.first_version, stored.last_version, stored.position) == (
            2,
            2,
            result.position,
        )
        before = whole_log(log)
        with pytest.raises(IdempotencyKeyExists) as caught:
            log.append([message(sid, 3)], tenant_id="acme", idempotency=claim)
        assert caught.value.stored == stored
        assert whole_log(log) == before
        assert log.find_idempotency("never-used") is None

    def test_a_version_conflict_does_not_store_the_key(self, log: EventLog) -> None:
        sid = uuid4()
        log.append([created(sid), message(sid, 2)], tenant_id="acme")
        with pytest.raises(StreamVersionTaken):
            log.append([message(sid, 2)], tenant_id="acme", idempotency=IdempotencyClaim("k", "h"))
        assert log.find_idempotency("k") is None

    def test_global_log_is_in_append_order_and_pages_without_gaps(self, log: EventLog) -> None:
        a, b = uuid4(), uuid4()
        appended = []
        for event in [created(a), created(b), message(a, 2), message(b, 2), message(a, 3)]:
            log.append([event], tenant_id="acme")
            appended.append((event.session_id, event.version))

        ours = [entry for entry in whole_log(log) if entry[0] in {a, b}]
        assert ours == appended
        everything = log.read_log(LOG_START, limit=10_000)
        cursors = [r.cursor for r in everything]
        assert cursors == sorted(cursors)
        assert log.read_log(everything[-1].cursor) == []

    def test_reading_after_a_cursor_excludes_it(self, log: EventLog) -> None:
        sid = uuid4()
        log.append([created(sid), message(sid, 2), message(sid, 3)], tenant_id="acme")
        start = [r for r in log.read_log(LOG_START, limit=10_000) if r.event.session_id == sid]
        after_first = log.read_log(start[0].cursor, limit=10_000)
        assert [r.event.version for r in after_first if r.event.session_id == sid] == [2, 3]
        assert isinstance(start[0].cursor, LogCursor)

    def test_a_position_locates_its_session_and_version(self, log: EventLog) -> None:
        a, b = uuid4(), uuid4()
        first = log.append([created(a), message(a, 2)], tenant_id="acme")
        second = log.append([created(b)], tenant_id="acme")
        assert log.locate(first.position) == (a, 2)
        assert log.locate(first.position - 1) == (a, 1)
        assert log.locate(second.position) == (b, 1)
        assert log.locate(second.position + 1000) is None
        assert log.locate(0) is None

    def test_event_ids_locate_their_session_version_and_position(self, log: EventLog) -> None:
        a = uuid4()
        first, second = created(a), message(a, 2)
        result = log.append([first, second], tenant_id="acme")
        found = log.locate_events([second.event_id, uuid4(), first.event_id])
        assert found == {
            first.event_id: (a, 1, result.position - 1),
            second.event_id: (a, 2, result.position),
        }
        assert log.locate_events([]) == {}

    # --- the store on this backend -----------------------------------------------------------

    def test_store_round_trip(self, store: SessionStore) -> None:
        sid = store.create(tenant_id="acme", user_id="u", agent_id="a", channel="phone").session_id
        store.add_message(
            sid,
            role="assistant",
            tool_calls=[{"id": "c1", "name": "lookup", "arguments": {"q": "x"}}],
        )
        store.add_message(sid, role="tool", tool_call_id="c1", content='{"hits": 1}')
        store.record_turn(sid, request_id="r1", duration_ms=812.5, llm_ms=600, tts_ms=150)
        store.update_context(sid, set={"step": "confirm"})
        store.interrupt(sid, reason="disconnect")
        store.resume(sid)
        store.end(sid, status="completed")

        state = store.get(sid)
        assert (state.version, state.message_count, state.turn_count) == (8, 2, 1)
        assert (state.interrupt_count, state.resume_count) == (1, 1)
        assert state.end_status is not None
        assert state.end_status.value == "completed"
        assert dict(state.context) == {"step": "confirm"}
        assert [r.event.version for r in store.history(sid)] == list(range(1, 9))

    def test_stale_expected_version_is_a_conflict_naming_both(self, store: SessionStore) -> None:
        sid = store.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        store.add_message(sid, role="user", content="one", expected_version=1)
        with pytest.raises(ConcurrencyConflict) as caught:
            store.add_message(sid, role="user", content="two", expected_version=1)
        assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)
        assert store.get(sid).version == 2

    def test_idempotent_retry_survives_a_restart(
        self, store: SessionStore, open_log: OpenLog
    ) -> None:
        sid = store.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        first = store.add_message(sid, role="user", content="hi", idempotency_key="turn-7")

        restarted = SessionStore(open_log())
        try:
            retry = restarted.add_message(sid, role="user", content="hi", idempotency_key="turn-7")
            assert retry.replayed
            assert (retry.version, retry.position) == (first.version, first.position)
            assert restarted.get(sid).message_count == 1
            with pytest.raises(IdempotencyKeyReused):
                restarted.add_message(sid, role="user", content="bye", idempotency_key="turn-7")
        finally:
            restarted.close()

    def test_idempotent_create_returns_the_same_session(self, store: SessionStore) -> None:
        first = store.create(tenant_id="acme", user_id="u", agent_id="a", idempotency_key="c-1")
        again = store.create(tenant_id="acme", user_id="u", agent_id="a", idempotency_key="c-1")
        assert again.replayed
        assert again.session_id == first.session_id

    def test_two_processes_never_overwrite_each_other(
        self, store: SessionStore, open_log: OpenLog
    ) -> None:
        sid = store.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        store.add_message(sid, role="user", content="from A")
        other = SessionStore(open_log())
        try:
            other.add_message(sid, role="assistant", content="from B")
            # A's cache is stale (version 2); its append is re-decided on the log's state.
            result = store.add_message(sid, role="user", content="from A again")
            assert result.version == 4
            with pytest.raises(ConcurrencyConflict):
                other.add_message(sid, role="user", content="stale", expected_version=3)
        finally:
            other.close()
        contents = [r.event.content for r in store.history(sid, after_version=1)]  # type: ignore[attr-defined]
        assert contents == ["from A", "from B", "from A again"]

    def test_rejections_write_nothing(self, store: SessionStore, log: EventLog) -> None:
        sid = store.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        store.end(sid, status="abandoned")
        before = whole_log(log)
        with pytest.raises(InvalidTransition) as caught:
            store.add_message(sid, role="user", content="late")
        assert caught.value.status == "ended"
        with pytest.raises(SessionNotFound):
            store.add_message(uuid4(), role="user", content="nobody")
        with pytest.raises(InvalidInput):
            store.add_message(sid, role="", content="x")
        with pytest.raises(SessionAlreadyExists):
            store.create(tenant_id="acme", user_id="u", agent_id="a", session_id=sid)
        assert whole_log(log) == before
