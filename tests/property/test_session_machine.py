"""Random command sequences against SessionStore and a small reference model, which must agree.

Two stores share one in-memory log, as two processes would, so each store's cache is often
stale; the outcome of every command must still be what the model (which always knows the
truth) says: success with the next version, or exactly the error type it predicts, with nothing
appended.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, assume, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.contract import Limits
from sessionstore.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidTransition,
    PayloadTooLarge,
    SessionAlreadyExists,
    SessionNotFound,
    TranscriptViolation,
)
from sessionstore.domain.ports import AppendResult
from sessionstore.domain.session import Session, replay
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import EndStatus, InterruptReason, MessageAdded, SessionResumed

MAX_CONTENT_BYTES = 80
LIMITS = Limits(max_content_bytes=MAX_CONTENT_BYTES)

ACTIVE, INTERRUPTED, ENDED = "active", "interrupted", "ended"

stores = st.integers(min_value=0, max_value=1)
# Ids the model expects to be accepted: no NUL (the input contract refuses it; tested in
# tests/property/test_input_contract.py). Contents may hold one: the model expects the refusal.
identifiers = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12
)
MAX_SESSIONS = 3
# Mostly realistic messages; now and then blank (invalid) or over MAX_CONTENT_BYTES in bytes,
# though not in characters (30 emoji are 120 bytes). one_of picks a branch uniformly, so the
# repeated branches set the odds.
realistic = st.sampled_from(
    ["Hallo! 👋", "Where is my order #1234?", "ok", "مرحبا", "こんにちは世界"]
)
any_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(str.strip)
contents = st.one_of(
    realistic,
    any_text,
    realistic,
    any_text,
    st.sampled_from(["", "  \n"]),
    st.text(st.sampled_from("😀🎉🚀"), min_size=21, max_size=30),
)
context_keys = st.sampled_from(["lang", "cart", "step", "ключ", "🔑"])
context_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | identifiers
    | st.lists(st.integers(0, 9), max_size=3)
)
context_changes = st.dictionaries(context_keys, context_values, min_size=1, max_size=3)
tokens = st.none() | st.integers(min_value=0, max_value=10_000)


@dataclass
class ModelSession:
    """What the reference model knows about one session."""

    status: str = ACTIVE
    version: int = 1
    messages: int = 0
    turns: int = 0
    error_turns: int = 0
    interrupts: int = 0
    resumes: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    open_calls: list[str] = field(default_factory=list)
    closed_calls: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    end_status: str | None = None
    last_role: str | None = None

    def close_open_calls(self) -> None:
        self.closed_calls += self.open_calls
        self.open_calls = []


@dataclass(frozen=True)
class Done:
    """A successful keyed command, kept so that it can be retried later."""

    session_id: UUID
    key: str
    call: Callable[[SessionStore], AppendResult]
    result: AppendResult


Call = Callable[[SessionStore], AppendResult]


def status_error(m: ModelSession, *allowed: str) -> type[Exception] | None:
    return None if m.status in allowed else InvalidTransition


def content_error(content: str) -> type[Exception] | None:
    if "\x00" in content or not content.strip():
        return InvalidInput
    if len(content.encode()) > MAX_CONTENT_BYTES:
        return PayloadTooLarge
    return None


# Fast enough for every run (a few seconds); shrinking a failure takes longer.
@settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
class SessionMachine(RuleBasedStateMachine):
    sessions = Bundle("sessions")
    done = Bundle("done")

    def __init__(self) -> None:
        super().__init__()
        self.log = MemoryEventLog()
        self.stores = (SessionStore(self.log, limits=LIMITS), SessionStore(self.log, limits=LIMITS))
        # Reads for the invariants go through a store without a cache, so that checking does
        # not refresh the caches of the two writers (their staleness is part of the test).
        self.auditor = SessionStore(self.log, limits=LIMITS, cache_size=0)
        self.model: dict[UUID, ModelSession] = {}
        self.counter = itertools.count()

    # -----------------------------------------------------------------------------------------
    # Running a command and checking its outcome against the model

    def log_size(self) -> int:
        return len(self.log.read_log(limit=1_000_000))

    def attempt(
        self, session_id: UUID, call: Call, expected: type[Exception] | None, store: int
    ) -> AppendResult | None:
        """Run ``call``; success must append exactly the next version, failure nothing."""
        event(f"outcome: {expected.__name__ if expected else 'appended'}")
        before = self.log_size()
        if expected is None:
            result = call(self.stores[store])
            m = self.model[session_id]
            assert result == AppendResult(session_id, m.version + 1, before + 1, 1)
            m.version += 1
            return result
        with pytest.raises(Exception) as info:  # noqa: PT011 - exact type checked below
            call(self.stores[store])
        assert type(info.value) is expected, f"expected {expected.__name__}, got {info.value!r}"
        assert self.log_size() == before
        return None

    def keep(
        self, session_id: UUID, key: str | None, call: Call, result: AppendResult | None
    ) -> Any:
        if key is None or result is None:
            return multiple()
        return Done(session_id, key, call, result)

    def new_key(self, keyed: bool) -> str | None:
        return f"key-{next(self.counter)}" if keyed else None

    # -----------------------------------------------------------------------------------------
    # Creating sessions

    @initialize(target=sessions, store=stores)
    def start_with_a_session(self, store: int) -> UUID:
        result = self.stores[store].create(tenant_id="t", user_id="u", agent_id="a")
        self.model[result.session_id] = ModelSession()
        return result.session_id

    def has_room(self) -> bool:
        return len(self.model) < MAX_SESSIONS

    @precondition(has_room)
    @rule(
        target=sessions,
        user=identifiers,
        channel=st.sampled_from(["text", "voice", "phone"]),
        chosen=st.none() | st.uuids(),
        store=stores,
    )
    def create(self, user: str, channel: str, chosen: UUID | None, store: int) -> Any:
        before = self.log_size()
        if chosen is not None and chosen in self.model:
            with pytest.raises(SessionAlreadyExists):
                self.stores[store].create(
                    tenant_id="t", user_id=user, agent_id="a", session_id=chosen
                )
            return multiple()
        result = self.stores[store].create(
            tenant_id="t", user_id=user, agent_id="a", channel=channel, session_id=chosen
        )
        assert (result.version, result.position, result.replayed) == (1, before + 1, False)
        assert chosen is None or result.session_id == chosen
        assert result.session_id not in self.model
        self.model[result.session_id] = ModelSession()
        return result.session_id

    @precondition(has_room)
    @rule(target=sessions, user=identifiers, first=stores, retry=stores)
    def create_and_retry_with_the_same_key(self, user: str, first: int, retry: int) -> UUID:
        key = f"create-{next(self.counter)}"
        result = self.stores[first].create(
            tenant_id="t", user_id=user, agent_id="a", idempotency_key=key
        )
        size = self.log_size()
        again = self.stores[retry].create(
            tenant_id="t", user_id=user, agent_id="a", idempotency_key=key
        )
        assert again.replayed
        assert not result.replayed
        assert (again.session_id, again.version, again.position) == (
            result.session_id,
            1,
            result.position,
        )
        assert self.log_size() == size
        self.model[result.session_id] = ModelSession()
        return result.session_id

    @rule(session_id=sessions, store=stores)
    def create_with_an_existing_id(self, session_id: UUID, store: int) -> None:
        before = self.log_size()
        with pytest.raises(SessionAlreadyExists) as info:
            self.stores[store].create(
                tenant_id="t", user_id="u", agent_id="a", session_id=session_id
            )
        assert info.value.session_id == session_id
        assert self.log_size() == before

    # -----------------------------------------------------------------------------------------
    # Messages

    @rule(
        target=done,
        session_id=sessions,
        role=st.sampled_from(["system", "user", "assistant"]),
        content=contents,
        input_tokens=tokens,
        store=stores,
        keyed=st.booleans(),
    )
    def add_message(
        self,
        *,
        session_id: UUID,
        role: str,
        content: str,
        input_tokens: int | None,
        store: int,
        keyed: bool,
    ) -> Any:
        m = self.model[session_id]
        key = self.new_key(keyed)
        expected = content_error(content) or status_error(m, ACTIVE)
        if expected is None and m.open_calls:
            expected = TranscriptViolation

        def call(s: SessionStore) -> AppendResult:
            return s.add_message(
                session_id,
                role=role,
                content=content,
                input_tokens=input_tokens,
                idempotency_key=key,
            )

        result = self.attempt(session_id, call, expected, store)
        if result is not None:
            m.messages += 1
            m.input_tokens += input_tokens or 0
            m.last_role = role
        return self.keep(session_id, key, call, result)

    @rule(
        target=done,
        session_id=sessions,
        count=st.integers(1, 3),
        content=st.just("") | contents,
        output_tokens=tokens,
        store=stores,
        keyed=st.booleans(),
    )
    def call_tools(
        self,
        *,
        session_id: UUID,
        count: int,
        content: str,
        output_tokens: int | None,
        store: int,
        keyed: bool,
    ) -> Any:
        m = self.model[session_id]
        key = self.new_key(keyed)
        ids = [f"call-{next(self.counter)}" for _ in range(count)]
        calls = [{"id": i, "name": "search", "arguments": {"query": i, "n": 3}} for i in ids]
        too_large = len(content.encode()) > MAX_CONTENT_BYTES
        expected: type[Exception] | None = PayloadTooLarge if too_large else None
        expected = expected or status_error(m, ACTIVE)
        if expected is None and m.open_calls:
            expected = TranscriptViolation

        def call(s: SessionStore) -> AppendResult:
            return s.add_message(
                session_id,
                role="assistant",
                content=content,
                tool_calls=calls,
                output_tokens=output_tokens,
                idempotency_key=key,
            )

        result = self.attempt(session_id, call, expected, store)
        if result is not None:
            m.messages += 1
            m.output_tokens += output_tokens or 0
            m.open_calls += ids
            m.last_role = "assistant"
        return self.keep(session_id, key, call, result)

    @rule(
        target=done,
        session_id=sessions,
        pick=st.integers(0, 20),
        which=st.sampled_from(["open", "closed", "never made"]),
        content=contents,
        store=stores,
        keyed=st.booleans(),
    )
    def answer_tool_call(
        self, *, session_id: UUID, pick: int, which: str, content: str, store: int, keyed: bool
    ) -> Any:
        m = self.model[session_id]
        key = self.new_key(keyed)
        candidates = {"open": m.open_calls, "closed": m.closed_calls}.get(which) or []
        call_id = candidates[pick % len(candidates)] if candidates else "call-never-made"
        expected = content_error(content) or status_error(m, ACTIVE)
        if expected is None and call_id not in m.open_calls:
            expected = TranscriptViolation

        def call(s: SessionStore) -> AppendResult:
            return s.add_message(
                session_id, role="tool", content=content, tool_call_id=call_id, idempotency_key=key
            )

        result = self.attempt(session_id, call, expected, store)
        if result is not None:
            m.messages += 1
            m.open_calls.remove(call_id)
            m.closed_calls.append(call_id)
            m.last_role = "tool"
        return self.keep(session_id, key, call, result)

    # -----------------------------------------------------------------------------------------
    # Turns and context

    @rule(
        target=done,
        session_id=sessions,
        error=st.booleans(),
        input_tokens=tokens,
        output_tokens=tokens,
        store=stores,
        keyed=st.booleans(),
    )
    def record_turn(
        self,
        *,
        session_id: UUID,
        error: bool,
        input_tokens: int | None,
        output_tokens: int | None,
        store: int,
        keyed: bool,
    ) -> Any:
        m = self.model[session_id]
        key = self.new_key(keyed)
        request_id = f"req-{next(self.counter)}"

        def call(s: SessionStore) -> AppendResult:
            return s.record_turn(
                session_id,
                request_id=request_id,
                duration_ms=123.5,
                llm_ms=100,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                error=error,
                error_type="llm_error" if error else None,
                idempotency_key=key,
            )

        result = self.attempt(session_id, call, status_error(m, ACTIVE), store)
        if result is not None:
            m.turns += 1
            m.error_turns += error
            m.input_tokens += input_tokens or 0
            m.output_tokens += output_tokens or 0
        return self.keep(session_id, key, call, result)

    @rule(
        target=done,
        session_id=sessions,
        changes=st.one_of(*[context_changes] * 4, st.just({})),
        removed=st.lists(context_keys, max_size=2, unique=True),
        store=stores,
        keyed=st.booleans(),
    )
    def update_context(
        self,
        *,
        session_id: UUID,
        changes: dict[str, Any],
        removed: list[str],
        store: int,
        keyed: bool,
    ) -> Any:
        m = self.model[session_id]
        key = self.new_key(keyed)
        invalid = (not changes and not removed) or bool(set(changes) & set(removed))
        expected = InvalidInput if invalid else status_error(m, ACTIVE, INTERRUPTED)

        def call(s: SessionStore) -> AppendResult:
            return s.update_context(session_id, set=changes, remove=removed, idempotency_key=key)

        result = self.attempt(session_id, call, expected, store)
        if result is not None:
            for name in removed:
                m.context.pop(name, None)
            m.context.update(changes)
        return self.keep(session_id, key, call, result)

    # -----------------------------------------------------------------------------------------
    # Interrupt, resume, end

    @rule(
        target=done,
        session_id=sessions,
        reason=st.sampled_from(InterruptReason),
        store=stores,
        keyed=st.booleans(),
    )
    def interrupt(self, session_id: UUID, reason: InterruptReason, store: int, keyed: bool) -> Any:
        m = self.model[session_id]
        key = self.new_key(keyed)

        def call(s: SessionStore) -> AppendResult:
            return s.interrupt(session_id, reason=reason.value, idempotency_key=key)

        result = self.attempt(session_id, call, status_error(m, ACTIVE), store)
        if result is not None:
            m.status = INTERRUPTED
            m.interrupts += 1
            m.close_open_calls()
        return self.keep(session_id, key, call, result)

    @rule(target=done, session_id=sessions, store=stores, keyed=st.booleans())
    def resume(self, session_id: UUID, store: int, keyed: bool) -> Any:
        m = self.model[session_id]
        key = self.new_key(keyed)

        def call(s: SessionStore) -> AppendResult:
            return s.resume(session_id, idempotency_key=key)

        result = self.attempt(session_id, call, status_error(m, INTERRUPTED), store)
        if result is not None:
            m.status = ACTIVE
            m.resumes += 1
        return self.keep(session_id, key, call, result)

    @rule(
        target=done,
        session_id=sessions,
        status=st.sampled_from(EndStatus),
        store=stores,
        keyed=st.booleans(),
    )
    def end(self, session_id: UUID, status: EndStatus, store: int, keyed: bool) -> Any:
        m = self.model[session_id]
        key = self.new_key(keyed)

        def call(s: SessionStore) -> AppendResult:
            return s.end(session_id, status=status.value, reason="test", idempotency_key=key)

        result = self.attempt(session_id, call, status_error(m, ACTIVE, INTERRUPTED), store)
        if result is not None:
            m.status = ENDED
            m.end_status = status.value
            m.close_open_calls()
        return self.keep(session_id, key, call, result)

    # -----------------------------------------------------------------------------------------
    # Optimistic concurrency, retries, bad requests

    @rule(session_id=sessions, delta=st.integers(-2, 2), store=stores)
    def record_turn_with_expected_version(self, session_id: UUID, delta: int, store: int) -> None:
        m = self.model[session_id]
        expected_version = m.version + delta
        if expected_version < 0:
            expected: type[Exception] | None = InvalidInput
        elif delta != 0:
            expected = ConcurrencyConflict
        else:
            expected = status_error(m, ACTIVE)

        def call(s: SessionStore) -> AppendResult:
            return s.record_turn(
                session_id, request_id="r", duration_ms=1, expected_version=expected_version
            )

        if self.attempt(session_id, call, expected, store) is not None:
            m.turns += 1

    @rule(entry=done, store=stores)
    def retry_with_the_same_key(self, entry: Done, store: int) -> None:
        before = self.log_size()

        again = entry.call(self.stores[store])
        event("outcome: replayed")

        assert again.replayed
        assert (again.session_id, again.version, again.position, again.events) == (
            entry.result.session_id,
            entry.result.version,
            entry.result.position,
            entry.result.events,
        )
        assert self.log_size() == before

    @rule(entry=done, store=stores)
    def reuse_a_key_for_another_request(self, entry: Done, store: int) -> None:
        before = self.log_size()

        with pytest.raises(IdempotencyKeyReused) as info:
            self.stores[store].record_turn(
                entry.session_id,
                request_id=f"other-{next(self.counter)}",
                duration_ms=1,
                idempotency_key=entry.key,
            )

        assert info.value.session_id == entry.session_id
        assert self.log_size() == before

    @rule(
        session_id=st.uuids(),
        command=st.sampled_from(["message", "turn", "resume", "end", "get"]),
        store=stores,
    )
    def command_an_unknown_session(self, session_id: UUID, command: str, store: int) -> None:
        assume(session_id not in self.model)
        s, before = self.stores[store], self.log_size()
        calls: dict[str, Callable[[], object]] = {
            "message": lambda: s.add_message(session_id, role="user", content="hi"),
            "turn": lambda: s.record_turn(session_id, request_id="r", duration_ms=1),
            "resume": lambda: s.resume(session_id),
            "end": lambda: s.end(session_id),
            "get": lambda: s.get(session_id),
        }

        with pytest.raises(SessionNotFound):
            calls[command]()

        assert self.log_size() == before

    @rule(
        session_id=sessions,
        bad=st.sampled_from(["empty role", "wrong type", "tool without id"]),
        store=stores,
    )
    def send_a_malformed_message(self, session_id: UUID, bad: str, store: int) -> None:
        malformed: dict[str, dict[str, Any]] = {
            "empty role": {"role": "", "content": "hi"},
            "wrong type": {"role": "user", "content": 42},
            "tool without id": {"role": "tool", "content": "42"},
        }
        fields = malformed[bad]

        def call(s: SessionStore) -> AppendResult:
            return s.add_message(session_id, **fields)

        self.attempt(session_id, call, InvalidInput, store)

    @rule(session_id=sessions, store=stores)
    def read_through_a_writer(self, session_id: UUID, store: int) -> None:
        """A writer's ``get`` catches its cache up; it must see what the model sees."""
        self.check_state(self.stores[store].get(session_id), self.model[session_id])

    # -----------------------------------------------------------------------------------------
    # Invariants

    def check_state(self, state: Session, m: ModelSession) -> None:
        assert state.status.value == m.status
        assert state.version == m.version
        assert state.message_count == m.messages
        assert (state.turn_count, state.error_turn_count) == (m.turns, m.error_turns)
        assert (state.interrupt_count, state.resume_count) == (m.interrupts, m.resumes)
        assert (state.input_tokens, state.output_tokens) == (m.input_tokens, m.output_tokens)
        assert list(state.open_tool_call_ids) == m.open_calls
        assert dict(state.context) == m.context
        assert (state.end_status and state.end_status.value) == m.end_status
        assert (state.last_message_role and state.last_message_role.value) == m.last_role

    @invariant()
    def every_session_matches_the_model_and_the_fold_of_its_history(self) -> None:
        for session_id, m in self.model.items():
            state = self.auditor.get(session_id)
            self.check_state(state, m)
            events = [recorded.event for recorded in self.auditor.history(session_id)]
            assert [e.version for e in events] == list(range(1, m.version + 1))
            assert replay(events) == state
            assert state.resume_count == sum(isinstance(e, SessionResumed) for e in events)
            assert state.message_count == sum(isinstance(e, MessageAdded) for e in events)

    @invariant()
    def the_log_holds_exactly_the_events_of_the_sessions(self) -> None:
        rows = self.log.read_log(limit=1_000_000)
        assert len(rows) == sum(m.version for m in self.model.values())
        assert [r.position for r in rows] == list(range(1, len(rows) + 1))
        assert len({r.event.event_id for r in rows}) == len(rows)


TestSessionMachine = SessionMachine.TestCase
