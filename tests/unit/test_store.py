"""SessionStore over the in-memory log: every method, every rejection, retries and stale caches.

After every rejection the log must hold exactly what it held before: bad input never appends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.commands import Resume
from sessionstore.domain.contract import Limits
from sessionstore.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidTransition,
    PayloadTooLarge,
    SessionAlreadyExists,
    SessionNotFound,
    SessionStoreError,
    TranscriptViolation,
)
from sessionstore.domain.ports import AppendResult, RecordedEvent
from sessionstore.domain.session import SessionStatus, replay
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import (
    Channel,
    ContextUpdated,
    EndStatus,
    InterruptReason,
    MessageAdded,
    Modality,
    Role,
    SessionCreated,
    SessionEnded,
    SessionInterrupted,
    SessionPolicy,
    SessionResumed,
    TurnRecorded,
)

CALL = {"id": "call-1", "name": "get_weather", "arguments": {"city": "Zürich"}}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def log() -> MemoryEventLog:
    return MemoryEventLog()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(log: MemoryEventLog, clock: Clock) -> SessionStore:
    return SessionStore(log, clock=clock)


@pytest.fixture
def sid(store: SessionStore) -> UUID:
    """An active session with one user message (version 2)."""
    created = store.create(tenant_id="acme", user_id="u-1", agent_id="support-bot")
    store.add_message(created.session_id, role="user", content="hello")
    return created.session_id


def everything(log: MemoryEventLog) -> list[RecordedEvent]:
    return log.read_log(limit=1_000_000)


@contextmanager
def nothing_appended(log: MemoryEventLog) -> Iterator[None]:
    before = everything(log)
    yield
    assert everything(log) == before


# ---------------------------------------------------------------------------------------------
# create


def test_create_appends_session_created_and_returns_where_it_went(
    store: SessionStore, log: MemoryEventLog, clock: Clock
) -> None:
    result = store.create(
        tenant_id="acme",
        user_id="u-1",
        agent_id="support-bot",
        channel="phone",
        metadata={"locale": "fr-FR"},
        policy={"idle_timeout_seconds": 120, "retention_days": 7},
    )

    assert result == AppendResult(result.session_id, version=1, position=1, events=1)
    [recorded] = everything(log)
    assert recorded.tenant_id == "acme"
    assert isinstance(recorded.event, SessionCreated)
    assert recorded.event.session_id == result.session_id
    assert recorded.event.occurred_at == clock.now
    assert recorded.event.channel is Channel.PHONE
    assert recorded.event.metadata == {"locale": "fr-FR"}
    assert recorded.event.policy == SessionPolicy(idle_timeout_seconds=120, retention_days=7)
    state = store.get(result.session_id)
    assert (state.status, state.version, state.user_id) == (SessionStatus.ACTIVE, 1, "u-1")


def test_create_accepts_a_policy_object(store: SessionStore) -> None:
    policy = SessionPolicy(idle_timeout_seconds=None, ttl_seconds=60)

    result = store.create(tenant_id="t", user_id="u", agent_id="a", policy=policy)

    assert store.get(result.session_id).policy == policy


@pytest.mark.parametrize("as_text", [False, True])
def test_create_keeps_a_client_chosen_id(store: SessionStore, as_text: bool) -> None:
    chosen = uuid4()

    result = store.create(
        tenant_id="t", user_id="u", agent_id="a", session_id=str(chosen) if as_text else chosen
    )

    assert result.session_id == chosen
    assert store.get(str(chosen)).session_id == chosen


def test_create_generates_distinct_ids(store: SessionStore) -> None:
    ids = {store.create(tenant_id="t", user_id="u", agent_id="a").session_id for _ in range(20)}

    assert len(ids) == 20


def test_a_client_chosen_id_that_exists_is_rejected(
    store: SessionStore, log: MemoryEventLog
) -> None:
    chosen = uuid4()
    store.create(tenant_id="t", user_id="u", agent_id="a", session_id=chosen)

    with nothing_appended(log), pytest.raises(SessionAlreadyExists) as info:
        store.create(tenant_id="t", user_id="someone-else", agent_id="a", session_id=chosen)

    assert info.value.session_id == chosen
    assert info.value.context == {"session_id": chosen}
    assert str(chosen) in str(info.value)
    assert store.get(chosen).user_id == "u"


def test_a_duplicate_id_is_rejected_by_another_store_on_the_same_log(log: MemoryEventLog) -> None:
    chosen = uuid4()
    SessionStore(log).create(tenant_id="t", user_id="u", agent_id="a", session_id=chosen)

    with nothing_appended(log), pytest.raises(SessionAlreadyExists):
        SessionStore(log).create(tenant_id="t", user_id="u", agent_id="a", session_id=chosen)


# ---------------------------------------------------------------------------------------------
# add_message


def test_add_message_appends_the_next_version(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    result = store.add_message(
        sid, role="assistant", content="Hi! How can I help?", output_tokens=6
    )

    assert (result.session_id, result.version, result.events, result.replayed) == (sid, 3, 1, False)
    assert result.position == len(everything(log))
    event = everything(log)[-1].event
    assert isinstance(event, MessageAdded)
    assert (event.role, event.content, event.output_tokens) == (
        Role.ASSISTANT,
        "Hi! How can I help?",
        6,
    )
    state = store.get(sid)
    assert (state.version, state.message_count, state.output_tokens) == (3, 2, 6)


def test_add_message_generates_a_message_id_unless_given(store: SessionStore, sid: UUID) -> None:
    store.add_message(sid, role="user", content="a")
    store.add_message(sid, role="user", content="b", message_id="client-42")

    first, second = (r.event for r in store.history(sid, after_version=2))
    assert isinstance(first, MessageAdded)
    assert isinstance(second, MessageAdded)
    assert first.message_id
    assert first.message_id != "client-42"
    assert second.message_id == "client-42"


def test_add_message_records_the_modality_and_language_it_is_given(
    store: SessionStore, sid: UUID
) -> None:
    store.add_message(sid, role="user", content="Hallo zusammen", modality="audio", language="de")
    store.add_message(sid, role="assistant", content="Hi!")

    spoken, typed = (r.event for r in store.history(sid, after_version=2))
    assert isinstance(spoken, MessageAdded)
    assert isinstance(typed, MessageAdded)
    assert (spoken.modality, spoken.language) == (Modality.AUDIO, "de")
    assert (typed.modality, typed.language) == (Modality.TEXT, None)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"modality": "video"}, "modality"),
        ({"modality": None}, "modality"),
        ({"language": "en_US"}, "language"),
        ({"language": "e"}, "language"),
        ({"language": 7}, "language"),
    ],
    ids=["unknown modality", "null modality", "underscore tag", "too short tag", "not text"],
)
def test_a_bad_modality_or_language_is_invalid_input_and_appends_nothing(
    store: SessionStore, log: MemoryEventLog, sid: UUID, fields: dict[str, Any], field: str
) -> None:
    with nothing_appended(log), pytest.raises(InvalidInput) as info:
        store.add_message(sid, role="user", content="hi", **fields)

    assert [error["field"] for error in info.value.errors] == [field]
    assert info.value.code == "invalid-input"


def test_a_tool_round_trip_through_the_store(store: SessionStore, sid: UUID) -> None:
    store.add_message(sid, role="assistant", tool_calls=[CALL])
    assert store.get(sid).open_tool_call_ids == ("call-1",)

    store.add_message(sid, role="tool", content='{"temp": 21}', tool_call_id="call-1")
    store.add_message(sid, role="assistant", content="It is 21 °C in Zürich.")

    state = store.get(sid)
    assert state.open_tool_calls == ()
    assert state.message_count == 4
    assert state.last_message_role is Role.ASSISTANT


def test_a_tool_result_without_an_open_call_is_rejected(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    with nothing_appended(log), pytest.raises(TranscriptViolation) as info:
        store.add_message(sid, role="tool", content="42", tool_call_id="call-7")

    assert info.value.session_id == sid
    assert info.value.open_tool_calls == ()


def test_a_user_message_while_a_tool_call_is_open_is_rejected(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    store.add_message(sid, role="assistant", tool_calls=[CALL])

    with nothing_appended(log), pytest.raises(TranscriptViolation) as info:
        store.add_message(sid, role="user", content="hello?")

    assert info.value.open_tool_calls == ("call-1",)
    assert info.value.context["open_tool_calls"] == ["call-1"]


# ---------------------------------------------------------------------------------------------
# record_turn, update_context


def test_record_turn_appends_the_measurements(store: SessionStore, sid: UUID) -> None:
    result = store.record_turn(
        sid,
        request_id="req-1",
        duration_ms=950.5,
        stt_ms=100,
        llm_ms=700,
        tts_ms=120,
        tool_ms=30.5,
        input_tokens=200,
        output_tokens=40,
        error=True,
        error_type="tts_timeout",
    )

    event = store.history(sid)[-1].event
    assert isinstance(event, TurnRecorded)
    assert event.version == result.version == 3
    assert (event.duration_ms, event.stt_ms, event.llm_ms, event.tts_ms, event.tool_ms) == (
        950.5,
        100,
        700,
        120,
        30.5,
    )
    assert (event.error, event.error_type) == (True, "tts_timeout")
    state = store.get(sid)
    assert (state.turn_count, state.error_turn_count) == (1, 1)
    assert (state.input_tokens, state.output_tokens) == (200, 40)


def test_update_context_sets_and_removes_keys(store: SessionStore, sid: UUID) -> None:
    store.update_context(sid, set={"cart": ["sku-1"], "step": "address", "lang": "de"})

    result = store.update_context(sid, set={"step": "payment"}, remove=["lang"])

    event = store.history(sid)[-1].event
    assert isinstance(event, ContextUpdated)
    assert (event.set, event.removed) == ({"step": "payment"}, ("lang",))
    assert result.version == 4
    assert dict(store.get(sid).context) == {"cart": ["sku-1"], "step": "payment"}


# ---------------------------------------------------------------------------------------------
# interrupt, resume, end


def test_interrupt_then_resume(store: SessionStore, sid: UUID, clock: Clock) -> None:
    interrupted = store.interrupt(sid, reason="disconnect", detail="websocket closed")
    clock.advance(12.5)

    resumed = store.resume(sid)

    assert (interrupted.version, resumed.version) == (3, 4)
    first, second = (r.event for r in store.history(sid, after_version=2))
    assert isinstance(first, SessionInterrupted)
    assert (first.reason, first.detail) == (InterruptReason.DISCONNECT, "websocket closed")
    assert isinstance(second, SessionResumed)
    assert (second.resume_count, second.seconds_interrupted) == (1, 12.5)
    state = store.get(sid)
    assert (state.status, state.interrupt_count, state.resume_count) == (SessionStatus.ACTIVE, 1, 1)


def test_interrupting_with_an_open_tool_call_records_its_abort(
    store: SessionStore, sid: UUID
) -> None:
    store.add_message(sid, role="assistant", tool_calls=[CALL, {**CALL, "id": "call-2"}])

    store.interrupt(sid, reason="barge_in")

    event = store.history(sid)[-1].event
    assert isinstance(event, SessionInterrupted)
    assert event.aborted_tool_calls == ("call-1", "call-2")
    assert store.get(sid).open_tool_calls == ()


@pytest.mark.parametrize("status", list(EndStatus))
def test_end_with_every_status(store: SessionStore, sid: UUID, status: EndStatus) -> None:
    store.add_message(sid, role="assistant", tool_calls=[CALL])

    result = store.end(sid, status=status.value, reason="bye")

    event = store.history(sid)[-1].event
    assert isinstance(event, SessionEnded)
    assert (event.status, event.reason, event.aborted_tool_calls) == (status, "bye", ("call-1",))
    assert result.version == 4
    state = store.get(sid)
    assert (state.status, state.end_status, state.end_reason) == (
        SessionStatus.ENDED,
        status,
        "bye",
    )


def test_end_defaults_to_completed(store: SessionStore, sid: UUID) -> None:
    store.end(sid)

    assert store.get(sid).end_status is EndStatus.COMPLETED


def test_an_interrupted_session_can_end(store: SessionStore, sid: UUID) -> None:
    store.interrupt(sid, reason="timeout")

    store.end(sid, status="expired")

    assert store.get(sid).end_status is EndStatus.EXPIRED


# ---------------------------------------------------------------------------------------------
# Invalid transitions: typed, naming the current status, appending nothing


ON_A_SESSION: dict[str, Callable[[SessionStore, Any], object]] = {
    "add_message": lambda s, i: s.add_message(i, role="user", content="hi"),
    "record_turn": lambda s, i: s.record_turn(i, request_id="r", duration_ms=1),
    "update_context": lambda s, i: s.update_context(i, set={"a": 1}),
    "interrupt": lambda s, i: s.interrupt(i, reason="error"),
    "resume": lambda s, i: s.resume(i),
    "end": lambda s, i: s.end(i),
    "get": lambda s, i: s.get(i),
    "history": lambda s, i: s.history(i),
}


def put_in_status(store: SessionStore, sid: UUID, status: str) -> None:
    if status == "interrupted":
        store.interrupt(sid, reason="disconnect")
    elif status == "ended":
        store.end(sid)
    assert store.get(sid).status == status


@pytest.mark.parametrize(
    ("status", "method", "action"),
    [
        ("ended", "add_message", "add a message to"),
        ("interrupted", "add_message", "add a message to"),
        ("ended", "record_turn", "record a turn on"),
        ("interrupted", "record_turn", "record a turn on"),
        ("ended", "update_context", "update the context of"),
        ("ended", "interrupt", "interrupt"),
        ("interrupted", "interrupt", "interrupt"),
        ("active", "resume", "resume"),
        ("ended", "resume", "resume"),
        ("ended", "end", "end"),
    ],
)
def test_commands_not_allowed_in_the_current_status_are_rejected(
    *, store: SessionStore, log: MemoryEventLog, sid: UUID, status: str, method: str, action: str
) -> None:
    put_in_status(store, sid, status)
    before = store.get(sid)

    with nothing_appended(log), pytest.raises(InvalidTransition) as info:
        ON_A_SESSION[method](store, sid)

    assert (info.value.session_id, info.value.status, info.value.action) == (sid, status, action)
    assert f"it is {status}" in str(info.value)
    assert store.get(sid) == before


# ---------------------------------------------------------------------------------------------
# Unknown sessions and bad ids


@pytest.mark.parametrize("method", list(ON_A_SESSION))
def test_an_unknown_session_is_not_found(
    store: SessionStore, log: MemoryEventLog, sid: UUID, method: str
) -> None:
    unknown = uuid4()

    with nothing_appended(log), pytest.raises(SessionNotFound) as info:
        ON_A_SESSION[method](store, unknown)

    assert info.value.session_id == unknown
    assert info.value.code == "session-not-found"
    assert str(unknown) in str(info.value)


@pytest.mark.parametrize("method", list(ON_A_SESSION))
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", 42, "6f1c1b3e-6c39-4d55-9a3f"])
def test_a_malformed_session_id_is_invalid_input(
    store: SessionStore, log: MemoryEventLog, sid: UUID, method: str, bad_id: Any
) -> None:
    with nothing_appended(log), pytest.raises(InvalidInput) as info:
        ON_A_SESSION[method](store, bad_id)

    assert info.value.errors[0]["field"] == "session_id"


def test_a_session_id_given_as_text_works_everywhere(store: SessionStore, sid: UUID) -> None:
    store.record_turn(str(sid), request_id="r", duration_ms=1)

    assert store.get(str(sid)).turn_count == 1
    assert len(store.history(str(sid))) == 3


def test_a_command_without_a_session_id_is_invalid_input(store: SessionStore) -> None:
    with pytest.raises(InvalidInput) as info:
        store.execute(None, Resume())

    assert info.value.errors == [{"field": "session_id", "message": "required"}]


# ---------------------------------------------------------------------------------------------
# Invalid payloads


@pytest.mark.parametrize(
    ("command", "field"),
    [
        pytest.param(lambda s, i: s.add_message(i, role="", content="hi"), "role", id="empty role"),
        pytest.param(
            lambda s, i: s.add_message(i, role="robot", content="hi"), "role", id="unknown role"
        ),
        pytest.param(
            lambda s, i: s.add_message(i, role="user", content=""), "AddMessage", id="empty content"
        ),
        pytest.param(
            lambda s, i: s.add_message(i, role="user", content=42), "content", id="content not text"
        ),
        pytest.param(
            lambda s, i: s.add_message(i, role="user", content="x", input_tokens=-1),
            "input_tokens",
            id="negative tokens",
        ),
        pytest.param(
            lambda s, i: s.add_message(i, role="tool", content="x"),
            "AddMessage",
            id="tool result without call id",
        ),
        pytest.param(
            lambda s, i: s.add_message(i, role="assistant", tool_calls=[{"id": "c"}]),
            "tool_calls.0.name",
            id="tool call without name",
        ),
        pytest.param(
            lambda s, i: s.add_message(i, role="assistant", tool_calls=[None]),
            "tool_calls.0",
            id="tool call not an object",
        ),
        pytest.param(
            lambda s, i: s.record_turn(i, request_id="r", duration_ms="slow"),
            "duration_ms",
            id="duration not a number",
        ),
        pytest.param(
            lambda s, i: s.record_turn(i, request_id="", duration_ms=1),
            "request_id",
            id="empty request id",
        ),
        pytest.param(
            lambda s, i: s.record_turn(i, request_id="r", duration_ms=-1),
            "duration_ms",
            id="negative duration",
        ),
        pytest.param(lambda s, i: s.update_context(i), "UpdateContext", id="empty context update"),
        pytest.param(
            lambda s, i: s.update_context(i, set={"a": 1}, remove=["a"]),
            "UpdateContext",
            id="key set and removed",
        ),
        pytest.param(
            lambda s, i: s.update_context(i, set={"a": float("nan")}),
            "set.a",
            id="NaN in context",
        ),
        pytest.param(
            lambda s, i: s.update_context(i, set={"a": 2**70}),
            "set.a",
            id="huge integer in context",
        ),
        pytest.param(
            lambda s, i: s.interrupt(i, reason="lunch"), "reason", id="unknown interrupt reason"
        ),
        pytest.param(lambda s, i: s.end(i, status="done"), "status", id="unknown end status"),
        pytest.param(
            lambda s, i: s.add_message(i, role="user", content="x", expected_version=-1),
            "expected_version",
            id="negative expected version",
        ),
        pytest.param(
            lambda s, i: s.add_message(i, role="user", content="x", expected_version="2"),
            "expected_version",
            id="expected version as text",
        ),
        pytest.param(
            lambda s, i: s.add_message(i, role="user", content="x", expected_version=True),
            "expected_version",
            id="expected version as bool",
        ),
        pytest.param(
            lambda s, i: s.resume(i, expected_version=2.0),
            "expected_version",
            id="expected version as float",
        ),
        pytest.param(
            lambda s, i: s.end(i, idempotency_key=""), "idempotency_key", id="empty idempotency key"
        ),
        pytest.param(
            lambda s, i: s.end(i, idempotency_key="k" * 201),
            "idempotency_key",
            id="idempotency key too long",
        ),
        pytest.param(
            lambda s, i: s.end(i, idempotency_key=7),
            "idempotency_key",
            id="idempotency key not text",
        ),
    ],
)
def test_invalid_payloads_are_rejected_naming_the_field(
    store: SessionStore,
    log: MemoryEventLog,
    sid: UUID,
    command: Callable[[SessionStore, UUID], AppendResult],
    field: str,
) -> None:
    with nothing_appended(log), pytest.raises(InvalidInput) as info:
        command(store, sid)

    assert not isinstance(info.value, PayloadTooLarge)
    assert info.value.errors
    assert info.value.errors[0]["field"] == field
    assert info.value.errors[0]["message"]
    assert info.value.code == "invalid-input"
    assert info.value.context == {"errors": info.value.errors}


@pytest.mark.parametrize(
    "fields",
    [
        {"tenant_id": ""},
        {"user_id": None},
        {"agent_id": "a" * 201},
        {"channel": "pigeon"},
        {"metadata": {"x": float("inf")}},
        {"metadata": {"x": -(2**64)}},
        {"metadata": {"broken\ud800": "x"}},
        {"policy": {"ttl_seconds": 0}},
        {"session_id": "nope"},
    ],
)
def test_create_rejects_invalid_payloads(
    store: SessionStore, log: MemoryEventLog, fields: dict[str, Any]
) -> None:
    with nothing_appended(log), pytest.raises(InvalidInput) as info:
        store.create(**{"tenant_id": "t", "user_id": "u", "agent_id": "a", **fields})

    [field] = fields
    assert info.value.errors[0]["field"].split(".")[0] in {field, "CreateSession"}


def test_text_the_log_could_not_store_is_invalid_input(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    with nothing_appended(log), pytest.raises(InvalidInput, match="lone surrogate"):
        store.add_message(sid, role="user", content="half an emoji \ud83d")


def test_invalid_input_lists_every_problem(store: SessionStore, sid: UUID) -> None:
    with pytest.raises(InvalidInput) as info:
        store.record_turn(sid, request_id="", duration_ms=-5, llm_ms=-1)

    assert {e["field"] for e in info.value.errors} == {"request_id", "duration_ms", "llm_ms"}


# ---------------------------------------------------------------------------------------------
# Size limits


@pytest.fixture
def small(log: MemoryEventLog) -> SessionStore:
    return SessionStore(log, limits=Limits(max_content_bytes=16, max_json_bytes=40))


def test_content_at_the_limit_is_accepted(small: SessionStore) -> None:
    sid = small.create(tenant_id="t", user_id="u", agent_id="a").session_id

    small.add_message(sid, role="user", content="x" * 16)

    assert small.get(sid).message_count == 1


def test_content_over_the_limit_in_bytes_is_payload_too_large(
    small: SessionStore, log: MemoryEventLog
) -> None:
    sid = small.create(tenant_id="t", user_id="u", agent_id="a").session_id

    # 9 characters, but 18 bytes of UTF-8: the limit is on bytes.
    with nothing_appended(log), pytest.raises(PayloadTooLarge) as info:
        small.add_message(sid, role="user", content="ü" * 9)

    error = info.value
    assert isinstance(error, InvalidInput)
    assert (error.field, error.size, error.limit) == ("content", 18, 16)
    assert error.context["limit"] == 16
    assert error.errors == [{"field": "content", "message": "18 bytes exceeds the limit of 16"}]
    assert error.code == "payload-too-large"


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (lambda s, i: s.update_context(i, set={"notes": "n" * 40}), "set"),
        (
            lambda s, i: s.add_message(
                i, role="assistant", tool_calls=[{**CALL, "arguments": {"q": "q" * 40}}]
            ),
            "tool_calls",
        ),
        (
            lambda s, i: s.create(
                tenant_id="t", user_id="u", agent_id="a", metadata={"m": "m" * 40}
            ),
            "metadata",
        ),
    ],
    ids=["context update", "tool call arguments", "session metadata"],
)
def test_json_over_the_limit_is_payload_too_large(
    small: SessionStore,
    log: MemoryEventLog,
    command: Callable[[SessionStore, UUID], AppendResult],
    field: str,
) -> None:
    sid = small.create(tenant_id="t", user_id="u", agent_id="a").session_id

    with nothing_appended(log), pytest.raises(PayloadTooLarge) as info:
        command(small, sid)

    assert info.value.field == field
    assert info.value.size > info.value.limit == 40


def test_the_default_limits_allow_long_messages(store: SessionStore, sid: UUID) -> None:
    store.add_message(sid, role="assistant", content="long answer " * 5000)

    assert store.get(sid).message_count == 2


# ---------------------------------------------------------------------------------------------
# expected_version


def test_the_right_expected_version_appends(store: SessionStore, sid: UUID) -> None:
    result = store.add_message(sid, role="user", content="x", expected_version=2)

    assert result.version == 3


@pytest.mark.parametrize("expected", [0, 1, 3, 99])
def test_a_wrong_expected_version_is_a_conflict_naming_both_versions(
    store: SessionStore, log: MemoryEventLog, sid: UUID, expected: int
) -> None:
    with nothing_appended(log), pytest.raises(ConcurrencyConflict) as info:
        store.add_message(sid, role="user", content="x", expected_version=expected)

    error = info.value
    assert (error.session_id, error.expected_version, error.actual_version) == (sid, expected, 2)
    assert f"expected version {expected}, but it is at version 2" in str(error)
    assert error.context == {"session_id": sid, "expected_version": expected, "actual_version": 2}
    assert error.code == "version-conflict"


@pytest.mark.parametrize(
    "command",
    [
        lambda s, i, v: s.record_turn(i, request_id="r", duration_ms=1, expected_version=v),
        lambda s, i, v: s.update_context(i, set={"a": 1}, expected_version=v),
        lambda s, i, v: s.interrupt(i, reason="error", expected_version=v),
        lambda s, i, v: s.end(i, expected_version=v),
    ],
    ids=["record_turn", "update_context", "interrupt", "end"],
)
def test_every_append_honours_expected_version(
    store: SessionStore,
    log: MemoryEventLog,
    sid: UUID,
    command: Callable[[SessionStore, UUID, int], AppendResult],
) -> None:
    with nothing_appended(log), pytest.raises(ConcurrencyConflict):
        command(store, sid, 1)

    assert command(store, sid, 2).version == 3


def test_resume_honours_expected_version(store: SessionStore, sid: UUID) -> None:
    store.interrupt(sid, reason="timeout")

    with pytest.raises(ConcurrencyConflict):
        store.resume(sid, expected_version=2)
    assert store.resume(sid, expected_version=3).version == 4


def test_a_conflict_is_reported_before_the_status_is_judged(store: SessionStore, sid: UUID) -> None:
    """The caller's view is stale, so the caller must re-read, whatever the command."""
    store.end(sid)

    with pytest.raises(ConcurrencyConflict):
        store.add_message(sid, role="user", content="x", expected_version=2)


