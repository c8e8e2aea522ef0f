"""Every event type survives the trip to bytes and back unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionstore.adapters.storage.serialization import SessionEventMapper
from sessionstore.events.catalogue import (
    EVENT_TYPES,
    Channel,
    ContextUpdated,
    EndStatus,
    InterruptReason,
    MessageAdded,
    Modality,
    Role,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionPolicy,
    SessionResumed,
    ToolCall,
    TurnRecorded,
)
from tests.legacy import MessageAddedV1, v1_mapper

# Text as agents send it: any Unicode that UTF-8 can carry (emoji, RTL, CJK, control chars).
text = st.text(st.characters(codec="utf-8"), max_size=60)
identifiers = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(text, json_values, max_size=5)

offsets = st.sampled_from([0, 60, -300, 330, 525, 840]).map(
    lambda minutes: UTC if minutes == 0 else timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - bounds of st.datetimes are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=offsets,
)
milliseconds = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
token_counts = st.none() | st.integers(min_value=0, max_value=2**31)

common: dict[str, Any] = {
    "session_id": st.uuids(),
    "version": st.integers(min_value=1, max_value=2**31),
    "occurred_at": aware_datetimes,
    "event_id": st.uuids(),
}

tool_calls = st.builds(ToolCall, id=identifiers, name=identifiers, arguments=json_objects)
positive_or_none = st.none() | st.integers(min_value=1, max_value=10**9)

STRATEGIES: dict[type[SessionEvent], st.SearchStrategy[SessionEvent]] = {
    SessionCreated: st.builds(
        SessionCreated,
        **common,
        tenant_id=identifiers,
        user_id=identifiers,
        agent_id=identifiers,
        channel=st.sampled_from(Channel),
        metadata=json_objects,
        policy=st.builds(
            SessionPolicy,
            idle_timeout_seconds=positive_or_none,
            ttl_seconds=positive_or_none,
            retention_days=positive_or_none,
        ),
    ),
    MessageAdded: st.builds(
        MessageAdded,
        **common,
        message_id=identifiers,
        role=st.sampled_from(Role),
        content=text,
        tool_calls=st.lists(tool_calls, max_size=3).map(tuple),
        tool_call_id=st.none() | identifiers,
        input_tokens=token_counts,
        output_tokens=token_counts,
        modality=st.sampled_from(Modality),
        language=st.none() | st.text(st.characters(codec="utf-8"), min_size=2, max_size=35),
    ),
    TurnRecorded: st.builds(
        TurnRecorded,
        **common,
        request_id=identifiers,
        duration_ms=milliseconds,
        stt_ms=st.none() | milliseconds,
        llm_ms=st.none() | milliseconds,
        tts_ms=st.none() | milliseconds,
        tool_ms=st.none() | milliseconds,
        input_tokens=token_counts,
        output_tokens=token_counts,
        error=st.booleans(),
        error_type=st.none() | identifiers,
    ),
    ContextUpdated: st.builds(
        ContextUpdated,
        **common,
        set=json_objects,
        removed=st.lists(text, max_size=4).map(tuple),
    ),
    SessionInterrupted: st.builds(
        SessionInterrupted,
        **common,
        reason=st.sampled_from(InterruptReason),
        detail=text,
        aborted_tool_calls=st.lists(identifiers, max_size=3).map(tuple),
    ),
    SessionResumed: st.builds(
        SessionResumed,
        **common,
        resume_count=st.integers(min_value=1, max_value=10**6),
        seconds_interrupted=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    ),
    SessionEnded: st.builds(
        SessionEnded,
        **common,
        status=st.sampled_from(EndStatus),
        reason=text,
        aborted_tool_calls=st.lists(identifiers, max_size=3).map(tuple),
    ),
}

any_event = st.one_of(*STRATEGIES.values())
mapper = SessionEventMapper()


def test_every_event_type_in_the_catalogue_has_a_strategy() -> None:
    """A new event type must get a strategy here, or this suite does not cover it."""
    assert set(STRATEGIES) == set(EVENT_TYPES)


@settings(max_examples=300)
@given(any_event)
def test_every_event_round_trips_through_bytes_to_an_equal_event(event: SessionEvent) -> None:
    stored = mapper.encode(event)
    assert isinstance(stored.state, bytes)

    decoded = mapper.decode(stored)

    assert type(decoded) is type(event)
    assert decoded == event
    assert decoded.payload() == event.payload()


@given(any_event)
def test_the_stored_payload_is_plain_json_of_the_event_fields(event: SessionEvent) -> None:
    stored = mapper.encode(event)

    assert orjson.loads(stored.state) == event.payload()
    assert stored.topic == event.topic
    assert stored.originator_version == event.version
    assert stored.occurred_at == event.occurred_at
    assert stored.occurred_at.utcoffset() == timedelta(0)


@given(STRATEGIES[MessageAdded])
def test_a_message_written_as_v1_reads_back_as_v2_with_the_defaults(event: SessionEvent) -> None:
    assert isinstance(event, MessageAdded)
    old_fields = {k: v for k, v in dict(event).items() if k not in {"modality", "language"}}
    stored = v1_mapper().encode(MessageAddedV1(**old_fields))
    assert stored.class_version == 1

    decoded = mapper.decode(stored)

    assert decoded == event.model_copy(update={"modality": Modality.TEXT, "language": None})


@given(any_event)
def test_encoding_is_deterministic(event: SessionEvent) -> None:
    assert mapper.encode(event) == mapper.encode(event)
