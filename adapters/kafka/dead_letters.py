"""What the relay sends to the dead-letter topic instead of an event it cannot publish (a row
it cannot decode, an event ``messages.encode`` cannot write): the reason and the event's routing
fields in headers named as the Kafka-fed workers name theirs (docs/kafka.md)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from sessionstore.adapters.kafka.messages import Message
from sessionstore.domain.errors import UndecodableEvent
from sessionstore.domain.ports import RecordedEvent


@dataclass(frozen=True, slots=True)
class RelayDeadLetter:
    """An event the relay sent to the dead-letter topic instead of the events' topic."""

    event_id: str
    session_id: str
    position: int
    reason: str


def ids_of(item: RecordedEvent | UndecodableEvent) -> tuple[str, str]:
    """(event id, session id) as text."""
    if isinstance(item, UndecodableEvent):
        return str(item.event_id), str(item.session_id)
    return str(item.event.event_id), str(item.event.session_id)


def dead_letter_of(item: RecordedEvent | UndecodableEvent, reason: str, topic: str) -> Message:
    """The dead letter for an event the relay cannot publish: the stored state bytes when the
    row could not be decoded, else a small JSON document describing the event; the reason and
    the event's routing fields in headers (the names the Kafka-fed workers use)."""
    event_id, session_id = ids_of(item)
    if isinstance(item, UndecodableEvent):
        version, kind, class_version = item.version, item.topic, item.class_version
        tenant, value = item.tenant_id, item.state
    else:
        event = item.event
        version, kind, class_version, tenant = (
            event.version,
            event.topic,
            event.class_version,
            item.tenant_id,
        )
        value = orjson.dumps(
            {
                "session_id": session_id,
                "version": version,
                "position": item.position,
                "tx": item.tx,
                "event_id": event_id,
                "type": kind,
                "class_version": class_version,
                "tenant_id": tenant,
            }
        )
    headers = [
        ("dead_letter.reason", reason.encode("utf-8", "backslashreplace")),
        ("dead_letter.topic", topic.encode()),
        ("dead_letter.source", b"relay"),
        ("event_id", event_id.encode()),
        ("session_id", session_id.encode()),
        ("version", str(version).encode()),
        ("position", str(item.cursor.position).encode()),
        ("tx", str(item.cursor.tx).encode()),
        ("type", kind.encode("utf-8", "backslashreplace")),
        ("class_version", str(class_version).encode()),
        ("tenant", tenant.encode("utf-8", "backslashreplace")),
    ]
    return Message(session_id.encode(), value, headers)