# ---------------------------------------------------------------------------------------------
# Idempotency keys

RETRYABLE: dict[str, Callable[[SessionStore, UUID, str], AppendResult]] = {
    "add_message": lambda s, i, k: s.add_message(i, role="user", content="hi", idempotency_key=k),
    "record_turn": lambda s, i, k: s.record_turn(
        i, request_id="r", duration_ms=1, idempotency_key=k
    ),
    "update_context": lambda s, i, k: s.update_context(i, set={"a": 1}, idempotency_key=k),
    "interrupt": lambda s, i, k: s.interrupt(i, reason="error", idempotency_key=k),
    "end": lambda s, i, k: s.end(i, status="failed", idempotency_key=k),
}


@pytest.mark.parametrize("method", list(RETRYABLE))
def test_a_retry_with_the_same_key_returns_the_first_result_and_appends_nothing(
    store: SessionStore, log: MemoryEventLog, sid: UUID, method: str
) -> None:
    first = RETRYABLE[method](store, sid, "key-1")
    state = store.get(sid)

    with nothing_appended(log):
        again = RETRYABLE[method](store, sid, "key-1")

    assert first.replayed is False
    assert again.replayed is True
    assert (again.session_id, again.version, again.position, again.events) == (
        first.session_id,
        first.version,
        first.position,
        first.events,
    )
    assert store.get(sid) == state


