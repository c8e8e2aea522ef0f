"""The Session aggregate: its state, the fold that builds it from events, and its commands.

State machine: ``active ⇄ interrupted → ended`` (ended is terminal). Each command function takes
the current state and a validated command, checks the rule that guards it (written right next to
it) and returns the event to append; it never mutates anything. ``evolve`` is the one fold used
everywhere: by the store, by audits and, as Python or SQL, by the projections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from uuid import UUID

from pydantic import JsonValue

from sessionstore.domain.commands import (
    AddMessage,
    CreateSession,
    End,
    Interrupt,
    RecordTurn,
    UpdateContext,
)
from sessionstore.domain.contract import saturated
from sessionstore.domain.errors import InvalidTransition, TranscriptViolation
from sessionstore.events.catalogue import (
    Channel,
    ContextUpdated,
    EndStatus,
    MessageAdded,
    Role,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionPolicy,
    SessionResumed,
    ToolCall,
    TurnRecorded,
)

PREVIEW_CHARS = 120


class SessionStatus(StrEnum):
    ACTIVE = "active"
    INTERRUPTED = "interrupted"
    ENDED = "ended"


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Session:
    """Current state of one session: a pure function of its events.

    Not slotted on purpose: ``_evolved`` copies the instance dict, which is several times
    faster than ``dataclasses.replace`` on the hot paths (every append, every projected event).
    """

    session_id: UUID
    tenant_id: str
    user_id: str
    agent_id: str
    channel: Channel
    policy: SessionPolicy
    created_at: datetime
    version: int = 1
    status: SessionStatus = SessionStatus.ACTIVE
    metadata: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)
    context: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)
    last_activity_at: datetime | None = None
    interrupted_at: datetime | None = None
    ended_at: datetime | None = None
    end_status: EndStatus | None = None
    end_reason: str | None = None
    message_count: int = 0
    turn_count: int = 0
    error_turn_count: int = 0
    interrupt_count: int = 0
    resume_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    open_tool_calls: tuple[ToolCall, ...] = ()
    last_message_role: Role | None = None
    last_message_preview: str | None = None

    @property
    def open_tool_call_ids(self) -> tuple[str, ...]:
        return tuple(call.id for call in self.open_tool_calls)

    @property
    def is_ended(self) -> bool:
        return self.status is SessionStatus.ENDED


# ---------------------------------------------------------------------------------------------
# The fold


def evolve(state: Session | None, event: SessionEvent) -> Session:
    """Apply one event to the state. The only way state ever changes."""
    if state is None:
        if not isinstance(event, SessionCreated):
            msg = f"a session's first event must be SessionCreated, got {event.topic}"
            raise TypeError(msg)
        return Session(
            session_id=event.session_id,
            tenant_id=event.tenant_id,
            user_id=event.user_id,
            agent_id=event.agent_id,
            channel=event.channel,
            policy=event.policy,
            created_at=event.occurred_at,
            version=event.version,
            metadata=MappingProxyType(dict(event.metadata)),
            last_activity_at=event.occurred_at,
        )
    if event.version != state.version + 1 or event.session_id != state.session_id:
        msg = (
            f"event {event.topic} v{event.version} of session {event.session_id} does not "
            f"follow session {state.session_id} v{state.version}"
        )
        raise ValueError(msg)
    apply = _APPLY.get(type(event))
    if apply is None:
        msg = f"no fold step for {event.topic}"
        raise TypeError(msg)
    return apply(state, event)


def replay(events: Iterable[SessionEvent], state: Session | None = None) -> Session | None:
    """Fold a sequence of events, optionally on top of an existing state."""
    for event in events:
        state = evolve(state, event)
    return state


def _message_added(s: Session, e: MessageAdded) -> Session:
    open_calls = s.open_tool_calls
    if e.role is Role.TOOL:
        open_calls = tuple(call for call in open_calls if call.id != e.tool_call_id)
    elif e.tool_calls:
        open_calls = open_calls + e.tool_calls
    return _evolved(
        s,
        version=e.version,
        last_activity_at=e.occurred_at,
        message_count=s.message_count + 1,
        input_tokens=saturated(s.input_tokens + (e.input_tokens or 0)),
        output_tokens=saturated(s.output_tokens + (e.output_tokens or 0)),
        open_tool_calls=open_calls,
        last_message_role=e.role,
        last_message_preview=e.content[:PREVIEW_CHARS],
    )


def _turn_recorded(s: Session, e: TurnRecorded) -> Session:
    return _evolved(
        s,
        version=e.version,
        last_activity_at=e.occurred_at,
        turn_count=s.turn_count + 1,
        error_turn_count=s.error_turn_count + (1 if e.error else 0),
        input_tokens=saturated(s.input_tokens + (e.input_tokens or 0)),
        output_tokens=saturated(s.output_tokens + (e.output_tokens or 0)),
    )


def _context_updated(s: Session, e: ContextUpdated) -> Session:
    context = dict(s.context)
    for key in e.removed:
        context.pop(key, None)
    context.update(e.set)
    return _evolved(
        s,
        version=e.version,
        last_activity_at=e.occurred_at,
        context=MappingProxyType(context),
    )


def _interrupted(s: Session, e: SessionInterrupted) -> Session:
    return _evolved(
        s,
        version=e.version,
        status=SessionStatus.INTERRUPTED,
        last_activity_at=e.occurred_at,
        interrupted_at=e.occurred_at,
        interrupt_count=s.interrupt_count + 1,
        open_tool_calls=_without(s.open_tool_calls, e.aborted_tool_calls),
    )


def _resumed(s: Session, e: SessionResumed) -> Session:
    return _evolved(
        s,
        version=e.version,
        status=SessionStatus.ACTIVE,
        last_activity_at=e.occurred_at,
        interrupted_at=None,
        resume_count=s.resume_count + 1,
    )


def _ended(s: Session, e: SessionEnded) -> Session:
    return _evolved(
        s,
        version=e.version,
        status=SessionStatus.ENDED,
        last_activity_at=e.occurred_at,
        ended_at=e.occurred_at,
        end_status=e.status,
        end_reason=e.reason,
        open_tool_calls=_without(s.open_tool_calls, e.aborted_tool_calls),
    )


def _evolved(s: Session, **changes: Any) -> Session:
    """A copy of ``s`` with some fields changed (a fast, frozen-safe ``dataclasses.replace``)."""
    new = object.__new__(Session)
    object.__setattr__(new, "__dict__", {**s.__dict__, **changes})
    return new


def _without(calls: tuple[ToolCall, ...], ids: tuple[str, ...]) -> tuple[ToolCall, ...]:
    drop = set(ids)
    return tuple(call for call in calls if call.id not in drop)


_APPLY: dict[type[SessionEvent], Callable[[Session, Any], Session]] = {
    MessageAdded: _message_added,
    TurnRecorded: _turn_recorded,
    ContextUpdated: _context_updated,
    SessionInterrupted: _interrupted,
    SessionResumed: _resumed,
    SessionEnded: _ended,
}


# ---------------------------------------------------------------------------------------------
# Commands: state + validated request -> the event to append (or a typed error)


def _require(s: Session, allowed: tuple[SessionStatus, ...], action: str) -> None:
    if s.status not in allowed:
        expected = " or ".join(status.value for status in allowed)
        raise InvalidTransition(s.session_id, s.status.value, action, f"needs {expected}")


def _next_event(s: Session, at: datetime, event_id: UUID) -> dict[str, Any]:
    """The common fields of the event that follows the session's current version."""
    return {
        "session_id": s.session_id,
        "version": s.version + 1,
        "occurred_at": at,
        "event_id": event_id,
    }


