"""Every event type survives the trip to bytes and back unchanged."""

from __future__ import annotations

from datetime import timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionstore.adapters.storage.serialization import SessionEventMapper
from sessionstore.events.catalogue import (
    EVENT_TYPES,
    MessageAdded,
    Modality,
    SessionEvent,
)
from tests.legacy import MessageAddedV1, v1_mapper
from tests.strategies import STRATEGIES

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