def test_a_resume_retried_after_a_new_interruption_does_not_resume_again(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    store.interrupt(sid, reason="disconnect")
    first = store.resume(sid, idempotency_key="resume-1")
    store.interrupt(sid, reason="disconnect")

    with nothing_appended(log):
        again = store.resume(sid, idempotency_key="resume-1")

    assert again.replayed
    assert again.version == first.version == 4
    assert store.get(sid).status is SessionStatus.INTERRUPTED


def test_ending_twice_with_the_same_key_returns_the_first_result(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    first = store.end(sid, status="completed", idempotency_key="end-1")

    with nothing_appended(log):
        again = store.end(sid, status="completed", idempotency_key="end-1")

    assert again.replayed
    assert (again.version, again.position) == (first.version, first.position)


def test_a_retry_still_succeeds_after_the_session_moved_on(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    first = store.add_message(
        sid, role="user", content="hi", expected_version=2, idempotency_key="m"
    )
    store.record_turn(sid, request_id="r", duration_ms=1)
    store.end(sid)

    with nothing_appended(log):
        again = store.add_message(
            sid, role="user", content="hi", expected_version=2, idempotency_key="m"
        )

    assert again.replayed
    assert again.version == first.version == 3


def test_a_retry_survives_a_restart(log: MemoryEventLog, sid: UUID, store: SessionStore) -> None:
    first = store.record_turn(sid, request_id="r", duration_ms=3, idempotency_key="turn-1")

    restarted = SessionStore(log)
    with nothing_appended(log):
        again = restarted.record_turn(sid, request_id="r", duration_ms=3, idempotency_key="turn-1")

    assert again.replayed
    assert again.position == first.position


def test_a_key_reused_for_a_different_request_is_rejected(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    store.add_message(sid, role="user", content="first", idempotency_key="k")

    with nothing_appended(log), pytest.raises(IdempotencyKeyReused) as info:
        store.add_message(sid, role="user", content="second", idempotency_key="k")

    assert (info.value.key, info.value.session_id) == ("k", sid)
    assert info.value.context == {"idempotency_key": "k", "session_id": sid}
    assert info.value.code == "idempotency-key-reused"


def test_a_key_reused_for_another_command_is_rejected(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    store.interrupt(sid, reason="error", idempotency_key="k")

    with nothing_appended(log), pytest.raises(IdempotencyKeyReused):
        store.update_context(sid, set={"a": 1}, idempotency_key="k")
    with nothing_appended(log), pytest.raises(IdempotencyKeyReused):
        store.resume(sid, idempotency_key="k")


def test_a_key_reused_on_another_session_is_rejected(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    other = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    store.add_message(sid, role="user", content="hi", idempotency_key="k")

    with nothing_appended(log), pytest.raises(IdempotencyKeyReused) as info:
        store.add_message(other, role="user", content="hi", idempotency_key="k")

    assert info.value.session_id == sid


def test_a_key_reused_on_an_unknown_session_is_rejected(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    store.end(sid, idempotency_key="k")

    with nothing_appended(log), pytest.raises(IdempotencyKeyReused):
        store.end(uuid4(), idempotency_key="k")


def test_a_rejected_request_does_not_use_up_its_key(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    store.interrupt(sid, reason="timeout")
    with pytest.raises(InvalidTransition):
        store.add_message(sid, role="user", content="hi", idempotency_key="k")
    store.resume(sid)

    result = store.add_message(sid, role="user", content="hi", idempotency_key="k")

    assert not result.replayed
    assert everything(log)[-1].event.version == result.version == 5
    assert log.find_idempotency("k") is not None


def test_create_retried_with_the_same_key_returns_the_same_session(
    store: SessionStore, log: MemoryEventLog
) -> None:
    first = store.create(tenant_id="t", user_id="u", agent_id="a", idempotency_key="c")

    with nothing_appended(log):
        again = store.create(tenant_id="t", user_id="u", agent_id="a", idempotency_key="c")

    assert again.replayed
    assert (again.session_id, again.version, again.position) == (
        first.session_id,
        1,
        first.position,
    )
    assert len(everything(log)) == 1


def test_create_with_a_chosen_id_retried_with_the_same_key_is_replayed(
    store: SessionStore, log: MemoryEventLog
) -> None:
    chosen = uuid4()
    store.create(tenant_id="t", user_id="u", agent_id="a", session_id=chosen, idempotency_key="c")

    with nothing_appended(log):
        again = store.create(
            tenant_id="t", user_id="u", agent_id="a", session_id=chosen, idempotency_key="c"
        )

    assert again.replayed
    assert again.session_id == chosen


def test_create_with_a_chosen_id_and_a_new_key_is_still_a_duplicate(
    store: SessionStore, log: MemoryEventLog
) -> None:
    chosen = uuid4()
    store.create(tenant_id="t", user_id="u", agent_id="a", session_id=chosen, idempotency_key="c1")

    with nothing_appended(log), pytest.raises(SessionAlreadyExists):
        store.create(
            tenant_id="t", user_id="u", agent_id="a", session_id=chosen, idempotency_key="c2"
        )


def test_create_with_a_reused_key_and_different_details_is_rejected(
    store: SessionStore, log: MemoryEventLog
) -> None:
    store.create(tenant_id="t", user_id="u", agent_id="a", idempotency_key="c")

    with nothing_appended(log), pytest.raises(IdempotencyKeyReused):
        store.create(tenant_id="t", user_id="other", agent_id="a", idempotency_key="c")


def test_a_key_used_to_create_cannot_be_reused_for_a_message(
    store: SessionStore, log: MemoryEventLog
) -> None:
    sid = store.create(tenant_id="t", user_id="u", agent_id="a", idempotency_key="c").session_id

    with nothing_appended(log), pytest.raises(IdempotencyKeyReused):
        store.add_message(sid, role="user", content="hi", idempotency_key="c")


# ---------------------------------------------------------------------------------------------
# Queries


def test_get_is_the_fold_of_the_history(store: SessionStore, sid: UUID) -> None:
    store.add_message(sid, role="assistant", tool_calls=[CALL])
    store.record_turn(sid, request_id="r", duration_ms=10, error=True)
    store.interrupt(sid, reason="barge_in")
    store.update_context(sid, set={"a": [1, {"b": None}]})
    store.resume(sid)
    store.end(sid, status="abandoned")

    history = store.history(sid)

    assert [r.event.version for r in history] == list(range(1, 9))
    assert replay(r.event for r in history) == store.get(sid)
    assert replay(r.event for r in history) == SessionStore(store.log).get(sid)


def test_history_pages_by_version(store: SessionStore, sid: UUID) -> None:
    for i in range(5):
        store.add_message(sid, role="user", content=f"m{i}")

    assert [r.event.version for r in store.history(sid, after_version=3)] == [4, 5, 6, 7]
    assert [r.event.version for r in store.history(sid, after_version=3, limit=2)] == [4, 5]
    assert store.history(sid, after_version=7) == []
    assert store.history(sid, after_version=50) == []
    assert SessionStore(store.log).history(sid, after_version=50) == []


def test_history_records_where_and_for_whom_each_event_is_stored(
    store: SessionStore, sid: UUID
) -> None:
    history = store.history(sid)

    assert {r.tenant_id for r in history} == {"acme"}
    assert [r.position for r in history] == sorted(r.position for r in history)
    assert len({r.event.event_id for r in history}) == len(history)


def test_the_log_holds_every_session_in_order(store: SessionStore, log: MemoryEventLog) -> None:
    a = store.create(tenant_id="t", user_id="a", agent_id="x").session_id
    b = store.create(tenant_id="t", user_id="b", agent_id="x").session_id
    store.add_message(a, role="user", content="1")
    store.add_message(b, role="user", content="2")
    store.end(a)

    rows = everything(log)

    assert [r.position for r in rows] == [1, 2, 3, 4, 5]
    assert [(r.event.session_id, r.event.version) for r in rows] == [
        (a, 1),
        (b, 1),
        (a, 2),
        (b, 2),
        (a, 3),
    ]


# ---------------------------------------------------------------------------------------------
# Two processes: two stores share one log, so each one's cache can be stale


@pytest.fixture
def two(log: MemoryEventLog) -> tuple[SessionStore, SessionStore, UUID]:
    a, b = SessionStore(log), SessionStore(log)
    sid = a.create(tenant_id="t", user_id="u", agent_id="bot").session_id
    a.add_message(sid, role="user", content="hi")
    assert b.get(sid).version == 2  # both have it cached at version 2
    return a, b, sid


def test_an_append_from_a_stale_cache_is_decided_again_on_fresh_state(
    two: tuple[SessionStore, SessionStore, UUID], log: MemoryEventLog
) -> None:
    a, b, sid = two
    b.add_message(sid, role="assistant", content="hello from b")

    result = a.add_message(sid, role="user", content="hello from a")

    assert result.version == 4
    assert [r.event.version for r in log.read_session(sid)] == [1, 2, 3, 4]
    assert a.get(sid) == b.get(sid)
    assert a.get(sid).message_count == 3


def test_a_stale_expected_version_from_another_process_is_a_conflict(
    two: tuple[SessionStore, SessionStore, UUID], log: MemoryEventLog
) -> None:
    a, b, sid = two
    b.record_turn(sid, request_id="r", duration_ms=1)

    with nothing_appended(log), pytest.raises(ConcurrencyConflict) as info:
        a.add_message(sid, role="user", content="x", expected_version=2)

    assert (info.value.expected_version, info.value.actual_version) == (2, 3)


def test_the_current_expected_version_succeeds_even_when_the_cache_is_behind(
    two: tuple[SessionStore, SessionStore, UUID],
) -> None:
    a, b, sid = two
    b.record_turn(sid, request_id="r", duration_ms=1)

    result = a.add_message(sid, role="user", content="x", expected_version=3)

    assert result.version == 4


def test_a_rejection_from_a_stale_cache_is_judged_again_on_fresh_state(
    log: MemoryEventLog,
) -> None:
    a, b = SessionStore(log), SessionStore(log)
    sid = a.create(tenant_id="t", user_id="u", agent_id="bot").session_id
    a.interrupt(sid, reason="disconnect")
    assert a.get(sid).status is SessionStatus.INTERRUPTED
    b.resume(sid)

    result = a.add_message(sid, role="user", content="back again")

    assert result.version == 4
    assert a.get(sid).status is SessionStatus.ACTIVE


def test_a_tool_answer_from_a_stale_cache_is_judged_on_fresh_state(
    two: tuple[SessionStore, SessionStore, UUID],
) -> None:
    a, b, sid = two
    b.add_message(sid, role="assistant", tool_calls=[CALL])

    result = a.add_message(sid, role="tool", content="sunny", tool_call_id="call-1")

    assert result.version == 4
    assert b.get(sid).open_tool_calls == ()


def test_a_rejection_that_still_holds_on_fresh_state_is_raised(
    two: tuple[SessionStore, SessionStore, UUID], log: MemoryEventLog
) -> None:
    a, b, sid = two
    b.end(sid)

    with nothing_appended(log), pytest.raises(InvalidTransition) as info:
        a.add_message(sid, role="user", content="x")

    assert info.value.status == "ended"


def test_a_command_allowed_by_a_stale_cache_is_rejected_on_fresh_state(
    two: tuple[SessionStore, SessionStore, UUID], log: MemoryEventLog
) -> None:
    a, b, sid = two
    b.interrupt(sid, reason="timeout")

    with nothing_appended(log), pytest.raises(InvalidTransition) as info:
        a.record_turn(sid, request_id="r", duration_ms=1)

    assert info.value.status == "interrupted"


def test_get_and_history_see_what_the_other_process_appended(
    two: tuple[SessionStore, SessionStore, UUID],
) -> None:
    a, b, sid = two
    b.end(sid, status="failed")

    assert a.get(sid).end_status is EndStatus.FAILED
    assert len(a.history(sid)) == 3


def test_a_retry_sent_to_the_other_process_is_replayed(
    two: tuple[SessionStore, SessionStore, UUID], log: MemoryEventLog
) -> None:
    a, b, sid = two
    first = a.add_message(sid, role="user", content="x", idempotency_key="k")

    with nothing_appended(log):
        again = b.add_message(sid, role="user", content="x", idempotency_key="k")

    assert again.replayed
    assert again.version == first.version


def test_interleaved_appends_from_both_processes_stay_contiguous(
    two: tuple[SessionStore, SessionStore, UUID], log: MemoryEventLog
) -> None:
    a, b, sid = two
    for i in range(10):
        writer = (a, b)[i % 2]
        writer.record_turn(sid, request_id=f"r{i}", duration_ms=i)

    versions = [r.event.version for r in log.read_session(sid)]
    assert versions == list(range(1, 13))
    assert a.get(sid).turn_count == b.get(sid).turn_count == 10


# ---------------------------------------------------------------------------------------------
# Errors share one base and carry context


def test_every_domain_error_is_a_session_store_error() -> None:
    errors: list[SessionStoreError] = [
        SessionNotFound(uuid4()),
        SessionAlreadyExists(uuid4()),
        InvalidTransition(uuid4(), "ended", "end"),
        TranscriptViolation(uuid4(), "x", ()),
        ConcurrencyConflict(uuid4(), 1, 2),
        IdempotencyKeyReused("k", uuid4()),
        InvalidInput([{"field": "f", "message": "m"}]),
        PayloadTooLarge("content", 2, 1),
    ]

    assert len({e.code for e in errors}) == len(errors)
    assert all(e.context and e.message == str(e) for e in errors)


@pytest.mark.parametrize("bad", ["call-1", {"id": "c1", "name": "f"}, 42])
def test_tool_calls_that_are_not_a_list_are_invalid_input_naming_the_field(
    store: SessionStore, log: MemoryEventLog, sid: UUID, bad: Any
) -> None:
    with nothing_appended(log), pytest.raises(InvalidInput) as info:
        store.add_message(sid, role="assistant", tool_calls=bad)

    assert info.value.errors[0]["field"] == "tool_calls"


def test_tool_calls_may_come_from_any_iterable(store: SessionStore, sid: UUID) -> None:
    calls = ({"id": f"c{i}", "name": "lookup"} for i in range(2))
    store.add_message(sid, role="assistant", tool_calls=calls)

    assert store.get(sid).open_tool_call_ids == ("c0", "c1")


def test_a_stale_expected_version_is_a_conflict_even_when_the_fresh_state_forbids_the_command(
    log: MemoryEventLog,
) -> None:
    """Found by the state machine: store A caches the session as interrupted (v2), store B
    ends it (v3); A's record_turn with expected_version=2 must be a version conflict, not a
    status error, because the caller's view of the session is stale."""
    a, b = SessionStore(log), SessionStore(log)
    sid = a.create(tenant_id="acme", user_id="u", agent_id="bot").session_id
    a.interrupt(sid, reason="disconnect")
    b.end(sid, status="completed")

    with nothing_appended(log), pytest.raises(ConcurrencyConflict) as info:
        a.record_turn(sid, request_id="r", duration_ms=1, expected_version=2)

    assert (info.value.expected_version, info.value.actual_version) == (2, 3)


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"ttl_seconds": 10**12}, "policy"),
        ({"idle_timeout_seconds": 10**12}, "policy"),
        ({"retention_days": 10**7}, "policy"),
    ],
)
def test_policies_beyond_a_century_are_invalid_input(
    store: SessionStore, log: MemoryEventLog, policy: dict[str, int], field: str
) -> None:
    """Found by fuzzing the HTTP API: such a policy overflowed the cleanup view's dates."""
    with nothing_appended(log), pytest.raises(InvalidInput) as info:
        store.create(tenant_id="acme", user_id="u", agent_id="a", policy=policy)
    assert info.value.errors[0]["field"] == field
    assert "at most" in info.value.errors[0]["message"]


def test_turn_latencies_beyond_a_week_are_invalid_input(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    """Found by fuzzing the HTTP API: huge latencies summed to infinity in the metrics."""
    with nothing_appended(log), pytest.raises(InvalidInput) as info:
        store.record_turn(sid, request_id="r", duration_ms=1e300)
    assert info.value.errors[0]["field"] == "duration_ms"
