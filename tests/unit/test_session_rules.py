"""The pure Session aggregate: every transition of the state machine, every rule, the fold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

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
from sessionstore.domain.session import PREVIEW_CHARS, Session, SessionStatus, evolve, replay
from sessionstore.events.catalogue import (
    Channel,
    ContextUpdated,
    EndStatus,
    InterruptReason,
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

SID = UUID("00000000-0000-4000-8000-000000000001")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Timeline:
    """Runs command functions against a session, one second apart, keeping every event."""

    def __init__(self, **create: Any) -> None:
        fields = {"tenant_id": "acme", "user_id": "u-1", "agent_id": "support-bot", **create}
        self.now = T0
        first = rules.create_session(
            CreateSession(**fields), session_id=SID, at=self.now, event_id=uuid4()
        )
        self.events: list[SessionEvent] = [first]
        self.state = evolve(None, first)

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def run(self, decide: Callable[..., SessionEvent], *args: Any) -> SessionEvent:
        event = decide(self.state, *args, at=self.tick(), event_id=uuid4())
        self.state = evolve(self.state, event)
        self.events.append(event)
        return event

    def message(self, role: str, content: str = "hi", **fields: Any) -> SessionEvent:
        command = AddMessage(role=role, content=content, **fields)
        return self.run(_add_message_with_id, command)

    def assistant_calls(self, *call_ids: str) -> SessionEvent:
        calls = [{"id": i, "name": "lookup", "arguments": {"q": i}} for i in call_ids]
        return self.message("assistant", "", tool_calls=calls)

    def turn(self, **fields: Any) -> SessionEvent:
        return self.run(
            rules.record_turn, RecordTurn(**{"request_id": "r", "duration_ms": 5, **fields})
        )

    def context(self, **fields: Any) -> SessionEvent:
        return self.run(rules.update_context, UpdateContext(**fields))

    def interrupt(self, reason: str = "disconnect", detail: str = "") -> SessionEvent:
        return self.run(rules.interrupt, Interrupt(reason=reason, detail=detail))

    def resume(self) -> SessionEvent:
        return self.run(rules.resume)

    def end(self, status: str = "completed", reason: str = "") -> SessionEvent:
        return self.run(rules.end, End(status=status, reason=reason))


def _add_message_with_id(
    state: Session, command: AddMessage, *, at: datetime, event_id: UUID
) -> MessageAdded:
    return rules.add_message(
        state, command, message_id=f"m-{state.version + 1}", at=at, event_id=event_id
    )


def in_status(status: SessionStatus) -> Timeline:
    timeline = Timeline()
    if status is SessionStatus.INTERRUPTED:
        timeline.interrupt()
    elif status is SessionStatus.ENDED:
        timeline.end()
    assert timeline.state.status is status
    return timeline


# ---------------------------------------------------------------------------------------------
# Creating a session


def test_create_session_records_who_where_and_how_long_the_session_may_live() -> None:
    command = CreateSession(
        tenant_id="acme",
        user_id="u-1",
        agent_id="support-bot",
        channel="voice",
        metadata={"locale": "de-DE", "ab": [1, 2]},
        policy={"idle_timeout_seconds": 60, "ttl_seconds": 3600, "retention_days": 30},
    )
    event_id = uuid4()

    event = rules.create_session(command, session_id=SID, at=T0, event_id=event_id)

    assert event == SessionCreated(
        session_id=SID,
        version=1,
        occurred_at=T0,
        event_id=event_id,
        tenant_id="acme",
        user_id="u-1",
        agent_id="support-bot",
        channel=Channel.VOICE,
        metadata={"locale": "de-DE", "ab": [1, 2]},
        policy=SessionPolicy(idle_timeout_seconds=60, ttl_seconds=3600, retention_days=30),
    )


def test_a_new_session_is_active_at_version_one_with_nothing_counted() -> None:
    state = Timeline(metadata={"plan": "pro"}).state

    assert state.session_id == SID
    assert state.status is SessionStatus.ACTIVE
    assert state.version == 1
    assert (state.tenant_id, state.user_id, state.agent_id) == ("acme", "u-1", "support-bot")
    assert state.channel is Channel.TEXT
    assert state.policy == SessionPolicy()
    assert dict(state.metadata) == {"plan": "pro"}
    assert dict(state.context) == {}
    assert state.created_at == state.last_activity_at == T0
    assert (state.message_count, state.turn_count, state.error_turn_count) == (0, 0, 0)
    assert (state.interrupt_count, state.resume_count) == (0, 0)
    assert (state.input_tokens, state.output_tokens) == (0, 0)
    assert state.open_tool_calls == ()
    assert state.last_message_role is None
    assert state.last_message_preview is None
    assert state.ended_at is None
    assert state.end_status is None
    assert state.end_reason is None
    assert not state.is_ended


def test_session_metadata_cannot_be_changed_through_the_state() -> None:
    state = Timeline(metadata={"plan": "pro"}).state

    with pytest.raises(TypeError):
        state.metadata["plan"] = "free"  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Messages


def test_a_user_message_is_counted_and_becomes_the_last_message() -> None:
    timeline = Timeline()

    event = timeline.message("user", "Where is my parcel?", input_tokens=7)

    assert isinstance(event, MessageAdded)
    assert (event.version, event.role, event.content) == (2, Role.USER, "Where is my parcel?")
    assert event.message_id == "m-2"
    state = timeline.state
    assert state.version == 2
    assert state.message_count == 1
    assert state.input_tokens == 7
    assert state.last_message_role is Role.USER
    assert state.last_message_preview == "Where is my parcel?"
    assert state.last_activity_at == event.occurred_at


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_system_user_and_assistant_messages_are_allowed_while_active(role: str) -> None:
    timeline = Timeline()

    timeline.message(role, "text")

    assert timeline.state.last_message_role is Role(role)
    assert timeline.state.message_count == 1


def test_the_preview_of_the_last_message_is_truncated() -> None:
    timeline = Timeline()

    timeline.message("assistant", "é" * (PREVIEW_CHARS + 50))

    assert timeline.state.last_message_preview == "é" * PREVIEW_CHARS


def test_tokens_of_messages_and_turns_add_up() -> None:
    timeline = Timeline()

    timeline.message("user", "q", input_tokens=10)
    timeline.message("assistant", "a", input_tokens=3, output_tokens=20)
    timeline.turn(input_tokens=100, output_tokens=50)
    timeline.turn()

    assert timeline.state.input_tokens == 113
    assert timeline.state.output_tokens == 70


def test_an_assistant_message_with_tool_calls_opens_them_in_order() -> None:
    timeline = Timeline()

    timeline.assistant_calls("call-1", "call-2")

    assert timeline.state.open_tool_call_ids == ("call-1", "call-2")
    assert timeline.state.open_tool_calls[0] == ToolCall(
        id="call-1", name="lookup", arguments={"q": "call-1"}
    )


def test_a_tool_message_answers_exactly_the_call_it_names() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1", "call-2", "call-3")

    event = timeline.message("tool", "42", tool_call_id="call-2")

    assert isinstance(event, MessageAdded)
    assert event.tool_call_id == "call-2"
    assert timeline.state.open_tool_call_ids == ("call-1", "call-3")


def test_once_every_tool_call_is_answered_the_conversation_can_continue() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1", "call-2")
    timeline.message("tool", "a", tool_call_id="call-2")
    timeline.message("tool", "b", tool_call_id="call-1")

    timeline.message("assistant", "Here is what I found")

    assert timeline.state.open_tool_calls == ()
    assert timeline.state.message_count == 4


def test_a_tool_message_without_a_matching_open_call_is_a_transcript_violation() -> None:
    state = Timeline().state

    with pytest.raises(TranscriptViolation) as info:
        rules.add_message(
            state,
            AddMessage(role="tool", content="42", tool_call_id="call-9"),
            message_id="m",
            at=T0,
            event_id=uuid4(),
        )

    assert info.value.session_id == SID
    assert info.value.open_tool_calls == ()
    assert "call-9" in str(info.value)
    assert info.value.code == "transcript-violation"


def test_a_tool_call_cannot_be_answered_twice() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1", "call-2")
    timeline.message("tool", "first answer", tool_call_id="call-1")

    with pytest.raises(TranscriptViolation) as info:
        timeline.message("tool", "second answer", tool_call_id="call-1")

    assert info.value.open_tool_calls == ("call-2",)
    assert info.value.context["open_tool_calls"] == ["call-2"]


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_only_tool_results_may_follow_unanswered_tool_calls(role: str) -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1", "call-2")
    before = timeline.state

    with pytest.raises(TranscriptViolation) as info:
        timeline.message(role, "too early")

    assert info.value.open_tool_calls == ("call-1", "call-2")
    assert "call-1, call-2" in str(info.value)
    assert timeline.state == before


def test_an_assistant_cannot_open_new_tool_calls_while_others_are_open() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1")

    with pytest.raises(TranscriptViolation):
        timeline.assistant_calls("call-2")

    assert timeline.state.open_tool_call_ids == ("call-1",)


def test_a_tool_call_id_may_be_reused_once_the_earlier_call_is_closed() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1")
    timeline.message("tool", "a", tool_call_id="call-1")

    timeline.assistant_calls("call-1")

    assert timeline.state.open_tool_call_ids == ("call-1",)


# ---------------------------------------------------------------------------------------------
# Turns


def test_a_turn_is_counted_with_its_latencies() -> None:
    timeline = Timeline()

    event = timeline.turn(request_id="req-1", duration_ms=812.5, stt_ms=80, llm_ms=600, tts_ms=90)

    assert isinstance(event, TurnRecorded)
    assert (event.request_id, event.duration_ms, event.llm_ms) == ("req-1", 812.5, 600)
    assert (event.error, event.error_type) == (False, None)
    assert timeline.state.turn_count == 1
    assert timeline.state.error_turn_count == 0
    assert timeline.state.message_count == 0


def test_failed_turns_are_counted_separately() -> None:
    timeline = Timeline()

    timeline.turn(error=True, error_type="llm_timeout")
    timeline.turn()
    timeline.turn(error=True)

    assert timeline.state.turn_count == 3
    assert timeline.state.error_turn_count == 2


def test_a_turn_may_be_recorded_while_tool_calls_are_open() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1")

    timeline.turn()

    assert timeline.state.turn_count == 1
    assert timeline.state.open_tool_call_ids == ("call-1",)


# ---------------------------------------------------------------------------------------------
# Context


def test_a_context_update_sets_and_removes_keys() -> None:
    timeline = Timeline()
    timeline.context(set={"cart": ["sku-1"], "step": 1, "lang": "en"})

    event = timeline.context(set={"step": 2, "note": None}, remove=("lang", "never-set"))

    assert isinstance(event, ContextUpdated)
    assert event.set == {"step": 2, "note": None}
    assert event.removed == ("lang", "never-set")
    assert dict(timeline.state.context) == {"cart": ["sku-1"], "step": 2, "note": None}


def test_the_context_may_change_while_interrupted() -> None:
    timeline = in_status(SessionStatus.INTERRUPTED)

    timeline.context(set={"reconnect_token": "abc"})

    assert timeline.state.status is SessionStatus.INTERRUPTED
    assert dict(timeline.state.context) == {"reconnect_token": "abc"}


def test_the_context_of_the_state_is_read_only() -> None:
    timeline = Timeline()
    timeline.context(set={"a": 1})

    with pytest.raises(TypeError):
        timeline.state.context["a"] = 2  # type: ignore[index]


def test_an_earlier_state_is_not_changed_by_a_later_context_update() -> None:
    timeline = Timeline()
    timeline.context(set={"a": 1})
    earlier = timeline.state

    timeline.context(set={"a": 2}, remove=())

    assert dict(earlier.context) == {"a": 1}
    assert dict(timeline.state.context) == {"a": 2}


# ---------------------------------------------------------------------------------------------
# Interrupt and resume


@pytest.mark.parametrize("reason", list(InterruptReason))
def test_an_active_session_can_be_interrupted_for_any_reason(reason: InterruptReason) -> None:
    timeline = Timeline()

    event = timeline.interrupt(reason.value, "socket closed")

    assert isinstance(event, SessionInterrupted)
    assert (event.reason, event.detail, event.aborted_tool_calls) == (reason, "socket closed", ())
    state = timeline.state
    assert state.status is SessionStatus.INTERRUPTED
    assert state.interrupted_at == event.occurred_at
    assert state.interrupt_count == 1


def test_interrupting_with_open_tool_calls_records_their_abort() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1", "call-2")
    timeline.message("tool", "done", tool_call_id="call-1")

    event = timeline.interrupt("barge_in")

    assert isinstance(event, SessionInterrupted)
    assert event.aborted_tool_calls == ("call-2",)
    assert timeline.state.open_tool_calls == ()


def test_after_an_abort_and_resume_the_transcript_may_continue() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1")
    timeline.interrupt()
    timeline.resume()

    timeline.message("user", "are you there?")

    assert timeline.state.last_message_role is Role.USER


def test_resuming_reactivates_the_session_and_counts_the_resumption() -> None:
    timeline = Timeline()
    timeline.interrupt()
    interrupted_at = timeline.state.interrupted_at
    assert interrupted_at is not None
    timeline.tick(29)

    event = timeline.resume()

    assert isinstance(event, SessionResumed)
    assert event.resume_count == 1
    assert event.seconds_interrupted == 30.0
    assert event.occurred_at - interrupted_at == timedelta(seconds=30)
    state = timeline.state
    assert state.status is SessionStatus.ACTIVE
    assert state.interrupted_at is None
    assert state.resume_count == 1


def test_resume_count_in_the_event_counts_every_resumption_so_far() -> None:
    timeline = Timeline()
    counts = []
    for _ in range(3):
        timeline.interrupt()
        event = timeline.resume()
        assert isinstance(event, SessionResumed)
        counts.append(event.resume_count)

    assert counts == [1, 2, 3]
    assert timeline.state.resume_count == 3
    assert timeline.state.interrupt_count == 3


def test_a_resume_clock_behind_the_interruption_never_records_a_negative_duration() -> None:
    timeline = Timeline()
    timeline.interrupt()
    earlier = timeline.now - timedelta(seconds=5)

    event = rules.resume(timeline.state, at=earlier, event_id=uuid4())

    assert event.seconds_interrupted == 0.0


# ---------------------------------------------------------------------------------------------
# Ending


@pytest.mark.parametrize("end_status", list(EndStatus))
@pytest.mark.parametrize("from_status", [SessionStatus.ACTIVE, SessionStatus.INTERRUPTED])
def test_a_session_can_end_with_any_status_from_active_or_interrupted(
    from_status: SessionStatus, end_status: EndStatus
) -> None:
    timeline = in_status(from_status)

    event = timeline.end(end_status.value, "user hung up")

    assert isinstance(event, SessionEnded)
    assert (event.status, event.reason, event.aborted_tool_calls) == (
        end_status,
        "user hung up",
        (),
    )
    state = timeline.state
    assert state.status is SessionStatus.ENDED
    assert state.is_ended
    assert state.end_status is end_status
    assert state.end_reason == "user hung up"
    assert state.ended_at == event.occurred_at


def test_ending_with_open_tool_calls_records_their_abort() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1", "call-2")

    event = timeline.end("failed")

    assert isinstance(event, SessionEnded)
    assert event.aborted_tool_calls == ("call-1", "call-2")
    assert timeline.state.open_tool_calls == ()


# ---------------------------------------------------------------------------------------------
# The transition table: every command in every status


def _message(s: Session) -> SessionEvent:
    return rules.add_message(
        s, AddMessage(role="user", content="hi"), message_id="m", at=T0, event_id=uuid4()
    )


def _turn(s: Session) -> SessionEvent:
    return rules.record_turn(s, RecordTurn(request_id="r", duration_ms=1), at=T0, event_id=uuid4())


def _context(s: Session) -> SessionEvent:
    return rules.update_context(s, UpdateContext(set={"k": 1}), at=T0, event_id=uuid4())


def _interrupt(s: Session) -> SessionEvent:
    return rules.interrupt(s, Interrupt(reason="timeout"), at=T0, event_id=uuid4())


def _resume(s: Session) -> SessionEvent:
    return rules.resume(s, at=T0, event_id=uuid4())


def _end(s: Session) -> SessionEvent:
    return rules.end(s, End(), at=T0, event_id=uuid4())


COMMANDS: dict[str, tuple[Callable[[Session], SessionEvent], str]] = {
    "add_message": (_message, "add a message to"),
    "record_turn": (_turn, "record a turn on"),
    "update_context": (_context, "update the context of"),
    "interrupt": (_interrupt, "interrupt"),
    "resume": (_resume, "resume"),
    "end": (_end, "end"),
}

ACTIVE, INTERRUPTED, ENDED = SessionStatus.ACTIVE, SessionStatus.INTERRUPTED, SessionStatus.ENDED

# command -> (status it may run in -> status after it)
TRANSITIONS: dict[str, dict[SessionStatus, SessionStatus]] = {
    "add_message": {ACTIVE: ACTIVE},
    "record_turn": {ACTIVE: ACTIVE},
    "update_context": {ACTIVE: ACTIVE, INTERRUPTED: INTERRUPTED},
    "interrupt": {ACTIVE: INTERRUPTED},
    "resume": {INTERRUPTED: ACTIVE},
    "end": {ACTIVE: ENDED, INTERRUPTED: ENDED},
}

ALLOWED = [(c, s) for c, table in TRANSITIONS.items() for s in table]
REJECTED = [(c, s) for c in TRANSITIONS for s in SessionStatus if s not in TRANSITIONS[c]]


def test_the_transition_table_covers_every_command_in_every_status() -> None:
    assert len(ALLOWED) + len(REJECTED) == len(COMMANDS) * len(SessionStatus)
    assert set(TRANSITIONS) == set(COMMANDS)


@pytest.mark.parametrize(("command", "status"), ALLOWED)
def test_allowed_transitions_append_the_next_version(command: str, status: SessionStatus) -> None:
    state = in_status(status).state
    decide, _action = COMMANDS[command]

    event = decide(state)
    after = evolve(state, event)

    assert event.session_id == SID
    assert event.version == state.version + 1
    assert after.version == state.version + 1
    assert after.status is TRANSITIONS[command][status]


@pytest.mark.parametrize(("command", "status"), REJECTED)
def test_rejected_transitions_raise_invalid_transition_naming_the_status(
    command: str, status: SessionStatus
) -> None:
    state = in_status(status).state
    decide, action = COMMANDS[command]

    with pytest.raises(InvalidTransition) as info:
        decide(state)

    error = info.value
    assert error.session_id == SID
    assert error.status == status.value
    assert error.action == action
    assert error.context == {"session_id": SID, "status": status.value, "action": action}
    assert f"cannot {action} session {SID}: it is {status.value}" in str(error)
    assert error.code == "invalid-transition"


def test_an_invalid_transition_says_which_status_would_have_been_needed() -> None:
    state = in_status(SessionStatus.ACTIVE).state

    with pytest.raises(InvalidTransition, match=r"needs interrupted"):
        _resume(state)
    with pytest.raises(InvalidTransition, match=r"needs active or interrupted"):
        _end(in_status(SessionStatus.ENDED).state)


def test_the_status_check_comes_before_the_tool_call_check() -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1")
    timeline.end()

    with pytest.raises(InvalidTransition):
        timeline.message("tool", "late answer", tool_call_id="call-1")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_functions_never_change_the_state_they_are_given(command: str) -> None:
    timeline = Timeline()
    timeline.assistant_calls("call-1")
    timeline.message("tool", "x", tool_call_id="call-1")
    timeline.interrupt()
    timeline.resume()
    state = timeline.state
    copy = replace(state)
    decide, _action = COMMANDS[command]

    try:
        decide(state)
    except InvalidTransition:
        assert command == "resume"

    assert state == copy


# ---------------------------------------------------------------------------------------------
# The fold


def test_replay_of_the_events_equals_the_state_built_step_by_step() -> None:
    timeline = Timeline(metadata={"plan": "pro"})
    timeline.message("user", "hi", input_tokens=3)
    timeline.assistant_calls("call-1")
    timeline.turn(error=True)
    timeline.interrupt()
    timeline.context(set={"x": 1})
    timeline.resume()
    timeline.end("abandoned")

    assert replay(timeline.events) == timeline.state
    assert [event.version for event in timeline.events] == list(range(1, 9))


def test_replay_of_nothing_is_no_session() -> None:
    assert replay([]) is None


def test_replay_continues_from_a_given_state() -> None:
    timeline = Timeline()
    for i in range(5):
        timeline.message("user", f"m{i}")
    events = timeline.events

    middle = replay(events[:3])

    assert replay(events[3:], middle) == timeline.state
    assert replay([], middle) == middle


def test_the_first_event_of_a_session_must_be_session_created() -> None:
    timeline = Timeline()
    timeline.message("user", "hi")

    with pytest.raises(TypeError, match="first event must be SessionCreated"):
        evolve(None, timeline.events[1])


def test_the_fold_refuses_a_gap_in_versions() -> None:
    timeline = Timeline()
    timeline.message("user", "one")
    timeline.message("user", "two")

    with pytest.raises(ValueError, match="does not follow"):
        replay([timeline.events[0], timeline.events[2]])


def test_the_fold_refuses_an_event_applied_twice() -> None:
    timeline = Timeline()
    timeline.message("user", "one")

    with pytest.raises(ValueError, match="does not follow"):
        evolve(timeline.state, timeline.events[1])


def test_the_fold_refuses_an_event_of_another_session() -> None:
    timeline = Timeline()
    stranger = MessageAdded(
        session_id=uuid4(),
        version=2,
        occurred_at=T0,
        event_id=uuid4(),
        message_id="m",
        role="user",
        content="hi",
    )

    with pytest.raises(ValueError, match="does not follow"):
        evolve(timeline.state, stranger)


def test_the_fold_refuses_a_second_session_created() -> None:
    timeline = Timeline()
    again = timeline.events[0].model_copy(update={"version": 2})

    with pytest.raises(TypeError, match="no fold step"):
        evolve(timeline.state, again)


def test_the_fold_replays_events_the_current_rules_would_reject() -> None:
    """Stored history is never rejected because a rule was tightened later."""
    created = Timeline().events[0]
    answer_without_call = MessageAdded(
        session_id=SID,
        version=2,
        occurred_at=T0,
        event_id=uuid4(),
        message_id="m",
        role="tool",
        content="orphan",
        tool_call_id="call-x",
    )

    state = replay([created, answer_without_call])

    assert state is not None
    assert state.message_count == 1
    assert state.open_tool_calls == ()