def create_session(
    cmd: CreateSession, *, session_id: UUID, at: datetime, event_id: UUID
) -> SessionCreated:
    return SessionCreated(
        session_id=session_id,
        version=1,
        occurred_at=at,
        event_id=event_id,
        tenant_id=cmd.tenant_id,
        user_id=cmd.user_id,
        agent_id=cmd.agent_id,
        channel=cmd.channel,
        metadata=cmd.metadata,
        policy=cmd.policy,
    )


def add_message(
    s: Session, cmd: AddMessage, *, message_id: str, at: datetime, event_id: UUID
) -> MessageAdded:
    # Messages only while active: an interrupted session must resume first, an ended one is final.
    _require(s, (SessionStatus.ACTIVE,), "add a message to")
    open_ids = s.open_tool_call_ids
    if cmd.role is Role.TOOL:
        # A tool result must answer a call an earlier assistant message made and nobody answered.
        if cmd.tool_call_id not in open_ids:
            raise TranscriptViolation(
                s.session_id,
                f"tool message answers {cmd.tool_call_id!r}, no such open tool call",
                open_ids,
            )
    elif open_ids:
        # Until every open call is answered (or aborted by interrupt/end) the transcript would be
        # invalid to send to an LLM, so only tool results may follow.
        raise TranscriptViolation(
            s.session_id,
            f"{cmd.role.value} message while tool calls {', '.join(open_ids)} are unanswered",
            open_ids,
        )
    return MessageAdded(
        **_next_event(s, at, event_id),
        message_id=message_id,
        role=cmd.role,
        content=cmd.content,
        tool_calls=cmd.tool_calls,
        tool_call_id=cmd.tool_call_id,
        input_tokens=cmd.input_tokens,
        output_tokens=cmd.output_tokens,
        modality=cmd.modality,
        language=cmd.language,
    )


