"""What callers ask for: one validated, frozen model per command.

These models check the *shape* of a request (types, sizes, which fields go together). Rules that
depend on the session's current state live next to the command functions in ``domain.session``.
The same models are the HTTP request bodies, so both entry points validate identically.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar, Self
from uuid import UUID

from pydantic import Field, JsonValue, model_validator

from events.catalogue import (
    Channel,
    EndStatus,
    Frozen,
    Identifier,
    InterruptReason,
    Milliseconds,
    Role,
    SessionPolicy,
    TokenCount,
    ToolCall,
)

ShortText = Annotated[str, Field(max_length=2000)]


class Command(Frozen):
    """Base of all commands. ``name`` is stable; it goes into idempotency fingerprints."""

    name: ClassVar[str]

    def fingerprint(self) -> str:
        """A digest of the request, so a retry can be told apart from a reused key."""
        body = self.model_dump_json(exclude_none=True)
        return hashlib.sha256(f"{self.name}:{body}".encode()).hexdigest()


class CreateSession(Command):
    name: ClassVar[str] = "create"

    tenant_id: Identifier
    user_id: Identifier
    agent_id: Identifier
    channel: Channel = Channel.TEXT
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    policy: SessionPolicy = Field(default_factory=SessionPolicy)
    session_id: UUID | None = None
    """Optional client-chosen id; a new one is generated when absent."""


class AddMessage(Command):
    name: ClassVar[str] = "add_message"

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: Identifier | None = None
    message_id: Identifier | None = None
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.tool_calls and self.role is not Role.ASSISTANT:
            msg = f"tool_calls are only allowed on assistant messages, not {self.role.value}"
            raise ValueError(msg)
        if self.role is Role.TOOL and self.tool_call_id is None:
            msg = "a tool message needs tool_call_id (the call it answers)"
            raise ValueError(msg)
        if self.role is not Role.TOOL and self.tool_call_id is not None:
            msg = f"tool_call_id is only allowed on tool messages, not {self.role.value}"
            raise ValueError(msg)
        if not self.content.strip() and not self.tool_calls:
            msg = "content must not be empty (unless an assistant message carries tool_calls)"
            raise ValueError(msg)
        ids = [call.id for call in self.tool_calls]
        if len(ids) != len(set(ids)):
            msg = "tool call ids must be unique within a message"
            raise ValueError(msg)
        return self


class RecordTurn(Command):
    name: ClassVar[str] = "record_turn"

    request_id: Identifier
    duration_ms: Milliseconds
    stt_ms: Milliseconds | None = None
    llm_ms: Milliseconds | None = None
    tts_ms: Milliseconds | None = None
    tool_ms: Milliseconds | None = None
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    error: bool = False
    error_type: Identifier | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.error_type is not None and not self.error:
            msg = "error_type is only allowed when error is true"
            raise ValueError(msg)
        return self


class UpdateContext(Command):
    name: ClassVar[str] = "update_context"

    set: dict[Annotated[str, Field(min_length=1, max_length=200)], JsonValue] = Field(
        default_factory=dict
    )
    remove: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if not self.set and not self.remove:
            msg = "a context update must set or remove at least one key"
            raise ValueError(msg)
        both = sorted(set(self.set) & set(self.remove))
        if both:
            msg = f"keys both set and removed: {', '.join(both)}"
            raise ValueError(msg)
        return self


class Interrupt(Command):
    name: ClassVar[str] = "interrupt"

    reason: InterruptReason
    detail: ShortText = ""


class Resume(Command):
    name: ClassVar[str] = "resume"


class End(Command):
    name: ClassVar[str] = "end"

    status: EndStatus = EndStatus.COMPLETED
    reason: ShortText = ""
