"""What callers ask for: one validated, frozen model per command.

These models check the *shape* of a request (types, sizes, which fields go together). What every
value must be to be storable everywhere (no NUL, valid Unicode, bounded JSON, finite numbers) is
the input contract (``domain.contract``), which the store applies to every command it executes.
Rules that depend on the session's current state live next to the command functions in
``domain.session``. The same models are the HTTP request bodies, so both entry points validate
identically.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar, Self
from uuid import UUID

from pydantic import (
    Field,
    JsonValue,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

from sessionstore.domain.contract import MAX_TOKENS, MAX_TURN_MS
from sessionstore.events.catalogue import (
    Channel,
    EndStatus,
    Frozen,
    Identifier,
    InterruptReason,
    LanguageTag,
    Milliseconds,
    Modality,
    Role,
    SessionPolicy,
    TokenCount,
    ToolCall,
)

ShortText = Annotated[StrictStr, Field(max_length=2000)]

# A well-formed BCP 47 language tag (RFC 5646 "langtag": language[-extlang][-script][-region]
# [-variant]*[-extension]*[-privateuse]), e.g. "en", "de-CH", "zh-Hant-TW", "sl-rozaj-biske".
# Tags are matched case-insensitively and stored as given. Private-use-only ("x-...") and the
# grandfathered irregular tags are not accepted.
_BCP47 = re.compile(
    r"""
    (?:[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4,8})  # language, extlang
    (?:-[a-z]{4})?                               # script
    (?:-(?:[a-z]{2}|[0-9]{3}))?                  # region
    (?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*     # variants
    (?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*         # extensions
    (?:-x(?:-[a-z0-9]{1,8})+)?                   # private use
    """,
    re.IGNORECASE | re.VERBOSE,
)


class Command(Frozen):
    """Base of all commands. ``name`` is stable; it goes into idempotency fingerprints."""

    name: ClassVar[str]
    fingerprint_omits: ClassVar[Mapping[str, object]] = {}
    """Fields added after the command first shipped, with the default they are left out of the
    fingerprint at: a request that does not use a new field keeps the fingerprint it had before
    the field existed, so a retry across an upgrade is still recognised as a retry."""

    def fingerprint(self) -> str:
        """A digest of the request, so a retry can be told apart from a reused key.

        Keys are sorted: equal requests (``{"a": 1, "b": 2}`` == ``{"b": 2, "a": 1}``) must
        get equal fingerprints, whatever order a client's JSON library writes them in.
        """
        fields = self.model_dump(mode="json", exclude_none=True)
        for field_name, default in self.fingerprint_omits.items():
            if fields.get(field_name) == default:
                del fields[field_name]
        body = json.dumps(
            fields,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(f"{self.name}:{body}".encode()).hexdigest()


# Bounds on what a request may ask for. They live on the commands, not on the events, so they
# can be tightened later without making stored events unreadable. Without them a century-long
# policy would overflow date arithmetic in the cleanup view and huge latencies would add up to
# infinity in the metrics.
MAX_POLICY_SECONDS = 100 * 365 * 24 * 3600  # a century
MAX_RETENTION_DAYS = 100 * 365
TurnMilliseconds = Annotated[Milliseconds, Field(le=MAX_TURN_MS)]
Tokens = Annotated[TokenCount, Field(le=MAX_TOKENS)]


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

    @field_validator("policy")
    @classmethod
    def _bounded_policy(cls, p: SessionPolicy) -> SessionPolicy:
        for name, value, limit in (
            ("idle_timeout_seconds", p.idle_timeout_seconds, MAX_POLICY_SECONDS),
            ("ttl_seconds", p.ttl_seconds, MAX_POLICY_SECONDS),
            ("retention_days", p.retention_days, MAX_RETENTION_DAYS),
        ):
            if value is not None and value > limit:
                msg = f"{name} must be at most {limit}"
                raise ValueError(msg)
        return p


class AddMessage(Command):
    name: ClassVar[str] = "add_message"

    role: Role
    content: StrictStr = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: Identifier | None = None
    message_id: Identifier | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    modality: Modality = Modality.TEXT
    """How the message was expressed: typed text, speech (content is its transcript) or an
    image (content describes it)."""
    language: LanguageTag | None = None
    """The message's language as a BCP 47 tag, when the caller knows it (e.g. from STT)."""

    fingerprint_omits: ClassVar[Mapping[str, object]] = {"modality": Modality.TEXT.value}

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str | None) -> str | None:
        if value is not None and not _BCP47.fullmatch(value):
            msg = f"not a BCP 47 language tag (such as en, de-CH or zh-Hant-TW): {value!r}"
            raise ValueError(msg)
        return value

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
    duration_ms: TurnMilliseconds
    stt_ms: TurnMilliseconds | None = None
    llm_ms: TurnMilliseconds | None = None
    tts_ms: TurnMilliseconds | None = None
    tool_ms: TurnMilliseconds | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    error: StrictBool = False
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
