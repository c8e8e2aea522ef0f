"""Bytes for stored events: orjson plugged into the eventsourcing library's Mapper.

``events.codec`` turns events into JSON-compatible dicts (and runs upcasters on the way back);
this module turns those dicts into bytes with orjson, through the library's ``Mapper`` so its
optional compressor and cipher (``COMPRESSOR_TOPIC``, ``CIPHER_TOPIC``/``CIPHER_KEY``) apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Cipher, Compressor, Mapper, StoredEvent, Transcoder

from sessionstore.events.catalogue import SessionEvent
from sessionstore.events.codec import CorruptEvent, EncodedEvent, EventCodec


class OrjsonTranscoder(Transcoder):
    """JSON via orjson. Event state is already JSON-compatible (pydantic ``mode="json"``)."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


@dataclass(frozen=True)
class SessionStoredEvent(StoredEvent):
    """The library's StoredEvent plus the columns every sessionstore backend keeps."""

    event_id: UUID
    occurred_at: datetime
    class_version: int


class SessionEventMapper(Mapper[UUID]):
    """Events <-> SessionStoredEvent, via EventCodec (topics, upcasting) and orjson."""

    def __init__(
        self,
        codec: EventCodec | None = None,
        transcoder: Transcoder | None = None,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        super().__init__(
            transcoder=transcoder or OrjsonTranscoder(), compressor=compressor, cipher=cipher
        )
        self.codec = codec or EventCodec()

    def encode(self, event: SessionEvent) -> SessionStoredEvent:
        encoded = self.codec.encode(event)
        state = self.transcoder.encode(encoded.state)
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        return SessionStoredEvent(
            originator_id=encoded.session_id,
            originator_version=encoded.version,
            topic=encoded.topic,
            state=state,
            event_id=encoded.event_id,
            occurred_at=encoded.occurred_at,
            class_version=encoded.class_version,
        )

    def decode(self, stored: SessionStoredEvent) -> SessionEvent:
        session_id = (
            stored.originator_id
            if isinstance(stored.originator_id, UUID)
            else UUID(stored.originator_id)
        )
        state = stored.state
        try:
            if self.cipher:
                state = self.cipher.decrypt(state)
            if self.compressor:
                state = self.compressor.decompress(state)
            decoded = self.transcoder.decode(state)
        except Exception as e:  # the library's cipher and compressor raise assorted types
            raise CorruptEvent(
                stored.topic, session_id, stored.originator_version, f"undecodable state: {e}"
            ) from e
        if not isinstance(decoded, dict):
            raise CorruptEvent(
                stored.topic, session_id, stored.originator_version, "state is not a JSON object"
            )
        return self.codec.decode(
            EncodedEvent(
                session_id=session_id,
                version=stored.originator_version,
                event_id=stored.event_id,
                occurred_at=stored.occurred_at,
                topic=stored.topic,
                class_version=stored.class_version,
                state=decoded,
            )
        )
