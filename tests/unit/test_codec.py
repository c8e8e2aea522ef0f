"""EventCodec and SessionEventMapper: topics, class versions, upcasting, and corrupt rows."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar
from uuid import UUID, uuid4

import orjson
import pytest
from eventsourcing.compressor import ZlibCompressor
from pydantic import ValidationError

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.serialization import SessionEventMapper, SessionStoredEvent
from sessionstore.events.catalogue import (
    EVENT_TYPES,
    MessageAdded,
    Modality,
    Role,
    SessionCreated,
    SessionEvent,
    SessionResumed,
)
from sessionstore.events.codec import (
    CodecError,
    CorruptEvent,
    EncodedEvent,
    EventCodec,
    UnknownEventType,
    UnsupportedClassVersion,
)
from tests.legacy import MessageAddedV1, v1_mapper

SID = UUID("00000000-0000-4000-8000-0000000000aa")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def common(version: int = 1) -> dict[str, Any]:
    return {"session_id": SID, "version": version, "occurred_at": T0, "event_id": uuid4()}


# ---------------------------------------------------------------------------------------------
# Upcasting: store a v1 event, change the class to v2 (and v3), read it back upcast


class FeedbackV1(SessionEvent):
    """The first shape of a test event: a thumbs up or down."""

    topic: ClassVar[str] = "test.FeedbackGiven"

    thumbs_up: bool


class FeedbackV2(SessionEvent):
    """v2 replaced the boolean with a 1-5 score and added a free-text comment."""

    topic: ClassVar[str] = "test.FeedbackGiven"
    class_version: ClassVar[int] = 2

    score: int
    comment: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["score"] = 5 if state.pop("thumbs_up") else 1
        state["comment"] = ""


class FeedbackV3(SessionEvent):
    """v3 renamed comment to note and added the channel the feedback came from."""

    topic: ClassVar[str] = "test.FeedbackGiven"
    class_version: ClassVar[int] = 3

    score: int
    note: str
    source: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        FeedbackV2.upcast_v1_v2(state)

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["note"] = state.pop("comment")
        state["source"] = "unknown"


def mapper_for(*event_types: type[SessionEvent]) -> SessionEventMapper:
    return SessionEventMapper(EventCodec([SessionCreated, *event_types]))


def test_a_stored_v1_event_is_read_back_upcast_to_v2() -> None:
    v1 = FeedbackV1(**common(3), thumbs_up=True)
    stored = mapper_for(FeedbackV1).encode(v1)
    assert (stored.topic, stored.class_version) == ("test.FeedbackGiven", 1)
    assert orjson.loads(stored.state) == {"thumbs_up": True}

    # The code changes: the same topic now maps to the v2 class.
    event = mapper_for(FeedbackV2).decode(stored)

    assert isinstance(event, FeedbackV2)
    assert (event.score, event.comment) == (5, "")
    assert (event.session_id, event.version, event.occurred_at, event.event_id) == (
        v1.session_id,
        v1.version,
        v1.occurred_at,
        v1.event_id,
    )


def test_a_v1_event_stored_in_the_log_is_read_back_upcast_after_the_code_changes() -> None:
    log = MemoryEventLog(mapper_for(FeedbackV1))
    created = SessionCreated(**common(1), tenant_id="t", user_id="u", agent_id="a", channel="text")
    log.append([created, FeedbackV1(**common(2), thumbs_up=False)], tenant_id="t")

    log.mapper = mapper_for(FeedbackV2)  # what a deploy of the new code does
    recorded = log.read_session(SID)

    assert recorded[0].event == created
    feedback = recorded[1].event
    assert isinstance(feedback, FeedbackV2)
    assert (feedback.version, feedback.score, feedback.comment) == (2, 1, "")


class BrokenUpcastV2(SessionEvent):
    topic: ClassVar[str] = "test.FeedbackGiven"
    class_version: ClassVar[int] = 2

    score: int

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["score"] = state.pop("stars")  # old rows have no "stars": KeyError


def test_an_upcaster_that_fails_on_an_old_row_reports_it_as_corrupt() -> None:
    stored = mapper_for(FeedbackV1).encode(FeedbackV1(**common(4), thumbs_up=True))

    with pytest.raises(CorruptEvent) as info:
        mapper_for(BrokenUpcastV2).decode(stored)

    assert "upcast_v1_v2 failed" in str(info.value)
    assert (info.value.session_id, info.value.version) == (SID, 4)


def test_a_v1_event_is_upcast_through_every_step_to_v3() -> None:
    stored = mapper_for(FeedbackV1).encode(FeedbackV1(**common(), thumbs_up=True))

    event = mapper_for(FeedbackV3).decode(stored)

    assert isinstance(event, FeedbackV3)
    assert (event.score, event.note, event.source) == (5, "", "unknown")


def test_a_v2_event_only_runs_the_steps_after_v2() -> None:
    stored = mapper_for(FeedbackV2).encode(FeedbackV2(**common(), score=3, comment="slow"))
    assert stored.class_version == 2

    event = mapper_for(FeedbackV3).decode(stored)

    assert isinstance(event, FeedbackV3)
    assert (event.score, event.note, event.source) == (3, "slow", "unknown")


def test_a_current_version_event_is_not_upcast() -> None:
    v3 = FeedbackV3(**common(), score=4, note="ok", source="voice")
    mapper = mapper_for(FeedbackV3)

    assert mapper.decode(mapper.encode(v3)) == v3


def test_upcasting_does_not_change_the_stored_state() -> None:
    stored = EncodedEvent(
        session_id=SID,
        version=1,
        event_id=uuid4(),
        occurred_at=T0,
        topic="test.FeedbackGiven",
        class_version=1,
        state={"thumbs_up": True},
    )

    EventCodec([FeedbackV3]).decode(stored)

    assert stored.state == {"thumbs_up": True}


def test_a_class_version_above_one_needs_every_upcaster() -> None:
    class NoUpcaster(SessionEvent):
        topic: ClassVar[str] = "test.NoUpcaster"
        class_version: ClassVar[int] = 2

    class MissingSecondStep(SessionEvent):
        topic: ClassVar[str] = "test.MissingSecondStep"
        class_version: ClassVar[int] = 3

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["x"] = 1

    with pytest.raises(TypeError, match="NoUpcaster is class_version 2 but lacks upcast_v1_v2"):
        EventCodec([NoUpcaster])
    with pytest.raises(TypeError, match="lacks upcast_v2_v3"):
        EventCodec([MissingSecondStep])


def test_an_upcaster_must_be_callable() -> None:
    class NotCallable(SessionEvent):
        topic: ClassVar[str] = "test.NotCallable"
        class_version: ClassVar[int] = 2
        upcast_v1_v2: ClassVar[str] = "rename x to y"

    with pytest.raises(TypeError, match="lacks upcast_v1_v2"):
        EventCodec([NotCallable])


def test_two_classes_cannot_share_a_topic() -> None:
    with pytest.raises(ValueError, match=r"share the topic 'test\.FeedbackGiven'"):
        EventCodec([FeedbackV1, FeedbackV2])


# ---------------------------------------------------------------------------------------------
# MessageAdded v1 -> v2: rows the code before v2 wrote (tests.legacy.py keeps that class)


def test_a_message_stored_as_v1_reads_as_v2_text_in_an_unknown_language() -> None:
    v1 = MessageAddedV1(**common(5), message_id="m-1", role="user", content="hello", input_tokens=2)
    stored = v1_mapper().encode(v1)
    assert (stored.topic, stored.class_version) == ("MessageAdded", 1)
    assert "modality" not in orjson.loads(stored.state)

    event = SessionEventMapper().decode(stored)

    assert isinstance(event, MessageAdded)
    assert (event.modality, event.language) == (Modality.TEXT, None)
    assert (event.message_id, event.role, event.content, event.input_tokens) == (
        "m-1",
        Role.USER,
        "hello",
        2,
    )
    assert (event.session_id, event.version, event.event_id, event.occurred_at) == (
        v1.session_id,
        5,
        v1.event_id,
        v1.occurred_at,
    )
    # Encoding it again writes the current version, with the filled-in fields.
    again = SessionEventMapper().encode(event)
    assert again.class_version == 2
    assert orjson.loads(again.state) == {
        **orjson.loads(stored.state),
        "modality": "text",
        "language": None,
    }


def test_a_v1_message_row_carrying_v2_fields_is_corrupt() -> None:
    state = {"message_id": "m-1", "role": "user", "content": "hi", "modality": "audio"}
    stored = replace(stored_message(state=orjson.dumps(state)), class_version=1)

    error = assert_corrupt(stored, "upcast_v1_v2 failed")

    assert "a v1 MessageAdded has no modality" in str(error)


def test_a_v1_message_row_missing_a_v1_field_is_corrupt_after_upcasting() -> None:
    state = {"message_id": "m-1", "content": "hi"}
    stored = replace(stored_message(state=orjson.dumps(state)), class_version=1)

    error = assert_corrupt(stored, "validation error")

    assert "role" in str(error)


# ---------------------------------------------------------------------------------------------
# Topics and versions the code does not know


def test_an_unknown_topic_cannot_be_decoded() -> None:
    stored = mapper_for(FeedbackV1).encode(FeedbackV1(**common(), thumbs_up=True))

    with pytest.raises(UnknownEventType) as info:
        SessionEventMapper().decode(stored)

    assert info.value.topic == "test.FeedbackGiven"
    assert isinstance(info.value, CodecError)


def test_an_event_class_outside_the_catalogue_cannot_be_encoded() -> None:
    with pytest.raises(UnknownEventType, match=r"test\.FeedbackGiven"):
        SessionEventMapper().encode(FeedbackV1(**common(), thumbs_up=True))


def test_a_different_class_with_a_catalogue_topic_cannot_be_encoded() -> None:
    class Impostor(SessionEvent):
        topic: ClassVar[str] = "MessageAdded"

    with pytest.raises(UnknownEventType):
        SessionEventMapper().encode(Impostor(**common()))


def test_a_stored_class_version_newer_than_the_code_is_refused() -> None:
    stored = mapper_for(FeedbackV3).encode(FeedbackV3(**common(), score=1, note="", source="x"))

    with pytest.raises(UnsupportedClassVersion) as info:
        mapper_for(FeedbackV2).decode(stored)

    assert (info.value.topic, info.value.stored, info.value.current) == (
        "test.FeedbackGiven",
        3,
        2,
    )
    assert "upgrade sessionstore" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Corrupt rows: CorruptEvent naming the session and version


def stored_message(**changes: Any) -> SessionStoredEvent:
    event = MessageAdded(**common(7), message_id="m-1", role="user", content="hi")
    return replace(SessionEventMapper().encode(event), **changes)


def assert_corrupt(stored: SessionStoredEvent, problem: str) -> CorruptEvent:
    with pytest.raises(CorruptEvent) as info:
        SessionEventMapper().decode(stored)
    error = info.value
    assert (error.topic, error.session_id, error.version) == ("MessageAdded", SID, 7)
    assert f"stored MessageAdded of session {SID} v7 is invalid" in str(error)
    assert problem in str(error)
    return error


@pytest.mark.parametrize("state", [b"{not json", b"", b"\xff\xfe", b'{"role": "user"'])
def test_bytes_that_are_not_json_are_a_corrupt_event(state: bytes) -> None:
    assert_corrupt(stored_message(state=state), "undecodable state")


@pytest.mark.parametrize("state", [b"[1, 2]", b'"text"', b"null", b"42", b"true"])
def test_json_that_is_not_an_object_is_a_corrupt_event(state: bytes) -> None:
    assert_corrupt(stored_message(state=state), "state is not a JSON object")


@pytest.mark.parametrize(
    "state",
    [
        {"message_id": "m-1", "role": "user"},
        {"message_id": "m-1", "role": "robot", "content": "hi"},
        {"message_id": "m-1", "role": "user", "content": 42},
        {"message_id": "", "role": "user", "content": "hi"},
        {"message_id": "m-1", "role": "user", "content": "hi", "input_tokens": -1},
        {"message_id": "m-1", "role": "user", "content": "hi", "surprise": True},
        {"message_id": "m-1", "role": "user", "content": "hi", "tool_calls": [{"id": "c"}]},
        {"message_id": "m-1", "role": "user", "content": "hi", "modality": "video"},
        {"message_id": "m-1", "role": "user", "content": "hi", "language": "e"},
        {"message_id": "m-1", "role": "user", "content": "hi", "language": 1},
    ],
    ids=[
        "missing content",
        "unknown role",
        "content not text",
        "empty id",
        "negative tokens",
        "unknown field",
        "bad tool call",
        "unknown modality",
        "language too short",
        "language not text",
    ],
)
def test_fields_that_do_not_validate_are_a_corrupt_event(state: dict[str, Any]) -> None:
    error = assert_corrupt(stored_message(state=orjson.dumps(state)), "validation error")

    assert isinstance(error.__cause__, ValidationError)


def test_a_corrupt_compressed_row_is_a_corrupt_event() -> None:
    mapper = SessionEventMapper(compressor=ZlibCompressor())
    stored = mapper.encode(MessageAdded(**common(7), message_id="m", role="user", content="hi"))

    with pytest.raises(CorruptEvent, match="undecodable state"):
        mapper.decode(replace(stored, state=b"not zlib"))


def test_the_codec_reports_corrupt_fields_without_the_transcoder() -> None:
    encoded = EncodedEvent(
        session_id=SID,
        version=4,
        event_id=uuid4(),
        occurred_at=T0,
        topic="SessionResumed",
        class_version=1,
        state={"resume_count": 0, "seconds_interrupted": 1.0},
    )

    with pytest.raises(CorruptEvent) as info:
        EventCodec().decode(encoded)

    assert (info.value.topic, info.value.session_id, info.value.version) == (
        "SessionResumed",
        SID,
        4,
    )


# ---------------------------------------------------------------------------------------------
# The stored form


def test_the_stored_form_keeps_common_fields_in_columns_and_the_payload_as_json() -> None:
    event = MessageAdded(
        **common(2),
        message_id="m-1",
        role="assistant",
        content="Grüße 👋",
        output_tokens=3,
        modality="audio",
        language="de-CH",
    )

    stored = SessionEventMapper().encode(event)

    assert (stored.originator_id, stored.originator_version) == (SID, 2)
    assert (stored.event_id, stored.occurred_at) == (event.event_id, T0)
    assert (stored.topic, stored.class_version) == ("MessageAdded", 2)
    assert isinstance(stored.state, bytes)
    assert orjson.loads(stored.state) == {
        "message_id": "m-1",
        "role": "assistant",
        "content": "Grüße 👋",
        "tool_calls": [],
        "tool_call_id": None,
        "input_tokens": None,
        "output_tokens": 3,
        "modality": "audio",
        "language": "de-CH",
    }
    assert SessionEventMapper().decode(stored) == event


def test_a_compressed_mapper_round_trips() -> None:
    mapper = SessionEventMapper(compressor=ZlibCompressor())
    event = MessageAdded(**common(2), message_id="m", role="user", content="ab" * 1000)

    stored = mapper.encode(event)

    assert len(stored.state) < 1000
    assert mapper.decode(stored) == event


def test_a_session_id_stored_as_text_is_read_back_as_a_uuid() -> None:
    stored = stored_message(originator_id=str(SID))

    assert SessionEventMapper().decode(stored).session_id == SID


def test_the_catalogue_topics_are_stable() -> None:
    """Topics are the stored contract: renaming one breaks every stored row."""
    assert [cls.topic for cls in EVENT_TYPES] == [
        "SessionCreated",
        "MessageAdded",
        "TurnRecorded",
        "ContextUpdated",
        "SessionInterrupted",
        "SessionResumed",
        "SessionEnded",
    ]
    assert {cls.topic: cls.class_version for cls in EVENT_TYPES} == {
        "SessionCreated": 1,
        "MessageAdded": 2,
        "TurnRecorded": 1,
        "ContextUpdated": 1,
        "SessionInterrupted": 1,
        "SessionResumed": 1,
        "SessionEnded": 1,
    }
    assert dict(EventCodec().topics) == {cls.topic: cls for cls in EVENT_TYPES}


def test_the_payload_leaves_out_the_common_fields() -> None:
    event = SessionResumed(**common(3), resume_count=2, seconds_interrupted=1.5)

    assert event.payload() == {"resume_count": 2, "seconds_interrupted": 1.5}


def test_occurred_at_is_normalised_to_utc() -> None:
    local = datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))

    event = SessionResumed(
        **{**common(2), "occurred_at": local}, resume_count=1, seconds_interrupted=0
    )

    assert event.occurred_at == T0
    assert event.occurred_at.tzinfo is UTC


def test_an_event_needs_a_timezone_aware_time() -> None:
    with pytest.raises(ValidationError):
        SessionResumed(
            **{**common(2), "occurred_at": datetime(2025, 3, 1, 12, 0)},  # noqa: DTZ001
            resume_count=1,
            seconds_interrupted=0,
        )


@pytest.mark.parametrize("version", [0, -1])
def test_an_event_version_starts_at_one(version: int) -> None:
    with pytest.raises(ValidationError):
        SessionResumed(**common(version), resume_count=1, seconds_interrupted=0)


def test_events_are_immutable_and_reject_unknown_fields() -> None:
    event = SessionResumed(**common(2), resume_count=1, seconds_interrupted=0)

    with pytest.raises(ValidationError):
        event.resume_count = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SessionResumed(**common(2), resume_count=1, seconds_interrupted=0, extra=1)  # type: ignore[call-arg]
