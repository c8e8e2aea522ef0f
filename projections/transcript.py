"""Transcript view: every message of a session in order, ready for an LLM's context window.

One row per MessageAdded (``seq`` 0). A tool call that an interruption or the end of the
session aborted gets a synthetic tool result (``aborted`` true, ``seq`` 1, 2, ... in the order
the event lists them, ``version`` of that event), so any window of the last N entries that
starts at a message is valid to send to a model: no assistant tool call is left unanswered.
Rows are keyed ``(session_id, version, seq)``, so ordering by the key is transcript order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sessionstore.domain.ports import RecordedEvent
from sessionstore.events.catalogue import (
    MessageAdded,
    Modality,
    Role,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
)
from sessionstore.projections.base import Batch, Key, Row, Table
from sessionstore.projections.tables import TRANSCRIPT


def aborted_content(event: SessionInterrupted | SessionEnded) -> str:
    """The fixed text of the synthetic tool result for a call the event aborted."""
    if isinstance(event, SessionInterrupted):
        return f"[tool call aborted: session interrupted ({event.reason.value})]"
    return f"[tool call aborted: session ended ({event.status.value})]"


class TranscriptProjection:
    """Append-only: each event adds its rows once (the runner applies every event once)."""

    name: str = "transcript"
    tables: tuple[Table, ...] = (TRANSCRIPT,)

    def __init__(self) -> None:
        self._handlers: dict[type[SessionEvent], Callable[[Batch, RecordedEvent, Any], None]] = {
            MessageAdded: self._message_added,
            SessionInterrupted: self._aborted,
            SessionEnded: self._aborted,
        }
        self.topics: frozenset[str] = frozenset(kind.topic for kind in self._handlers)

    def keys(self, event: RecordedEvent) -> Iterable[tuple[str, Key]]:
        return ()  # inserts only; nothing is read

    def apply(self, batch: Batch, event: RecordedEvent) -> None:
        handler = self._handlers.get(type(event.event))
        if handler is not None:
            handler(batch, event, event.event)

    def _message_added(self, batch: Batch, recorded: RecordedEvent, e: MessageAdded) -> None:
        batch.insert(
            TRANSCRIPT.name,
            _entry(
                recorded,
                seq=0,
                message_id=e.message_id,
                role=e.role.value,
                content=e.content,
                tool_calls=[call.model_dump(mode="json") for call in e.tool_calls],
                tool_call_id=e.tool_call_id,
                aborted=False,
                input_tokens=e.input_tokens,
                output_tokens=e.output_tokens,
                modality=e.modality.value,
                language=e.language,
            ),
        )

    def _aborted(
        self, batch: Batch, recorded: RecordedEvent, e: SessionInterrupted | SessionEnded
    ) -> None:
        content = aborted_content(e)
        for seq, call_id in enumerate(e.aborted_tool_calls, start=1):
            batch.insert(
                TRANSCRIPT.name,
                _entry(
                    recorded,
                    seq=seq,
                    message_id=None,
                    role=Role.TOOL.value,
                    content=content,
                    tool_calls=[],
                    tool_call_id=call_id,
                    aborted=True,
                    input_tokens=None,
                    output_tokens=None,
                    modality=Modality.TEXT.value,
                    language=None,
                ),
            )


def _entry(recorded: RecordedEvent, **fields: Any) -> Row:
    event = recorded.event
    return {
        "session_id": event.session_id,
        "version": event.version,
        "position": recorded.position,
        "tenant_id": recorded.tenant_id,
        "occurred_at": event.occurred_at,
        **fields,
    }
