"""Events as Kafka messages: every event type survives encode -> decode, the key and headers say
what a consumer routes on, an old class_version is upcast, and anything unreadable is rejected
with a MalformedMessage that names the problem."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionstore.adapters.kafka.messages import (
    CONTENT_TYPE,
    MalformedMessage,
    Message,
    decode,
    encode,
)
from sessionstore.domain.ports import RecordedEvent
from sessionstore.events.catalogue import (
    EVENT_TYPES,
    MessageAdded,
    Modality,
    Role,
    SessionEvent,
)
from sessionstore.events.codec import EventCodec
from tests.legacy import MessageAddedV1
from tests.strategies import CONTRACT_STRATEGIES, aware_datetimes
from tests.strategies import contract_identifiers as identifiers

SID = UUID("00000000-0000-4000-8000-0000000000aa")
EID = UUID("00000000-0000-4000-8000-0000000000e1")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CODEC = EventCodec()


def recorded_of(event_type: type[SessionEvent]) -> st.SearchStrategy[RecordedEvent]:
    return st.builds(
        RecordedEvent,
        event=CONTRACT_STRATEGIES[event_type],
        tenant_id=identifiers,
        position=st.integers(min_value=1, max_value=2**62),
        tx=st.integers(min_value=0, max_value=2**62),
        recorded_at=aware_datetimes,
    )


def message(**changes: Any) -> MessageAdded:
    fields: dict[str, Any] = {
        "session_id": SID,
        "version": 3,
        "occurred_at": T0,
        "event_id": EID,
        "message_id": "m-1",
        "role": Role.USER,
        "content": "Grüezi 👋",
        "input_tokens": 7,
        "modality": Modality.AUDIO,
        "language": "de-CH",
    }
    return MessageAdded(**(fields | changes))


def recorded(event: SessionEvent | None = None) -> RecordedEvent:
    return RecordedEvent(
        event=event or message(),
        tenant_id="acme",
        position=42,
        tx=7,
        recorded_at=T0 + timedelta(seconds=1, microseconds=250),
    )


def value_dict(record: RecordedEvent | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(encode(record or recorded()).value)
    return loaded


# ---------------------------------------------------------------------------------------------
# Round trip


def test_every_event_type_in_the_catalogue_has_a_strategy() -> None:
    assert set(CONTRACT_STRATEGIES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.topic)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_event_round_trips_through_a_message(
    event_type: type[SessionEvent], data: st.DataObject
) -> None:
    original = data.draw(recorded_of(event_type))

    msg = encode(original)
    decoded = decode(msg.value, CODEC, msg.key)

    assert type(decoded.event) is event_type
    assert decoded == original
    assert decoded.event.payload() == original.event.payload()
    assert (decoded.tenant_id, decoded.position, decoded.tx) == (
        original.tenant_id,
        original.position,
        original.tx,
    )
    assert decoded.recorded_at == original.recorded_at
    assert decoded.recorded_at.tzinfo is UTC
    assert decoded.event.occurred_at == original.event.occurred_at
    assert decoded.cursor == original.cursor


def test_times_in_any_offset_arrive_as_the_same_instant_in_utc() -> None:
    zurich = timezone(timedelta(hours=1))
    original = RecordedEvent(
        event=message(occurred_at=datetime(2025, 3, 1, 23, 30, 0, 5, tzinfo=zurich)),
        tenant_id="acme",
        position=1,
        tx=0,
        recorded_at=datetime(2025, 3, 2, 0, 15, 0, 999_999, tzinfo=zurich),
    )

    raw = value_dict(original)
    decoded = decode(encode(original).value, CODEC)

    assert raw["occurred_at"] == "2025-03-01T22:30:00.000005Z"
    assert raw["recorded_at"] == "2025-03-01T23:15:00.999999Z"
    assert decoded == original
    assert decoded.recorded_at.utcoffset() == timedelta(0)
    assert decoded.event.occurred_at.utcoffset() == timedelta(0)


# ---------------------------------------------------------------------------------------------
# Key, headers, value


def test_the_key_is_the_session_id_and_the_headers_describe_the_event() -> None:
    msg = encode(recorded())

    assert isinstance(msg, Message)
    assert msg.key == str(SID).encode() == b"00000000-0000-4000-8000-0000000000aa"
    assert msg.headers == [
        ("event_id", str(EID).encode()),
        ("type", b"MessageAdded"),
        ("class_version", b"2"),
        ("tenant", b"acme"),
        ("position", b"42"),
        ("tx", b"7"),
        ("content-type", CONTENT_TYPE),
    ]
    assert CONTENT_TYPE == b"application/vnd.sessionstore.event+json"


def test_the_value_is_one_json_object_with_the_envelope_and_the_payload() -> None:
    event = message()

    assert value_dict(recorded(event)) == {
        "session_id": str(SID),
        "version": 3,
        "position": 42,
        "tx": 7,
        "event_id": str(EID),
        "type": "MessageAdded",
        "class_version": 2,
        "occurred_at": "2025-03-01T12:00:00.000000Z",
        "recorded_at": "2025-03-01T12:00:01.000250Z",
        "tenant_id": "acme",
        "payload": event.payload(),
    }


@settings(max_examples=50, deadline=None)
@given(st.one_of(*(recorded_of(t) for t in EVENT_TYPES)))
def test_headers_agree_with_the_value(original: RecordedEvent) -> None:
    msg = encode(original)
    value = orjson.loads(msg.value)
    headers = dict(msg.headers)

    assert len(headers) == len(msg.headers)  # no header twice
    assert msg.key == value["session_id"].encode()
    assert headers["event_id"] == value["event_id"].encode()
    assert headers["type"] == value["type"].encode() == original.event.topic.encode()
    assert headers["class_version"] == str(value["class_version"]).encode()
    assert headers["tenant"] == value["tenant_id"].encode()
    assert headers["position"] == str(value["position"]).encode()
    assert headers["tx"] == str(value["tx"]).encode()
    assert headers["content-type"] == CONTENT_TYPE


def test_decoding_without_a_key_skips_the_key_check() -> None:
    msg = encode(recorded())

    assert decode(msg.value, CODEC) == decode(msg.value, CODEC, msg.key) == recorded()


# ---------------------------------------------------------------------------------------------
# Older class versions are upcast


def _v1(event: MessageAdded) -> MessageAddedV1:
    old = {k: v for k, v in dict(event).items() if k not in {"modality", "language"}}
    return MessageAddedV1(**old)


def test_a_v1_message_decodes_as_the_current_version_with_the_defaults() -> None:
    current = message()
    old = recorded(_v1(current))

    msg = encode(old)
    decoded = decode(msg.value, CODEC, msg.key)

    assert dict(msg.headers)["class_version"] == b"1"
    assert orjson.loads(msg.value)["class_version"] == 1
    assert "modality" not in orjson.loads(msg.value)["payload"]
    assert type(decoded.event) is MessageAdded
    assert decoded.event == current.model_copy(update={"modality": Modality.TEXT, "language": None})
    assert (decoded.tenant_id, decoded.position, decoded.tx) == ("acme", 42, 7)


@settings(max_examples=50, deadline=None)
@given(CONTRACT_STRATEGIES[MessageAdded])
def test_any_v1_message_is_upcast_to_v2(event: SessionEvent) -> None:
    assert isinstance(event, MessageAdded)

    decoded = decode(encode(recorded(_v1(event))).value, CODEC)

    assert decoded.event == event.model_copy(update={"modality": Modality.TEXT, "language": None})


def test_a_v1_message_that_has_v2_fields_is_malformed() -> None:
    raw = value_dict()
    raw["class_version"] = 1  # but the payload carries modality and language: not v1 data

    with pytest.raises(MalformedMessage) as caught:
        decode(orjson.dumps(raw), CODEC)

    assert "upcast_v1_v2 failed" in caught.value.reason
    assert "modality" in caught.value.reason


# ---------------------------------------------------------------------------------------------
# Malformed messages


def reason_of(value: bytes | None, key: bytes | None = None) -> str:
    with pytest.raises(MalformedMessage) as caught:
        decode(value, CODEC, key)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "empty message (no value)"),
        (b"", "value is not JSON"),
        (b"not json at all", "value is not JSON"),
        (b'{"session_id": ', "value is not JSON"),
        (b"\xff\xfe", "value is not JSON"),
        (b"[1, 2, 3]", "value is not a JSON object but list"),
        (b'"MessageAdded"', "value is not a JSON object but str"),
        (b"null", "value is not a JSON object but NoneType"),
        (b"42", "value is not a JSON object but int"),
    ],
    ids=["none", "empty", "text", "truncated", "not-utf8", "list", "string", "null", "number"],
)
def test_a_value_that_is_not_a_json_object_is_rejected(value: bytes | None, expected: str) -> None:
    assert reason_of(value).startswith(expected)


Change = Callable[[dict[str, Any]], None]


def _drop(field: str) -> Change:
    return lambda raw: raw.pop(field)


def _set(field: str, value: Any) -> Change:
    return lambda raw: raw.__setitem__(field, value)


def _set_payload(field: str, value: Any) -> Change:
    return lambda raw: raw["payload"].__setitem__(field, value)


def _drop_payload(field: str) -> Change:
    return lambda raw: raw["payload"].pop(field)


BAD_ENVELOPES: dict[str, tuple[Change, str]] = {
    "no version": (_drop("version"), "version: Field required"),
    "no session_id": (_drop("session_id"), "session_id: Field required"),
    "no payload": (_drop("payload"), "payload: Field required"),
    "no type": (_drop("type"), "type: Field required"),
    "unknown field": (_set("hash", "ab12"), "hash: Extra inputs are not permitted"),
    "version 0": (_set("version", 0), "version: Input should be greater than or equal to 1"),
    "negative version": (_set("version", -3), "version: Input should be greater than or equal"),
    "version as text": (_set("version", "3"), "version: Input should be a valid integer"),
    "version as float": (_set("version", 3.0), "version: Input should be a valid integer"),
    "version as bool": (_set("version", value=True), "version: Input should be a valid integer"),
    "position 0": (_set("position", 0), "position: Input should be greater than or equal to 1"),
    "position as text": (_set("position", "42"), "position: Input should be a valid integer"),
    "negative tx": (_set("tx", -1), "tx: Input should be greater than or equal to 0"),
    "class_version 0": (_set("class_version", 0), "class_version: Input should be greater"),
    "class_version as text": (_set("class_version", "2"), "class_version: Input should be a valid"),
    "bad session uuid": (
        _set("session_id", "not-a-uuid"),
        "session_id: Input should be a valid UUID",
    ),
    "bad event uuid": (_set("event_id", "1234"), "event_id: Input should be a valid UUID"),
    "session id as int": (_set("session_id", 170), "session_id: "),
    "naive occurred_at": (
        _set("occurred_at", "2025-03-01T12:00:00"),
        "occurred_at: Input should have timezone info",
    ),
    "naive recorded_at": (
        _set("recorded_at", "2025-03-01T12:00:01.000250"),
        "recorded_at: Input should have timezone info",
    ),
    "not a time": (
        _set("occurred_at", "yesterday"),
        "occurred_at: Input should be a valid datetime",
    ),
    "empty tenant": (_set("tenant_id", ""), "tenant_id: String should have at least 1 character"),
    "tenant as int": (_set("tenant_id", 5), "tenant_id: Input should be a valid string"),
    "type as int": (_set("type", 5), "type: Input should be a valid string"),
    "payload as list": (_set("payload", []), "payload: Input should be a valid dictionary"),
}


@pytest.mark.parametrize(("change", "expected"), BAD_ENVELOPES.values(), ids=BAD_ENVELOPES)
def test_a_bad_envelope_is_rejected_naming_the_field(change: Change, expected: str) -> None:
    raw = value_dict()
    change(raw)

    assert reason_of(orjson.dumps(raw)).startswith(expected)


def test_an_unknown_event_type_is_rejected() -> None:
    raw = value_dict()
    raw["type"] = "NoSuchEvent"

    reason = reason_of(orjson.dumps(raw))

    assert "unknown event topic 'NoSuchEvent'" in reason


BAD_PAYLOADS: dict[str, tuple[Change, list[str]]] = {
    "unknown role": (_set_payload("role", "robot"), ["role", "robot"]),
    "no content": (_drop_payload("content"), ["content", "Field required"]),
    "content as number": (_set_payload("content", 5), ["content", "valid string"]),
    "negative tokens": (_set_payload("input_tokens", -1), ["input_tokens", "greater than"]),
    "tokens as text": (_set_payload("input_tokens", "7"), ["input_tokens", "valid integer"]),
    "unknown payload field": (_set_payload("mood", "happy"), ["mood", "Extra inputs"]),
    "unknown modality": (_set_payload("modality", "smell"), ["modality"]),
}


@pytest.mark.parametrize(("change", "expected"), BAD_PAYLOADS.values(), ids=BAD_PAYLOADS)
def test_a_payload_the_event_class_rejects_is_malformed(
    change: Change, expected: list[str]
) -> None:
    raw = value_dict()
    change(raw)

    reason = reason_of(orjson.dumps(raw))

    assert reason.startswith(f"stored MessageAdded of session {SID} v3 is invalid")
    for part in expected:
        assert part in reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", 9), ("session_id", str(SID)), ("event_id", str(SID)), ("occurred_at", "x")],
)
def test_a_payload_repeating_an_envelope_field_is_rejected(field: str, value: object) -> None:
    raw = value_dict()
    _set_payload(field, value)(raw)

    assert reason_of(orjson.dumps(raw)) == f"payload repeats envelope fields: {field}"


def test_a_class_version_newer_than_the_code_is_rejected() -> None:
    raw = value_dict()
    raw["class_version"] = 3

    reason = reason_of(orjson.dumps(raw))

    assert "MessageAdded is class_version 3, newer than this code's 2" in reason


@pytest.mark.parametrize(
    "key",
    [
        str(UUID(int=1)).encode(),
        str(SID).upper().encode(),
        b"",
        b"x" * 500,
    ],
    ids=["other session", "upper case", "empty", "long"],
)
def test_a_key_that_is_not_the_session_id_is_rejected(key: bytes) -> None:
    reason = reason_of(encode(recorded()).value, key)

    assert f"is not the event's session id {SID}" in reason
    assert len(reason) < 200  # a long key is cut short in the reason


def test_the_first_problem_is_named_when_there_are_several() -> None:
    raw = value_dict()
    raw["type"] = "NoSuchEvent"
    raw["version"] = 0

    reason = reason_of(orjson.dumps(raw))  # the envelope is checked before the event type

    assert reason.startswith("version:")


@pytest.mark.parametrize(
    ("event", "tenant", "expected"),
    [
        (message(content="a\x00b"), "acme", "content: contains NUL"),
        (message(input_tokens=2**40), "acme", "input_tokens: must be at most"),
        (message(occurred_at=datetime(2300, 1, 1, tzinfo=UTC)), "acme", "occurred_at"),
        (message(), "ac\x00me", "tenant_id: contains NUL"),
    ],
    ids=["NUL in content", "token count", "time out of range", "NUL in tenant"],
)
def test_a_well_formed_event_that_breaks_the_input_contract_is_malformed(
    event: MessageAdded, tenant: str, expected: str
) -> None:
    original = RecordedEvent(event=event, tenant_id=tenant, position=42, tx=7, recorded_at=T0)
    msg = encode(original)

    reason = reason_of(msg.value, msg.key)

    assert reason.startswith("breaks the input contract: ")
    assert expected in reason
