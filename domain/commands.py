"""What callers ask for: one validated, frozen model per command.

These models check the *shape* of a request (types, sizes, which fields go together). Rules that
depend on the session's current state live next to the command functions in ``domain.session``.
The same models are the HTTP request bodies, so both entry points validate identically.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar, Self
from uuid import UUID

from pydantic import (
    BaseModel,
    Field,
    JsonValue,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

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


# What the stored JSON (orjson on every backend) can hold exactly: 64-bit integers, finite
# floats and UTF-8 text. Anything else would fail deep in the log's encoder or, for NaN and
# infinity, be stored as null, so it is rejected here as bad input instead.
_JSON_INT_MIN, _JSON_INT_MAX = -(2**63), 2**64 - 1


def _unstorable(value: object, path: str) -> str | None:
    """Why ``value`` cannot be stored as JSON exactly (naming where), or None if it can."""
    children: list[tuple[object, str]] = []
    if isinstance(value, BaseModel):
        children = [(getattr(value, n), f"{path}.{n}") for n in type(value).model_fields]
    elif isinstance(value, dict):
        for key, item in value.items():
            children += [(key, path), (item, f"{path}.{key}")]
    elif isinstance(value, list | tuple):
        children = [(item, f"{path}.{i}") for i, item in enumerate(value)]
    else:
        return _unstorable_scalar(value, path)
    return next((p for child, where in children if (p := _unstorable(child, where))), None)


def _unstorable_scalar(value: object, path: str) -> str | None:
    problem = None
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            problem = "text is not valid UTF-8 (lone surrogate)"
    elif isinstance(value, int) and not isinstance(value, bool):
        if not _JSON_INT_MIN <= value <= _JSON_INT_MAX:
            problem = "integer outside the 64-bit range JSON storage supports"
    elif isinstance(value, float) and not math.isfinite(value):
        problem = f"{value} is not a JSON number"
    return f"{path}: {problem}" if problem else None


class Command(Frozen):
    """Base of all commands. ``name`` is stable; it goes into idempotency fingerprints."""

    name: ClassVar[str]
    fingerprint_omits: ClassVar[Mapping[str, object]] = {}
    """Fields added after the command first shipped, with the default they are left out of the
    fingerprint at: a request that does not use a new field keeps the fingerprint it had before
    the field existed, so a retry across an upgrade is still recognised as a retry."""

    @model_validator(mode="after")
    def _storable(self) -> Self:
        for field_name in type(self).model_fields:
            problem = _unstorable(getattr(self, field_name), field_name)
            if problem:
                raise ValueError(problem)
        return self

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
MAX_TURN_MS = 7 * 24 * 3600 * 1000.0  # a week
TurnMilliseconds = Annotated[Milliseconds, Field(le=MAX_TURN_MS)]


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
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
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
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
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
