"""Frozen copies of what earlier code shipped: event classes and view tables still in databases.

Tests encode events with these classes to get rows exactly as the old code stored them, then
read them back with the current catalogue (through the upcasters); and build views with the old
table declarations to test the upgrade of a database the old code used. Never change anything
here: it is a record of what was shipped. When an event gets a new version, copy the class as it
was before the change into this module first.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import StrictStr

from sessionstore.adapters.storage.serialization import SessionEventMapper
from sessionstore.events.catalogue import (
    EVENT_TYPES,
    Identifier,
    MessageAdded,
    Role,
    SessionEvent,
    TokenCount,
    ToolCall,
)
from sessionstore.events.codec import EventCodec
from sessionstore.projections.base import Table
from sessionstore.projections.tables import TRANSCRIPT
from sessionstore.projections.transcript import TranscriptProjection


class MessageAddedV1(SessionEvent):
    """MessageAdded as shipped before v2 added ``modality`` and ``language``."""

    topic: ClassVar[str] = "MessageAdded"
    class_version: ClassVar[int] = 1

    message_id: Identifier
    role: Role
    content: StrictStr
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: Identifier | None = None
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None


V1_EVENT_TYPES: tuple[type[SessionEvent], ...] = tuple(
    MessageAddedV1 if cls is MessageAdded else cls for cls in EVENT_TYPES
)
"""The catalogue as the code before MessageAdded v2 had it."""


def v1_mapper() -> SessionEventMapper:
    """A mapper that writes rows the way the code before MessageAdded v2 did."""
    return SessionEventMapper(EventCodec(V1_EVENT_TYPES))


TRANSCRIPT_BEFORE_V2 = Table(
    name=TRANSCRIPT.name,
    columns=tuple(c for c in TRANSCRIPT.columns if c.name not in {"modality", "language"}),
    key=TRANSCRIPT.key,
    indexes=TRANSCRIPT.indexes,
)
"""The transcript table before MessageAdded v2 added its ``modality`` and ``language``."""


class TranscriptProjectionBeforeV2(TranscriptProjection):
    """The transcript projection as it was before MessageAdded v2 (same rows, fewer columns)."""

    tables = (TRANSCRIPT_BEFORE_V2,)