def record_turn(s: Session, cmd: RecordTurn, *, at: datetime, event_id: UUID) -> TurnRecorded:
    # Turns measure live request processing, so only while active.
    _require(s, (SessionStatus.ACTIVE,), "record a turn on")
    return TurnRecorded(
        **_next_event(s, at, event_id),
        **cmd.model_dump(),
    )


def update_context(
    s: Session, cmd: UpdateContext, *, at: datetime, event_id: UUID
) -> ContextUpdated:
    # Working memory may change while active or interrupted, never after the end.
    _require(s, (SessionStatus.ACTIVE, SessionStatus.INTERRUPTED), "update the context of")
    return ContextUpdated(
        **_next_event(s, at, event_id),
        set=cmd.set,
        removed=cmd.remove,
    )


def interrupt(s: Session, cmd: Interrupt, *, at: datetime, event_id: UUID) -> SessionInterrupted:
    # Interrupt only from active; open tool calls are aborted explicitly, in the event itself.
    _require(s, (SessionStatus.ACTIVE,), "interrupt")
    return SessionInterrupted(
        **_next_event(s, at, event_id),
        reason=cmd.reason,
        detail=cmd.detail,
        aborted_tool_calls=s.open_tool_call_ids,
    )


def resume(s: Session, *, at: datetime, event_id: UUID) -> SessionResumed:
    # Resume only from interrupted.
    _require(s, (SessionStatus.INTERRUPTED,), "resume")
    since = s.interrupted_at or at
    return SessionResumed(
        **_next_event(s, at, event_id),
        resume_count=s.resume_count + 1,
        # Clocks of different writers may disagree slightly; never record a negative duration.
        seconds_interrupted=max(0.0, (at - since).total_seconds()),
    )


def end(s: Session, cmd: End, *, at: datetime, event_id: UUID) -> SessionEnded:
    # Ended is terminal; open tool calls are aborted explicitly, in the event itself.
    _require(s, (SessionStatus.ACTIVE, SessionStatus.INTERRUPTED), "end")
    return SessionEnded(
        **_next_event(s, at, event_id),
        status=cmd.status,
        reason=cmd.reason,
        aborted_tool_calls=s.open_tool_call_ids,
    )
