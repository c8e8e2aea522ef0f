"""The fold: deterministic, resumable from any prefix, and its counts are counts of events."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from sessionstore.adapters.storage.serialization import SessionEventMapper
from sessionstore.domain import session as rules
from sessionstore.domain.commands import (
    AddMessage,
    CreateSession,
    End,
    Interrupt,
    RecordTurn,
    UpdateContext,
)
from sessionstore.domain.errors import InvalidTransition, TranscriptViolation
from sessionstore.domain.session import Session, SessionStatus, evolve, replay
from sessionstore.events.catalogue import (
    ContextUpdated,
    EndStatus,
    InterruptReason,
    MessageAdded,
    Role,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionResumed,
    TurnRecorded,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).filter(str.strip)
keys = st.sampled_from(["lang", "cart", "step", "user.name", "ключ", "🔑"])
values = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | text
    | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)
)
tokens = st.none() | st.integers(min_value=0, max_value=5000)

Draw = Callable[[st.SearchStrategy[Any]], Any]
Step = Callable[[Draw, Session, datetime, UUID], SessionEvent]


def _plain_message(draw: Draw, s: Session, at: datetime, eid: UUID) -> SessionEvent:
    role = draw(st.sampled_from(["system", "user", "assistant"]))
    command = AddMessage(
        role=role, content=draw(text), input_tokens=draw(tokens), output_tokens=draw(tokens)
    )
    return rules.add_message(s, command, message_id=f"m{s.version}", at=at, event_id=eid)


def _tool_calls(draw: Draw, s: Session, at: datetime, eid: UUID) -> SessionEvent:
    count = draw(st.integers(min_value=1, max_value=3))
    calls = [
        {"id": f"call-{s.version}-{i}", "name": "search", "arguments": {"i": i}}
        for i in range(count)
    ]
    command = AddMessage(role="assistant", content=draw(st.just("") | text), tool_calls=calls)
    return rules.add_message(s, command, message_id=f"m{s.version}", at=at, event_id=eid)


def _tool_answer(draw: Draw, s: Session, at: datetime, eid: UUID) -> SessionEvent:
    call_id = draw(st.sampled_from([*s.open_tool_call_ids, "call-nobody-made"]))
    command = AddMessage(role="tool", content=draw(text), tool_call_id=call_id)
    return rules.add_message(s, command, message_id=f"m{s.version}", at=at, event_id=eid)


def _turn(draw: Draw, s: Session, at: datetime, eid: UUID) -> SessionEvent:
    command = RecordTurn(
        request_id=f"r{s.version}",
        duration_ms=draw(st.floats(0, 10_000)),
        input_tokens=draw(tokens),
        output_tokens=draw(tokens),
        error=draw(st.booleans()),
    )
    return rules.record_turn(s, command, at=at, event_id=eid)


def _context(draw: Draw, s: Session, at: datetime, eid: UUID) -> SessionEvent:
    changes = draw(st.dictionaries(keys, values, max_size=3))
    removed = draw(st.lists(keys, max_size=2, unique=True))
    removed = [key for key in removed if key not in changes]
    if not changes and not removed:
        changes = {"step": 1}
    command = UpdateContext(set=changes, remove=tuple(removed))
    return rules.update_context(s, command, at=at, event_id=eid)


def _interrupt(draw: Draw, s: Session, at: datetime, eid: UUID) -> SessionEvent:
    command = Interrupt(reason=draw(st.sampled_from(InterruptReason)))
    return rules.interrupt(s, command, at=at, event_id=eid)


def _resume(draw: Draw, s: Session, at: datetime, eid: UUID) -> SessionEvent:
    return rules.resume(s, at=at, event_id=eid)


def _end(draw: Draw, s: Session, at: datetime, eid: UUID) -> SessionEvent:
    return rules.end(s, End(status=draw(st.sampled_from(EndStatus))), at=at, event_id=eid)


# Weighted so that histories are varied; ending is terminal, so it is drawn once, at the end.
STEPS: list[Step] = [
    *[_plain_message] * 3,
    *[_tool_calls] * 2,
    *[_tool_answer] * 3,
    *[_turn] * 2,
    *[_context] * 2,
    _interrupt,
    *[_resume] * 2,
]


@st.composite
def histories(draw: Draw) -> list[SessionEvent]:
    """A valid history of one session, made by the command functions (rejections skipped)."""
    session_id = draw(st.uuids())
    event_ids = (UUID(int=(session_id.int + n) % 2**128) for n in itertools.count())
    at = T0
    created = rules.create_session(
        CreateSession(tenant_id="t", user_id="u", agent_id="a", metadata={"plan": "pro"}),
        session_id=session_id,
        at=at,
        event_id=next(event_ids),
    )
    events: list[SessionEvent] = [created]
    state = evolve(None, created)
    count = draw(st.integers(min_value=0, max_value=60))
    steps: list[Step] = [draw(st.sampled_from(STEPS)) for _ in range(count)]
    if draw(st.booleans()):
        steps.append(_end)
    for step in steps:
        at += timedelta(seconds=draw(st.integers(min_value=0, max_value=600)))
        try:
            event = step(draw, state, at, next(event_ids))
        except (InvalidTransition, TranscriptViolation):
            continue
        events.append(event)
        state = evolve(state, event)
    return events


def _count(events: list[SessionEvent], kind: type[SessionEvent]) -> int:
    return sum(isinstance(e, kind) for e in events)


@given(histories())
def test_the_fold_is_deterministic(events: list[SessionEvent]) -> None:
    assert replay(events) == replay(list(events))
    assert replay(events) == replay(iter(events))


@given(histories(), st.data())
def test_replaying_a_prefix_then_the_suffix_equals_replaying_everything(
    events: list[SessionEvent], data: st.DataObject
) -> None:
    split = data.draw(st.integers(min_value=1, max_value=len(events)), label="split")

    prefix = replay(events[:split])

    assert prefix is not None
    assert prefix.version == split
    assert replay(events[split:], prefix) == replay(events)


@given(histories())
def test_replaying_stored_events_equals_replaying_the_originals(events: list[SessionEvent]) -> None:
    mapper = SessionEventMapper()

    read_back = [mapper.decode(mapper.encode(event)) for event in events]

    assert replay(read_back) == replay(events)


@given(histories())
def test_versions_are_contiguous_from_one(events: list[SessionEvent]) -> None:
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert len({e.session_id for e in events}) == 1


@given(histories())
def test_every_count_in_the_state_is_a_count_of_events(events: list[SessionEvent]) -> None:
    state = replay(events)
    assert state is not None

    turns = [e for e in events if isinstance(e, TurnRecorded)]
    resumes = [e for e in events if isinstance(e, SessionResumed)]
    assert state.version == len(events)
    assert state.message_count == _count(events, MessageAdded)
    assert state.turn_count == len(turns)
    assert state.error_turn_count == sum(e.error for e in turns)
    assert state.interrupt_count == _count(events, SessionInterrupted)
    assert state.resume_count == len(resumes)
    assert [e.resume_count for e in resumes] == list(range(1, len(resumes) + 1))
    counted = [e for e in events if isinstance(e, MessageAdded | TurnRecorded)]
    assert state.input_tokens == sum(e.input_tokens or 0 for e in counted)
    assert state.output_tokens == sum(e.output_tokens or 0 for e in counted)
    assert state.last_activity_at == events[-1].occurred_at


@given(histories())
def test_status_context_and_open_calls_follow_from_the_events(events: list[SessionEvent]) -> None:
    state = replay(events)
    assert state is not None

    status = SessionStatus.ACTIVE
    context: dict[str, Any] = {}
    open_calls: list[str] = []
    last_role: Role | None = None
    for event in events:
        if isinstance(event, SessionInterrupted):
            status = SessionStatus.INTERRUPTED
        elif isinstance(event, SessionResumed):
            status = SessionStatus.ACTIVE
        elif isinstance(event, SessionEnded):
            status = SessionStatus.ENDED
        if isinstance(event, SessionInterrupted | SessionEnded):
            assert event.aborted_tool_calls == tuple(open_calls)
            open_calls = []
        if isinstance(event, ContextUpdated):
            context = {k: v for k, v in context.items() if k not in event.removed} | event.set
        if isinstance(event, MessageAdded):
            last_role = event.role
            if event.role is Role.TOOL:
                assert event.tool_call_id in open_calls
                open_calls.remove(event.tool_call_id)
            else:
                assert not open_calls
                open_calls += [call.id for call in event.tool_calls]

    assert state.status is status
    assert dict(state.context) == context
    assert list(state.open_tool_call_ids) == open_calls
    assert state.last_message_role is last_role
    assert state.is_ended == (status is SessionStatus.ENDED)
    assert (state.end_status is None) == (status is not SessionStatus.ENDED)


@given(histories())
def test_every_state_along_the_way_is_the_fold_of_its_prefix(events: list[SessionEvent]) -> None:
    state: Session | None = None
    for i, event in enumerate(events, start=1):
        state = evolve(state, event)
        assert state == replay(events[:i])
        assert state.version == i
