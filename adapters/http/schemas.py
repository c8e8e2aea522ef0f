"""Request and response bodies of the API (pydantic models) and the limits on their fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from sessionstore.domain.commands import RecordTurn
from sessionstore.domain.contract import MAX_TURN_MS
from sessionstore.domain.session import SessionStatus
from sessionstore.events.catalogue import (
    Channel,
    EndStatus,
    Identifier,
    Milliseconds,
    Role,
    SessionPolicy,
    ToolCall,
)
from sessionstore.projections.queries import SessionSummary, TranscriptEntry

# ---------------------------------------------------------------------------------------------
# Request bodies (the domain's command models, except create: its tenant comes from the key)


MAX_POLICY_SECONDS = 100 * 366 * 86400
MAX_RETENTION_DAYS = 100 * 366


class PolicyBody(BaseModel):
    """A session's idle/TTL/retention policy. Bounded to a century: deadlines far beyond that
    would overflow the date arithmetic of the cleanup view."""

    model_config = ConfigDict(extra="forbid")

    idle_timeout_seconds: Annotated[int, Field(gt=0, le=MAX_POLICY_SECONDS)] | None = 1800
    ttl_seconds: Annotated[int, Field(gt=0, le=MAX_POLICY_SECONDS)] | None = None
    retention_days: Annotated[int, Field(gt=0, le=MAX_RETENTION_DAYS)] | None = None


BoundedMs = Annotated[Milliseconds, Field(le=MAX_TURN_MS)]


class TurnBody(RecordTurn):
    """RecordTurn with each latency at most a week: sums of unbounded floats overflow to
    infinity, which the metrics cannot report (and no turn takes longer)."""

    duration_ms: BoundedMs
    stt_ms: BoundedMs | None = None
    llm_ms: BoundedMs | None = None
    tts_ms: BoundedMs | None = None
    tool_ms: BoundedMs | None = None


class CreateSessionBody(BaseModel):
    """A new session. The tenant is the API key's; ``session_id`` may be chosen by the client."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    agent_id: Identifier
    channel: Channel = Channel.TEXT
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    policy: PolicyBody = Field(default_factory=PolicyBody)
    session_id: UUID | None = None


# ---------------------------------------------------------------------------------------------
# Response bodies


class AppendOut(BaseModel):
    """Where an append left the session: its version and the global log position (pass it as
    ``min_position`` to read your own write from the views)."""

    session_id: UUID
    version: int
    position: int


class SessionOut(BaseModel):
    """A session's state."""

    model_config = ConfigDict(from_attributes=True)

    session_id: UUID
    tenant_id: str
    user_id: str
    agent_id: str
    channel: Channel
    policy: SessionPolicy
    created_at: datetime
    version: int
    status: SessionStatus
    metadata: dict[str, JsonValue]
    context: dict[str, JsonValue]
    last_activity_at: datetime | None
    interrupted_at: datetime | None
    ended_at: datetime | None
    end_status: EndStatus | None
    end_reason: str | None
    message_count: int
    turn_count: int
    error_turn_count: int
    interrupt_count: int
    resume_count: int
    input_tokens: int
    output_tokens: int
    open_tool_calls: list[ToolCall]
    last_message_role: Role | None
    last_message_preview: str | None


class SessionViewOut(SessionOut):
    position: int = Field(description="Log position of the last event the view has applied")


class StateAsOfOut(BaseModel):
    as_of_version: int | None
    as_of_time: datetime | None
    state: SessionOut


class SessionPageOut(BaseModel):
    items: list[SessionSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: end")


class MessagesOut(BaseModel):
    session_id: UUID
    messages: list[TranscriptEntry]


class EventOut(BaseModel):
    session_id: UUID
    version: int
    type: str = Field(description="The event's topic, e.g. MessageAdded")
    class_version: int
    event_id: UUID
    occurred_at: datetime
    position: int
    recorded_at: datetime
    payload: dict[str, JsonValue]


class HistoryOut(BaseModel):
    events: list[EventOut]
    next_after_version: int | None = Field(description="Pass as ?after_version= for more")


class ProjectionOut(BaseModel):
    name: str
    generation: int
    position: int
    head: int
    lag_events: int
    building: int | None
    feed: Literal["log", "kafka"] = Field(
        description="Where the view's events come from; a Kafka-fed view's lag is its consumer "
        "group's (`sessionstore projections status --kafka`), not lag_events"
    )
    quarantined: int = Field(
        0,
        description="Events this view could not apply and holds in quarantine (with the later "
        "events of their sessions, which wait behind them); see `sessionstore projections "
        "quarantine list`",
    )


class RebuildOut(BaseModel):
    projection: str
    generation: int
    events_read: int


class HealthOut(BaseModel):
    status: Literal["ok", "ready", "degraded"] = Field(
        description="degraded: ready, but some views hold quarantined events (their sessions are "
        "held there; every other session is served), or the embedded projector retries a "
        "failing database (views may lag); `reason` says which and what to run"
    )
    checks: dict[str, str] = Field(default_factory=dict)
    reason: str | None = Field(None, description="Why the status is degraded")
