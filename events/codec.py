"""Mapping between event objects and their stored form, with upcasting of old versions.

The stored form of an event is its stable ``topic``, its ``class_version``, the common fields
(kept in their own columns by every backend) and ``state``: the JSON-compatible dict of its own
fields. Turning ``state`` into bytes is the transcoder's job (orjson, in ``adapters/``), so this
module stays free of serialisers and drivers.

Reading runs every ``upcast_vN_vM`` step from the stored version up to the class's current one
(the step the eventsourcing library's pydantic mapper example leaves out).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from sessionstore.events.catalogue import EVENT_TYPES, SessionEvent


class CodecError(Exception):
    """A stored event cannot be turned back into an event object."""


class UnknownEventType(CodecError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"unknown event topic {topic!r}: not in the event catalogue")
        self.topic = topic


class UnsupportedClassVersion(CodecError):
    def __init__(self, topic: str, stored: int, current: int) -> None:
        super().__init__(
            f"stored {topic} is class_version {stored}, newer than this code's {current}: "
            "upgrade sessionstore before reading this log"
        )
        self.topic, self.stored, self.current = topic, stored, current


class CorruptEvent(CodecError):
    def __init__(self, topic: str, session_id: UUID, version: int, problem: str) -> None:
        super().__init__(f"stored {topic} of session {session_id} v{version} is invalid: {problem}")
        self.topic, self.session_id, self.version = topic, session_id, version


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event in stored form: what a recorder writes, before the state becomes bytes."""

    session_id: UUID
    version: int
    event_id: UUID
    occurred_at: datetime
    topic: str
    class_version: int
    state: dict[str, Any]


class EventCodec:
    """Encodes events to their stored form and decodes (upcasting) them back."""

    def __init__(self, event_types: Iterable[type[SessionEvent]] = EVENT_TYPES) -> None:
        self._by_topic: dict[str, type[SessionEvent]] = {}
        for cls in event_types:
            if cls.topic in self._by_topic:
                msg = f"two event classes share the topic {cls.topic!r}"
                raise ValueError(msg)
            self._check_upcasters(cls)
            self._by_topic[cls.topic] = cls

    @staticmethod
    def _check_upcasters(event_type: type[SessionEvent]) -> None:
        for step in range(1, event_type.class_version):
            if not callable(getattr(event_type, f"upcast_v{step}_v{step + 1}", None)):
                msg = (
                    f"{event_type.__name__} is class_version {event_type.class_version} "
                    f"but lacks upcast_v{step}_v{step + 1}"
                )
                raise TypeError(msg)

    @property
    def topics(self) -> Mapping[str, type[SessionEvent]]:
        return self._by_topic

    def encode(self, event: SessionEvent) -> EncodedEvent:
        cls = type(event)
        if self._by_topic.get(cls.topic) is not cls:
            raise UnknownEventType(cls.topic)
        return EncodedEvent(
            session_id=event.session_id,
            version=event.version,
            event_id=event.event_id,
            occurred_at=event.occurred_at,
            topic=cls.topic,
            class_version=cls.class_version,
            state=event.payload(),
        )

    def decode(self, encoded: EncodedEvent) -> SessionEvent:
        cls = self._by_topic.get(encoded.topic)
        if cls is None:
            raise UnknownEventType(encoded.topic)
        state = dict(encoded.state)
        stored_version = encoded.class_version
        if stored_version > cls.class_version:
            raise UnsupportedClassVersion(encoded.topic, stored_version, cls.class_version)
        while stored_version < cls.class_version:
            step = f"upcast_v{stored_version}_v{stored_version + 1}"
            try:
                getattr(cls, step)(state)
            except Exception as e:  # an old row the upcaster cannot handle is corrupt data
                raise CorruptEvent(
                    encoded.topic, encoded.session_id, encoded.version, f"{step} failed: {e!r}"
                ) from e
            stored_version += 1
        try:
            return cls.model_validate(
                {
                    **state,
                    "session_id": encoded.session_id,
                    "version": encoded.version,
                    "event_id": encoded.event_id,
                    "occurred_at": encoded.occurred_at,
                }
            )
        except ValidationError as e:
            raise CorruptEvent(encoded.topic, encoded.session_id, encoded.version, str(e)) from e
