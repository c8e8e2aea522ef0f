"""Audits without I/O: state as of a version or a time, diffs, and export/import on memory."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from sessionstore.adapters.audit import export, history, import_log
from sessionstore.adapters.storage.chain import verify
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.audit import FieldChange, diff, state_as_of
from sessionstore.domain.errors import (
    BeforeCreation,
    ImportRejected,
    InvalidInput,
    SessionNotFound,
    VersionBeyondStream,
)
from sessionstore.domain.session import SessionStatus, replay
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import SessionEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class StepClock:
    """Each reading is one second after the last, starting at T0."""

    def __init__(self) -> None:
        self.now = T0 - timedelta(seconds=1)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def conversation(store: SessionStore, *, tenant: str = "acme", user: str = "u-1") -> UUID:
    """Nine events: created, messages with a tool call, a turn, context, interrupt, resume, end."""
    sid = store.create(tenant_id=tenant, user_id=user, agent_id="bot", channel="voice").session_id
    store.add_message(sid, role="user", content="Where is order 1234?")
    store.add_message(
        sid,
        role="assistant",
        tool_calls=[{"id": "c1", "name": "get_order", "arguments": {"id": "1234"}}],
    )
    store.add_message(sid, role="tool", tool_call_id="c1", content='{"status": "shipped"}')
    store.record_turn(sid, request_id="r1", duration_ms=900, input_tokens=50, output_tokens=7)
    store.update_context(sid, set={"order": "1234", "lang": "en"})
    store.interrupt(sid, reason="disconnect")
    store.resume(sid)
    store.end(sid, status="completed", reason="done")
    return sid


@pytest.fixture
def store() -> SessionStore:
    return SessionStore(MemoryEventLog(), clock=StepClock(), cache_size=0)


def events_of(store: SessionStore, sid: UUID) -> list[SessionEvent]:
    return [r.event for r in store.history(sid)]


class TestStateAsOf:
    def test_every_version_equals_the_replay_of_its_prefix(self, store: SessionStore) -> None:
        sid = conversation(store)
        events = events_of(store, sid)
        assert len(events) == 9
        for n in range(1, 10):
            state = state_as_of(events, version=n)
            assert state == replay(events[:n])
            assert state.version == n
        assert state_as_of(events) == store.get(sid)

    def test_a_time_gives_the_state_after_the_last_event_at_or_before_it(
        self, store: SessionStore
    ) -> None:
        sid = conversation(store)
        events = events_of(store, sid)
        # Event n occurred at T0 + n - 1 seconds.
        assert state_as_of(events, at=T0).version == 1
        assert state_as_of(events, at=T0 + timedelta(seconds=6, milliseconds=500)).version == 7
        at_interrupt = state_as_of(events, at=T0 + timedelta(seconds=6))
        assert at_interrupt.status is SessionStatus.INTERRUPTED
        assert state_as_of(events, at=T0 + timedelta(days=1)).status is SessionStatus.ENDED

    def test_a_version_beyond_the_stream_is_an_error_naming_the_last_version(
        self, store: SessionStore
    ) -> None:
        sid = conversation(store)
        with pytest.raises(VersionBeyondStream) as caught:
            state_as_of(events_of(store, sid), version=10)
        assert (caught.value.version, caught.value.last_version) == (10, 9)
        assert "ends at version 9" in caught.value.message

    def test_a_time_before_creation_is_an_error(self, store: SessionStore) -> None:
        sid = conversation(store)
        with pytest.raises(BeforeCreation) as caught:
            state_as_of(events_of(store, sid), at=T0 - timedelta(microseconds=1))
        assert caught.value.created_at == T0

    @pytest.mark.parametrize(
        ("version", "at"),
        [(0, None), (2, T0), (None, datetime(2026, 3, 1, 12, 0))],  # noqa: DTZ001 - naive on purpose
    )
    def test_bad_arguments_are_invalid_input(
        self, store: SessionStore, version: int | None, at: datetime | None
    ) -> None:
        sid = conversation(store)
        with pytest.raises(InvalidInput):
            state_as_of(events_of(store, sid), version=version, at=at)


class TestDiff:
    def test_names_the_fields_that_changed_with_before_and_after(self, store: SessionStore) -> None:
        sid = conversation(store)
        events = events_of(store, sid)
        changes = diff(state_as_of(events, version=5), state_as_of(events, version=7))
        by_field = {c.field: (c.before, c.after) for c in changes}
        assert by_field["version"] == (5, 7)
        assert by_field["status"] == (SessionStatus.ACTIVE, SessionStatus.INTERRUPTED)
        assert by_field["interrupt_count"] == (0, 1)
        assert by_field["context.order"] == (None, "1234")
        assert by_field["context.lang"] == (None, "en")
        assert "message_count" not in by_field
        assert "tenant_id" not in by_field

    def test_the_same_state_has_no_changes_and_order_follows_the_state(
        self, store: SessionStore
    ) -> None:
        sid = conversation(store)
        events = events_of(store, sid)
        three = state_as_of(events, version=3)
        assert diff(three, three) == []
        changes = diff(state_as_of(events, version=2), three)
        assert [c.field for c in changes] == [
            "version",
            "last_activity_at",
            "message_count",
            "open_tool_calls",
            "last_message_role",
            "last_message_preview",
        ]
        assert changes[0] == FieldChange("version", 2, 3)
        assert changes[0].as_dict() == {"field": "version", "before": 2, "after": 3}

    def test_a_removed_context_key_shows_as_none_after(self, store: SessionStore) -> None:
        sid = store.create(tenant_id="t", user_id="u", agent_id="a", channel="text").session_id
        store.update_context(sid, set={"k": 1})
        store.update_context(sid, remove=["k"])
        events = events_of(store, sid)
        changes = diff(state_as_of(events, version=2), state_as_of(events, version=3))
        assert FieldChange("context.k", 1, None) in changes


class TestHistoryAndRoundTripOnMemory:
    def test_history_pages_filters_and_unknown_session(self, store: SessionStore) -> None:
        sid = conversation(store)
        seen: list[int] = []
        after = 0
        while True:
            page = history(store.log, sid, after_version=after, limit=4)
            seen += [r.event.version for r in page.events]
            if page.next_after_version is None:
                break
            after = page.next_after_version
        assert seen == list(range(1, 10))
        messages = history(store.log, sid, types=["MessageAdded"], limit=2)
        assert [r.event.version for r in messages.events] == [2, 3]
        assert messages.next_after_version == 3
        rest = history(store.log, sid, types=["MessageAdded"], after_version=3, limit=2)
        assert [r.event.version for r in rest.events] == [4]
        assert rest.next_after_version is None
        window = history(
            store.log, sid, since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4)
        )
        assert [r.event.version for r in window.events] == [3, 4, 5]
        with pytest.raises(SessionNotFound):
            history(store.log, UUID(int=7))
        with pytest.raises(InvalidInput, match="unknown"):
            history(store.log, sid, types=["MessageSent"])

    def test_export_then_import_gives_the_same_log(self, store: SessionStore) -> None:
        first, second = conversation(store), conversation(store, tenant="other")
        out = io.StringIO()
        summary = export(store.log, out)
        assert (summary.sessions, summary.events) == (2, 18)
        target = MemoryEventLog()
        imported = import_log(target, out.getvalue().splitlines())
        assert (imported.sessions, imported.events) == (2, 18)
        for sid in (first, second):
            source_rows, target_rows = store.log.stored_rows(sid), target.stored_rows(sid)
            assert [r.hash for r in target_rows] == [r.hash for r in source_rows]
            assert [r.event_id for r in target_rows] == [r.event_id for r in source_rows]
        assert verify(target).ok

    def test_a_bad_line_names_its_number_and_writes_nothing(self, store: SessionStore) -> None:
        conversation(store)
        out = io.StringIO()
        export(store.log, out)
        lines = out.getvalue().splitlines()
        lines[5] = lines[5][:-3]  # cut JSON
        target = MemoryEventLog()
        with pytest.raises(ImportRejected) as caught:
            import_log(target, lines)
        assert caught.value.line == 6
        assert "not valid JSON" in caught.value.reason
        assert target.head().position == 0


def _exported(store: SessionStore) -> list[str]:
    conversation(store)
    out = io.StringIO()
    export(store.log, out)
    return out.getvalue().splitlines()


def _replace(line: str, old: str, new: str) -> str:
    assert old in line, f"{old!r} not in {line!r}"
    return line.replace(old, new, 1)


# Line 2 is SessionCreated (metadata {}), line 3 the user message, line 6 the turn.
BAD_IMPORT_LINES = {
    "NaN": (3, '"input_tokens":null', '"input_tokens":NaN', "NaN is not a JSON number"),
    "Infinity": (2, '"metadata":{}', '"metadata":{"x":Infinity}', "Infinity is not a JSON number"),
    "NUL": (3, "Where is order", "Where\\u0000 is order", "content: contains NUL"),
    "2^63 tokens": (6, '"input_tokens":50', '"input_tokens":9223372036854775808', "input_tokens"),
    "1e308 ms": (6, '"duration_ms":900.0', '"duration_ms":1e308', "duration_ms: must be at most"),
    "lone surrogate": (3, "Where is order", "Where \\ud800 is order", "lone surrogate"),
    "10^29": (2, '"metadata":{}', '"metadata":{"n":100000000000000000000000000000}', "64-bit"),
    "deep": (2, '"metadata":{}', '"metadata":' + '{"a":' * 40 + "1" + "}" * 40, "nested 40"),
    "very deep": (2, '"metadata":{}', '"metadata":' + "[" * 5000 + "]" * 5000, "nested"),
    "far future": (
        2,
        '"occurred_at":"2026-03-01T12:00:00.000000Z"',
        '"occurred_at":"9999-03-01T12:00:00.000000Z"',
        "occurred_at",
    ),
}


@pytest.mark.parametrize(("case"), BAD_IMPORT_LINES.values(), ids=BAD_IMPORT_LINES)
def test_import_applies_the_input_contract_and_writes_nothing(
    store: SessionStore, case: tuple[int, str, str, str]
) -> None:
    number, old, new, expected = case
    lines = _exported(store)
    lines[number - 1] = _replace(lines[number - 1], old, new)
    target = MemoryEventLog()

    with pytest.raises(ImportRejected) as caught:
        import_log(target, lines)

    assert caught.value.line == number
    assert expected in caught.value.reason
    assert target.head().position == 0


def test_import_of_bytes_that_are_not_utf8_names_the_line(store: SessionStore) -> None:
    lines: list[str | bytes] = list(_exported(store))
    lines[2] = lines[2].encode().replace(b"Where", b"Wh\xffere")  # type: ignore[union-attr]
    target = MemoryEventLog()

    with pytest.raises(ImportRejected) as caught:
        import_log(target, lines)

    assert (caught.value.line, target.head().position) == (3, 0)
    assert "not valid UTF-8" in caught.value.reason
