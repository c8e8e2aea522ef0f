"""Session state view: one row per session, built by the aggregate's own fold.

The row is not updated field by field: each event turns the stored row back into a
``domain.session.Session``, runs ``domain.session.evolve`` (the one fold the store and audits
use) and writes the result back. So the view cannot drift from the aggregate, and a row can
always be read back as the exact ``Session`` it came from (``row_to_state``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from uuid import UUID

from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.session import Session, SessionStatus, evolve
from sessionstore.events.catalogue import (
    EVENT_TYPES,
    Channel,
    EndStatus,
    Role,
    SessionPolicy,
    ToolCall,
)
from sessionstore.projections.base import Batch, Key, Row, Table
from sessionstore.projections.tables import SESSION_STATE


def state_to_row(session: Session, position: int) -> Row:
    """The view row of a session state; ``position`` is the global position of its last event."""
    return {
        "session_id": session.session_id,
        "tenant_id": session.tenant_id,
        "user_id": session.user_id,
        "agent_id": session.agent_id,
        "channel": session.channel.value,
        "status": session.status.value,
        "end_status": None if session.end_status is None else session.end_status.value,
        "end_reason": session.end_reason,
        "created_at": session.created_at,
        # The fold sets it from the first event on; the fallback only keeps the column NOT NULL.
        "last_activity_at": session.last_activity_at or session.created_at,
        "interrupted_at": session.interrupted_at,
        "ended_at": session.ended_at,
        "version": session.version,
        "last_position": position,
        "message_count": session.message_count,
        "turn_count": session.turn_count,
        "error_turn_count": session.error_turn_count,
        "interrupt_count": session.interrupt_count,
        "resume_count": session.resume_count,
        "input_tokens": session.input_tokens,
        "output_tokens": session.output_tokens,
        "open_tool_calls": [call.model_dump(mode="json") for call in session.open_tool_calls],
        "last_message_role": (
            None if session.last_message_role is None else session.last_message_role.value
        ),
        "last_message_preview": session.last_message_preview,
        "context": _json(session.context),
        "metadata": _json(session.metadata),
        "policy": session.policy.model_dump(mode="json"),
    }


def row_to_state(row: Mapping[str, Any]) -> Session:
    """The ``Session`` a view row holds (the inverse of ``state_to_row``)."""
    end_status = row["end_status"]
    role = row["last_message_role"]
    return Session(
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        channel=Channel(row["channel"]),
        policy=SessionPolicy.model_validate(row["policy"]),
        created_at=row["created_at"],
        version=row["version"],
        status=SessionStatus(row["status"]),
        metadata=MappingProxyType(_json(row["metadata"])),
        context=MappingProxyType(_json(row["context"])),
        last_activity_at=row["last_activity_at"],
        interrupted_at=row["interrupted_at"],
        ended_at=row["ended_at"],
        end_status=None if end_status is None else EndStatus(end_status),
        end_reason=row["end_reason"],
        message_count=row["message_count"],
        turn_count=row["turn_count"],
        error_turn_count=row["error_turn_count"],
        interrupt_count=row["interrupt_count"],
        resume_count=row["resume_count"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        open_tool_calls=tuple(ToolCall.model_validate(call) for call in row["open_tool_calls"]),
        last_message_role=None if role is None else Role(role),
        last_message_preview=row["last_message_preview"],
    )


class SessionStateProjection:
    """Every event of a session goes through ``evolve``; the row is the resulting state.

    Within a batch the states stay decoded (in ``batch.memo``) and each changed session becomes
    a row once, just before the commit, however many of its events the batch holds.
    """

    name: str = "session_state"
    topics: frozenset[str] = frozenset(event_type.topic for event_type in EVENT_TYPES)
    tables: tuple[Table, ...] = (SESSION_STATE,)

    def keys(self, event: RecordedEvent) -> Iterable[tuple[str, Key]]:
        return [(SESSION_STATE.name, (event.event.session_id,))]

    def apply(self, batch: Batch, event: RecordedEvent) -> None:
        states: dict[UUID, tuple[Session, int]] | None = batch.memo.get(self.name)
        if states is None:
            states = batch.memo[self.name] = {}
            batch.before_commit(lambda: _write(batch, states))
        sid = event.event.session_id
        if sid in states:
            state: Session | None = states[sid][0]
        else:
            row = batch.get(SESSION_STATE.name, (sid,))
            state = None if row is None else row_to_state(row)
        # evolve refuses an event that does not follow the stored version, so a view that
        # missed or repeated an event fails loudly instead of drifting.
        states[sid] = (evolve(state, event.event), event.position)


def _write(batch: Batch, states: Mapping[UUID, tuple[Session, int]]) -> None:
    for state, position in states.values():
        batch.put(SESSION_STATE.name, state_to_row(state, position))


def _json(value: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, independent copy of JSON data (read-only mappings and tuples become dicts and
    lists), so a stored row never shares mutable parts with an event or a state."""
    return {key: _json_value(item) for key, item in value.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _json(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value
