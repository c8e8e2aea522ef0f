"""Events as Kafka messages: what the relay produces and the Kafka-fed projector reads.

- key: the session id (text), so one session's events share a partition and keep their order;
- value: the event as one JSON object (orjson) — the same fields as a line of
  ``sessionstore audit export`` plus ``tx`` (the log cursor's first half), without ``hash``;
- headers: ``event_id``, ``type``, ``class_version``, ``tenant``, ``position``, ``tx`` and
  ``content-type`` (so consumers can route or filter without parsing the value).

``decode`` checks everything a consumer relies on and raises ``MalformedMessage`` naming the
first problem; the payload is validated by the event's own class, through the codec (which
also upcasts an older ``class_version``), and then by the input contract every entry applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from sessionstore.domain import contract
from sessionstore.domain.contract import Limits
from sessionstore.domain.ports import RecordedEvent
from sessionstore.events.codec import CodecError, EncodedEvent, EventCodec

CONTENT_TYPE = b"application/vnd.sessionstore.event+json"

Header = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes
    value: bytes
    headers: list[Header]


class MalformedMessage(ValueError):
    """A message on the topic that is not a readable sessionstore event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(recorded: RecordedEvent) -> Message:
    event = recorded.event
    cls = type(event)
    value = orjson.dumps(
        {
            "session_id": str(event.session_id),
            "version": event.version,
            "position": recorded.position,
            "tx": recorded.tx,
            "event_id": str(event.event_id),
            "type": cls.topic,
            "class_version": cls.class_version,
            "occurred_at": _time(event.occurred_at),
            "recorded_at": _time(recorded.recorded_at),
            "tenant_id": recorded.tenant_id,
            "payload": event.payload(),
        }
    )
    headers = [
        ("event_id", str(event.event_id).encode()),
        ("type", cls.topic.encode()),
        ("class_version", str(cls.class_version).encode()),
        ("tenant", recorded.tenant_id.encode()),
        ("position", str(recorded.position).encode()),
        ("tx", str(recorded.tx).encode()),
        ("content-type", CONTENT_TYPE),
    ]
    return Message(str(event.session_id).encode(), value, headers)


Positive = Annotated[StrictInt, Field(ge=1)]
_ENVELOPE_ONLY = frozenset({"session_id", "version", "event_id", "occurred_at"})
"""Fields of every event that travel in the envelope; a payload carrying one is suspect (which
value would be the event's?)."""


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: UUID
    version: Positive
    position: Positive
    tx: Annotated[StrictInt, Field(ge=0)]
    event_id: UUID
    type: StrictStr
    class_version: Positive
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    tenant_id: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    payload: dict[str, Any]


def decode(
    value: bytes | None,
    codec: EventCodec,
    key: bytes | None = None,
    *,
    limits: Limits | None = None,
) -> RecordedEvent:
    """The event a message carries, or MalformedMessage naming what is wrong with it,
    including a break of the input contract (``domain.contract``, with ``limits``)."""
    if value is None:
        raise MalformedMessage("empty message (no value)")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise MalformedMessage(f"value is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise MalformedMessage(f"value is not a JSON object but {type(raw).__name__}")
    try:
        envelope = _Envelope.model_validate(raw)
    except PydanticValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        raise MalformedMessage(f"{where}: {first['msg']}") from None
    copied = sorted(_ENVELOPE_ONLY & envelope.payload.keys())
    if copied:
        raise MalformedMessage(f"payload repeats envelope fields: {', '.join(copied)}")
    if key is not None and key != str(envelope.session_id).encode():
        raise MalformedMessage(
            f"key {key[:60]!r} is not the event's session id {envelope.session_id}"
        )
    try:
        event = codec.decode(
            EncodedEvent(
                session_id=envelope.session_id,
                version=envelope.version,
                event_id=envelope.event_id,
                occurred_at=envelope.occurred_at,
                topic=envelope.type,
                class_version=envelope.class_version,
                state=envelope.payload,
            )
        )
    except CodecError as e:
        raise MalformedMessage(str(e)) from None
    tenant_problem = contract.text_problem(envelope.tenant_id)
    problems = contract.event_problems(event, limits or Limits())
    if tenant_problem:
        problems.insert(0, {"field": "tenant_id", "message": tenant_problem})
    if problems:
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        raise MalformedMessage(f"breaks the input contract: {summary}")
    return RecordedEvent(
        event=event,
        tenant_id=envelope.tenant_id,
        position=envelope.position,
        tx=envelope.tx,
        recorded_at=envelope.recorded_at.astimezone(UTC),
    )
