"""The event catalogue: every fact a session can record, as frozen pydantic models.

Events are the stored contract, so they validate *types* only. Business rules (a tool message
must answer an open tool call, ...) live in ``domain/`` and run before an event exists; an event
read back from the log is never rejected because a rule was tightened later.

Each class has a stable ``topic`` (never derived from the Python import path, so classes can be
moved or renamed without breaking stored rows) and a ``class_version``. When a payload changes,
bump ``class_version`` and add a ``upcast_vN_vM`` static method that rewrites the stored dict of
version N into version M (see docs/events.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictStr,
    field_validator,
)
from pydantic import Strict as _Strict

# Scalars are strict: "5" is not a number and b"hi" is not text, so a wrong type is an error
# instead of being quietly converted. (An int is still accepted where a float is expected.)
Identifier = Annotated[str, _Strict(), Field(min_length=1, max_length=200)]
"""Ids chosen by callers (tenant, user, agent, message, tool call, request)."""

Milliseconds = Annotated[float, _Strict(), Field(ge=0, allow_inf_nan=False)]
TokenCount = Annotated[int, _Strict(), Field(ge=0)]


class Channel(StrEnum):
    TEXT = "text"
    VOICE = "voice"
    PHONE = "phone"


class Modality(StrEnum):
    """The form a message took before it became text: typed, spoken, or an image."""

    TEXT = "text"
    AUDIO = "audio"
    """Speech: ``content`` is its transcript (speech-to-text for users, the spoken text of TTS)."""
    IMAGE = "image"
    """An image: ``content`` is its caption or description."""


LanguageTag = Annotated[str, _Strict(), Field(min_length=2, max_length=35)]
"""A BCP 47 language tag (``en``, ``de-CH``, ``zh-Hant-TW``). The event checks its length only;
the command checks its syntax (``domain.commands``), so a rule tightened later never makes a
stored event unreadable."""


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class InterruptReason(StrEnum):
    DISCONNECT = "disconnect"
    BARGE_IN = "barge_in"
    TIMEOUT = "timeout"
    ERROR = "error"


class EndStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    ABANDONED = "abandoned"


class Frozen(BaseModel):
    """Immutable value object; unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SessionPolicy(Frozen):
    """How long a session may idle or live, and how long its history is kept after it ends."""

    idle_timeout_seconds: Annotated[int, Field(gt=0)] | None = 1800
    ttl_seconds: Annotated[int, Field(gt=0)] | None = None
    retention_days: Annotated[int, Field(gt=0)] | None = None


class ToolCall(Frozen):
    """A tool invocation requested by an assistant message (OpenAI/ADK shape)."""

    id: Identifier
    name: Identifier
    arguments: dict[str, JsonValue] = Field(default_factory=dict)


class SessionEvent(Frozen):
    """Fields every event carries. ``version`` is the 1-based position in the session's stream."""

    topic: ClassVar[str]
    class_version: ClassVar[int] = 1

    session_id: UUID
    version: Annotated[int, Field(ge=1)]
    occurred_at: AwareDatetime
    event_id: UUID

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo is UTC else value.astimezone(UTC)

    def payload(self) -> dict[str, Any]:
        """The event's own fields (beyond the common ones), as JSON-compatible values."""
        return self.model_dump(mode="json", exclude=_COMMON_FIELDS)


_COMMON_FIELDS: set[str] = {"session_id", "version", "occurred_at", "event_id"}


class SessionCreated(SessionEvent):
    topic: ClassVar[str] = "SessionCreated"

    tenant_id: Identifier
    user_id: Identifier
    agent_id: Identifier
    channel: Channel
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    policy: SessionPolicy = Field(default_factory=SessionPolicy)


class MessageAdded(SessionEvent):
    """One message of the transcript.

    v2 added ``modality`` and ``language``: a voice agent's transcript says which messages were
    spoken (so their text is a speech-to-text transcript) and in which language each was, so the
    consumer can pick the STT/TTS voice and tell the model the language without guessing.
    """

    topic: ClassVar[str] = "MessageAdded"
    class_version: ClassVar[int] = 2

    message_id: Identifier
    role: Role
    content: StrictStr
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: Identifier | None = None
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    modality: Modality = Modality.TEXT
    language: LanguageTag | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """v1 recorded neither field. Old messages read as ``text`` (their content is text,
        whatever its origin; v1 did not say) with the language unknown (None)."""
        added = sorted({"modality", "language"} & state.keys())
        if added:  # v1 never wrote these; a row that has them was not written by v1 code
            msg = f"a v1 MessageAdded has no {', '.join(added)}"
            raise ValueError(msg)
        state["modality"] = Modality.TEXT.value
        state["language"] = None


class TurnRecorded(SessionEvent):
    topic: ClassVar[str] = "TurnRecorded"

    request_id: Identifier
    duration_ms: Milliseconds
    stt_ms: Milliseconds | None = None
    llm_ms: Milliseconds | None = None
    tts_ms: Milliseconds | None = None
    tool_ms: Milliseconds | None = None
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    error: StrictBool = False
    error_type: Identifier | None = None


class ContextUpdated(SessionEvent):
    """A delta of the session's working memory: keys set (with values) and keys removed."""

    topic: ClassVar[str] = "ContextUpdated"

    set: dict[str, JsonValue] = Field(default_factory=dict)
    removed: tuple[str, ...] = ()


class SessionInterrupted(SessionEvent):
    topic: ClassVar[str] = "SessionInterrupted"

    reason: InterruptReason
    detail: str = ""
    aborted_tool_calls: tuple[str, ...] = ()
    """Tool calls still open when the interruption happened; they are closed, not answered."""


class SessionResumed(SessionEvent):
    topic: ClassVar[str] = "SessionResumed"

    resume_count: Annotated[int, Field(ge=1)]
    """How many times the session has resumed, this resumption included."""
    seconds_interrupted: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class SessionEnded(SessionEvent):
    topic: ClassVar[str] = "SessionEnded"

    status: EndStatus
    reason: str = ""
    aborted_tool_calls: tuple[str, ...] = ()


EVENT_TYPES: tuple[type[SessionEvent], ...] = (
    SessionCreated,
    MessageAdded,
    TurnRecorded,
    ContextUpdated,
    SessionInterrupted,
    SessionResumed,
    SessionEnded,
)
