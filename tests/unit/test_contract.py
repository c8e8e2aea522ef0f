"""The input contract, through the store: what cannot be stored everywhere is refused with a
typed error naming the field path, and nothing is written."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain import contract
from sessionstore.domain.contract import MAX_TOKENS, Limits
from sessionstore.domain.errors import InvalidInput, PayloadTooLarge
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import MessageAdded, SessionCreated, TurnRecorded

CREATE = {"tenant_id": "acme", "user_id": "u-1", "agent_id": "bot"}
CALL = {"id": "call-1", "name": "get_weather", "arguments": {"city": "Zürich"}}


@pytest.fixture
def log() -> MemoryEventLog:
    return MemoryEventLog()


@pytest.fixture
def store(log: MemoryEventLog) -> SessionStore:
    return SessionStore(log)


@pytest.fixture
def sid(store: SessionStore) -> UUID:
    return store.create(**CREATE).session_id


@contextmanager
def refused(log: MemoryEventLog, field: str, message: str) -> Iterator[None]:
    """The call raises InvalidInput naming ``field`` (a path) with ``message`` in it, and the
    log is exactly as it was."""
    before = log.count_after(log.head()), log.head()
    with pytest.raises(InvalidInput) as info:
        yield
    assert (log.count_after(log.head()), log.head()) == before
    assert any(e["field"] == field and message in e["message"] for e in info.value.errors), (
        info.value.errors
    )


# ---------------------------------------------------------------------------------------------
# Text: valid Unicode, no NUL, in every string the store keeps


NUL_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("create", {**CREATE, "tenant_id": "ac\x00me"}, "tenant_id"),
    ("create", {**CREATE, "user_id": "\x00"}, "user_id"),
    ("create", {**CREATE, "agent_id": "bot\x00"}, "agent_id"),
    ("create", {**CREATE, "metadata": {"k\x00": 1}}, "metadata.k\\x00"),
    ("create", {**CREATE, "metadata": {"k": ["ok", {"deep": "v\x00"}]}}, "metadata.k.1.deep"),
    ("message", {"role": "user", "content": "hi\x00"}, "content"),
    ("message", {"role": "user", "content": "x", "message_id": "m\x00"}, "message_id"),
    ("tools", {"tool_calls": [{**CALL, "id": "c\x00"}]}, "tool_calls.0.id"),
    ("tools", {"tool_calls": [{**CALL, "name": "n\x00"}]}, "tool_calls.0.name"),
    ("tools", {"tool_calls": [{**CALL, "arguments": {"a": "\x00"}}]}, "tool_calls.0.arguments.a"),
    ("context", {"set": {"k": "\x00"}}, "set.k"),
    ("context", {"set": {"\x00": 1}}, "set.\\x00"),
    ("end", {"reason": "bye\x00"}, "reason"),
    ("interrupt", {"reason": "error", "detail": "\x00"}, "detail"),
    ("turn", {"request_id": "r\x00", "duration_ms": 1}, "request_id"),
    (
        "turn",
        {"request_id": "r", "duration_ms": 1, "error": True, "error_type": "\x00"},
        "error_type",
    ),
]


def _call(store: SessionStore, sid: UUID, kind: str, fields: dict[str, Any]) -> object:
    if kind == "create":
        return store.create(**fields)
    if kind == "tools":
        return store.add_message(sid, role="assistant", **fields)
    method = {
        "message": store.add_message,
        "context": store.update_context,
        "end": store.end,
        "interrupt": store.interrupt,
        "turn": store.record_turn,
    }[kind]
    return method(sid, **fields)


@pytest.mark.parametrize("case", NUL_FIELDS, ids=lambda case: case[2])
def test_a_nul_anywhere_is_refused_naming_its_path(
    store: SessionStore, log: MemoryEventLog, sid: UUID, case: tuple[str, dict[str, Any], str]
) -> None:
    kind, fields, path = case
    with refused(log, path, "NUL"):
        _call(store, sid, kind, fields)


@pytest.mark.parametrize(
    "case",
    [
        ("message", {"role": "user", "content": "broken \ud800 emoji"}, "content"),
        ("create", {**CREATE, "metadata": {"key\udfff": 1}}, "metadata.key\\udfff"),
        ("context", {"set": {"k": ["\ud83d"]}}, "set.k.0"),
    ],
    ids=lambda case: case[2],
)
def test_lone_surrogates_are_refused(
    store: SessionStore, log: MemoryEventLog, sid: UUID, case: tuple[str, dict[str, Any], str]
) -> None:
    kind, fields, path = case
    with refused(log, path, "lone surrogate"):
        _call(store, sid, kind, fields)


def test_a_lone_surrogate_in_a_bounded_text_field_is_refused_too(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    # pydantic itself refuses it (its message), before the contract's walk: the same outcome.
    with refused(log, "reason", "unicode"):
        store.end(sid, reason="\udc00")


def test_an_idempotency_key_follows_the_same_rules(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    with refused(log, "idempotency_key", "NUL"):
        store.add_message(sid, role="user", content="x", idempotency_key="k\x00")
    with refused(log, "idempotency_key", "lone surrogate"):
        store.add_message(sid, role="user", content="x", idempotency_key="k\ud800")


def test_emoji_and_every_script_are_fine(store: SessionStore, sid: UUID) -> None:
    text = "Grüße 👋🏽 — こんにちは — مرحبا — \U0010fffd"
    store.add_message(sid, role="user", content=text, idempotency_key=text)

    assert store.history(sid)[-1].event.content == text  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_json_numbers_must_be_finite(
    store: SessionStore, log: MemoryEventLog, sid: UUID, bad: float
) -> None:
    with refused(log, "metadata.score", "not a JSON number"):
        store.create(**CREATE, metadata={"score": bad})
    with refused(log, "set.a.0.b", "not a JSON number"):
        store.update_context(sid, set={"a": [{"b": bad}]})
    with refused(log, "tool_calls.0.arguments.x", "not a JSON number"):
        store.add_message(sid, role="assistant", tool_calls=[{**CALL, "arguments": {"x": bad}}])


@pytest.mark.parametrize("bad", [2**64, -(2**63) - 1, 10**30])
def test_json_integers_must_fit_in_64_bits(
    store: SessionStore, log: MemoryEventLog, bad: int
) -> None:
    with refused(log, "metadata.n", "64-bit"):
        store.create(**CREATE, metadata={"n": bad})


def test_the_64_bit_boundaries_themselves_are_fine(store: SessionStore, sid: UUID) -> None:
    store.update_context(sid, set={"max": 2**64 - 1, "min": -(2**63), "flag": True})

    assert store.get(sid).context["max"] == 2**64 - 1


@pytest.mark.parametrize("tokens", [MAX_TOKENS + 1, 2**63, 2**64])
def test_token_counts_are_bounded_so_no_sum_can_overflow(
    store: SessionStore, log: MemoryEventLog, sid: UUID, tokens: int
) -> None:
    with refused(log, "input_tokens", str(MAX_TOKENS)):
        store.add_message(sid, role="user", content="x", input_tokens=tokens)
    with refused(log, "output_tokens", str(MAX_TOKENS)):
        store.record_turn(sid, request_id="r", duration_ms=1, output_tokens=tokens)


def test_the_token_bound_itself_is_fine(store: SessionStore, sid: UUID) -> None:
    store.record_turn(sid, request_id="r", duration_ms=1, input_tokens=MAX_TOKENS)

    assert store.get(sid).version == 2


# ---------------------------------------------------------------------------------------------
# JSON shape: depth and key count (configurable)


def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_json_nesting_is_bounded_and_the_deepest_path_is_named(
    store: SessionStore, log: MemoryEventLog, sid: UUID
) -> None:
    store.update_context(sid, set={"ok": nested(31)})  # 32 levels with the set itself
    deepest = "set.k" + ".a" * 32
    with refused(log, deepest.rsplit(".a", 1)[0], "nested 33 levels deep; the limit is 32"):
        store.update_context(sid, set={"k": nested(32)})
    with refused(log, "metadata" + ".a" * 40, "nested 41 levels"):
        store.create(**CREATE, metadata=nested(41))  # type: ignore[arg-type]


def test_depth_hundreds_of_levels_deep_is_invalid_input_not_a_crash(
    store: SessionStore, log: MemoryEventLog
) -> None:
    with pytest.raises(InvalidInput):
        store.create(**CREATE, metadata={"x": nested(300)})
    assert log.count_after(log.head()) == 0


def test_json_keys_are_bounded_in_all(store: SessionStore, log: MemoryEventLog, sid: UUID) -> None:
    small = SessionStore(log, limits=Limits(max_json_keys=5, max_json_depth=3))
    small.update_context(sid, set={"a": 1, "b": {"c": 1, "d": 2}, "e": 3})  # 5 keys
    with refused(log, "set", "6 object keys; the limit is 5"):
        small.update_context(sid, set={"a": 1, "b": {"c": 1, "d": 2}, "e": 3, "f": 4})
    with refused(log, "set.a.a.a", "nested 4 levels deep; the limit is 3"):
        small.update_context(sid, set=nested(4))  # type: ignore[arg-type]


def test_depth_limit_cannot_be_set_beyond_what_exports_can_wrap() -> None:
    with pytest.raises(ValueError, match="max_json_depth"):
        Limits(max_json_depth=contract.MAX_JSON_DEPTH_CEILING + 1)


def test_every_problem_is_listed_with_its_path(store: SessionStore, log: MemoryEventLog) -> None:
    with pytest.raises(InvalidInput) as info:
        store.create(**{**CREATE, "user_id": "u\x00"}, metadata={"a": float("nan"), "b": "\ud800"})

    assert {e["field"] for e in info.value.errors} == {"user_id", "metadata.a", "metadata.b"}


def test_sizes_are_still_payload_too_large(log: MemoryEventLog) -> None:
    small = SessionStore(log, limits=Limits(max_content_bytes=4))
    sid = small.create(**CREATE).session_id
    with pytest.raises(PayloadTooLarge) as info:
        small.add_message(sid, role="user", content="hello")

    assert (info.value.field, info.value.size, info.value.limit) == ("content", 5, 4)


# ---------------------------------------------------------------------------------------------
# Events that arrive built (import, Kafka): the same rules


def _message(**fields: Any) -> MessageAdded:
    return MessageAdded(
        session_id=uuid4(),
        version=2,
        occurred_at=datetime.now(UTC),
        event_id=uuid4(),
        message_id="m",
        role="user",
        **fields,
    )


def test_an_event_breaking_the_contract_is_named_field_by_field() -> None:
    event = _message(content="a\x00", input_tokens=2**63)

    found = {p["field"]: p["message"] for p in contract.event_problems(event, Limits())}

    assert "NUL" in found["content"]
    assert str(MAX_TOKENS) in found["input_tokens"]


def test_event_times_must_lie_in_the_supported_range() -> None:
    late = SessionCreated(
        session_id=uuid4(),
        version=1,
        occurred_at=datetime(9999, 12, 31, tzinfo=UTC),
        event_id=uuid4(),
        tenant_id="t",
        user_id="u",
        agent_id="a",
        channel="text",
    )
    early = late.model_copy(update={"occurred_at": datetime(1969, 12, 31, tzinfo=UTC)})

    for event in (late, early):
        [problem] = contract.event_problems(event, Limits())
        assert problem["field"] == "occurred_at"


def test_an_event_within_the_contract_has_no_problems() -> None:
    turn = TurnRecorded(
        session_id=uuid4(),
        version=3,
        occurred_at=datetime.now(UTC) - timedelta(days=1),
        event_id=uuid4(),
        request_id="r",
        duration_ms=12.5,
        input_tokens=MAX_TOKENS,
    )

    assert contract.event_problems(turn, Limits()) == []
    assert contract.event_problems(_message(content="ok"), Limits()) == []
