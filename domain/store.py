"""SessionStore: the application service agents call. Knows no driver; talks to an EventLog.

Every append follows one path (``_decide_and_append``):

1. validate the request (a command model) and enforce the size limits;
2. take the session's state from an in-process cache (or replay it from the log);
3. run the command function, which checks the state-machine rule and returns the event;
4. append it with ``version = state.version + 1``. The log's uniqueness of (session_id, version)
   is the concurrency check, so a stale cache can never overwrite anything: the insert fails,
   the state is caught up from the log and the command is decided again (or, if the caller
   passed ``expected_version``, a ConcurrencyConflict is raised).

An idempotency key is written in the same transaction as the events. A retry with the same key
and request returns the first result and appends nothing, across restarts.

(Longer than the house's ~500 lines on purpose: the commands, the one append path and its
retries stay together, so the concurrency story reads in one place.)
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, JsonValue, ValidationError

from sessionstore.domain import contract
from sessionstore.domain import session as rules
from sessionstore.domain.commands import (
    AddMessage,
    Command,
    CreateSession,
    End,
    Interrupt,
    RecordTurn,
    Resume,
    UpdateContext,
)
from sessionstore.domain.contract import Limits
from sessionstore.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidTransition,
    PayloadTooLarge,
    SessionAlreadyExists,
    SessionNotFound,
    SessionStoreError,
    StreamVersionTaken,
    TranscriptViolation,
)
from sessionstore.domain.ports import (
    AppendResult,
    EventLog,
    IdempotencyClaim,
    IdempotencyKeyExists,
    RecordedEvent,
    StoredIdempotency,
)
from sessionstore.domain.session import Session
from sessionstore.events.catalogue import SessionEvent, SessionPolicy, ToolCall

M = TypeVar("M", bound=BaseModel)


def utc_now() -> datetime:
    return datetime.now(UTC)


class _StateCache:
    """A small thread-safe LRU of session states (states are immutable, so sharing is safe)."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[UUID, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: UUID) -> Session | None:
        with self._lock:
            state = self._items.get(session_id)
            if state is not None:
                self._items.move_to_end(session_id)
            return state

    def put(self, state: Session) -> None:
        if self._maxsize <= 0:
            return
        with self._lock:
            current = self._items.get(state.session_id)
            # Two threads may race to cache the same session; never go back in time.
            if current is None or current.version <= state.version:
                self._items[state.session_id] = state
                self._items.move_to_end(state.session_id)
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)

    def drop(self, session_id: UUID) -> None:
        with self._lock:
            self._items.pop(session_id, None)


Decide = Callable[[Session], SessionEvent]


class SessionStore:
    """Append and read sessions. Thread-safe; one instance per process is enough."""

    MAX_ATTEMPTS = 30
    """Appends without ``expected_version`` re-decide on fresh state this often under contention,
    with jittered exponential backoff between attempts (writers in other processes)."""
    LOCK_STRIPES = 256

    def __init__(
        self,
        log: EventLog,
        *,
        limits: Limits | None = None,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], UUID] = uuid4,
        cache_size: int = 10_000,
    ) -> None:
        self.log = log
        self.limits = limits or Limits()
        self._clock = clock
        self._new_id = new_id
        self._cache = _StateCache(cache_size)
        # Writers of one session in this process take turns, so they never conflict with each
        # other; the database still arbitrates between processes.
        self._stripes = [threading.Lock() for _ in range(self.LOCK_STRIPES)]

    def close(self) -> None:
        self.log.close()

    # -----------------------------------------------------------------------------------------
    # Commands

    def create(
        self,
        *,
        tenant_id: str,
        user_id: str,
        agent_id: str,
        channel: str = "text",
        metadata: Mapping[str, JsonValue] | None = None,
        policy: SessionPolicy | Mapping[str, Any] | None = None,
        session_id: UUID | str | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        fields: dict[str, Any] = {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "agent_id": agent_id,
            "channel": channel,
            "metadata": metadata or {},
            "session_id": session_id,
        }
        if policy is not None:
            fields["policy"] = policy
        return self.execute(
            None, _validated(CreateSession, fields), idempotency_key=idempotency_key
        )

    def add_message(
        self,
        session_id: UUID | str,
        *,
        role: str,
        content: str = "",
        tool_calls: Iterable[ToolCall | Mapping[str, Any]] = (),
        tool_call_id: str | None = None,
        message_id: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        modality: str = "text",
        language: str | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        command = _validated(
            AddMessage,
            {
                "role": role,
                "content": content,
                # Only one-shot iterators are materialised; anything else goes to validation
                # as it is, so a string or a dict is an error, not a sequence of tool calls.
                "tool_calls": tuple(tool_calls) if isinstance(tool_calls, Iterator) else tool_calls,
                "tool_call_id": tool_call_id,
                "message_id": message_id,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "modality": modality,
                "language": language,
            },
        )
        return self.execute(
            session_id, command, expected_version=expected_version, idempotency_key=idempotency_key
        )

    def record_turn(
        self,
        session_id: UUID | str,
        *,
        request_id: str,
        duration_ms: float,
        stt_ms: float | None = None,
        llm_ms: float | None = None,
        tts_ms: float | None = None,
        tool_ms: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        error: bool = False,
        error_type: str | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        command = _validated(
            RecordTurn,
            {
                "request_id": request_id,
                "duration_ms": duration_ms,
                "stt_ms": stt_ms,
                "llm_ms": llm_ms,
                "tts_ms": tts_ms,
                "tool_ms": tool_ms,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "error": error,
                "error_type": error_type,
            },
        )
        return self.execute(
            session_id, command, expected_version=expected_version, idempotency_key=idempotency_key
        )

    def update_context(
        self,
        session_id: UUID | str,
        *,
        set: Mapping[str, JsonValue] | None = None,  # noqa: A002 - mirrors the event field
        remove: Sequence[str] = (),
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        command = _validated(UpdateContext, {"set": {} if set is None else set, "remove": remove})
        return self.execute(
            session_id, command, expected_version=expected_version, idempotency_key=idempotency_key
        )

    def interrupt(
        self,
        session_id: UUID | str,
        *,
        reason: str,
        detail: str = "",
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        command = _validated(Interrupt, {"reason": reason, "detail": detail})
        return self.execute(
            session_id, command, expected_version=expected_version, idempotency_key=idempotency_key
        )

    def resume(
        self,
        session_id: UUID | str,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        return self.execute(
            session_id, Resume(), expected_version=expected_version, idempotency_key=idempotency_key
        )

    def end(
        self,
        session_id: UUID | str,
        *,
        status: str = "completed",
        reason: str = "",
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        command = _validated(End, {"status": status, "reason": reason})
        return self.execute(
            session_id, command, expected_version=expected_version, idempotency_key=idempotency_key
        )

    def execute(
        self,
        session_id: UUID | str | None,
        command: Command,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Run any validated command. ``session_id`` is None only for CreateSession."""
        self._check_limits(command)
        claim = self._claim(command, idempotency_key)
        if expected_version is not None and (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 0
        ):
            raise InvalidInput(
                [{"field": "expected_version", "message": "must be a non-negative integer"}]
            )
        if isinstance(command, CreateSession):
            return self._create(command, claim)
        if session_id is None:
            raise InvalidInput([{"field": "session_id", "message": "required"}])
        sid = parse_session_id(session_id)
        decide = self._decider(command)
        try:
            with self._stripes[hash(sid) % self.LOCK_STRIPES]:
                return self._decide_and_append(sid, decide, expected_version, claim)
        except IdempotencyKeyExists as exists:
            return _replayed(exists.stored, claim, sid)
        except SessionStoreError:
            # A retry whose first attempt succeeded may now be invalid (the session moved on);
            # the stored key, not the current state, decides what the retry gets.
            if claim is not None and (stored := self.log.find_idempotency(claim.key)):
                return _replayed(stored, claim, sid)
            raise

    # -----------------------------------------------------------------------------------------
    # Queries

    def get(self, session_id: UUID | str) -> Session:
        """Current state, by replay of the log (an in-process cache is caught up first)."""
        sid = parse_session_id(session_id)
        cached = self._cache.get(sid)
        return self._load(sid) if cached is None else self._catch_up(cached)

    def history(
        self, session_id: UUID | str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The session's events in version order, after ``after_version``."""
        sid = parse_session_id(session_id)
        events = self.log.read_session(sid, after_version=after_version, limit=limit)
        if not events and (after_version == 0 or self._cache.get(sid) is None):
            self._load(sid)  # raises SessionNotFound for an unknown session
        return events

    # -----------------------------------------------------------------------------------------
    # Internals

    def _create(self, command: CreateSession, claim: IdempotencyClaim | None) -> AppendResult:
        sid = command.session_id or self._new_id()
        event = rules.create_session(
            command, session_id=sid, at=self._clock(), event_id=self._new_id()
        )
        try:
            result = self.log.append([event], tenant_id=command.tenant_id, idempotency=claim)
        except IdempotencyKeyExists as exists:
            return _replayed(exists.stored, claim, None)
        except StreamVersionTaken:
            if claim is not None and (stored := self.log.find_idempotency(claim.key)):
                return _replayed(stored, claim, None)
            raise SessionAlreadyExists(sid) from None
        self._cache.put(rules.evolve(None, event))
        return result

    def _decide_and_append(
        self,
        sid: UUID,
        decide: Decide,
        expected_version: int | None,
        claim: IdempotencyClaim | None,
    ) -> AppendResult:
        state, fresh = self._state(sid)
        for attempt in range(self.MAX_ATTEMPTS):
            if expected_version is not None and state.version != expected_version and not fresh:
                state, fresh = self._catch_up(state), True
            if expected_version is not None and state.version != expected_version:
                raise ConcurrencyConflict(sid, expected_version, state.version)
            try:
                event = decide(state)
            except (InvalidTransition, TranscriptViolation):
                if fresh:
                    raise
                # The cached state may be behind another writer: judge again on the log's
                # state, expected_version first (a stale one is a conflict, whatever the rule).
                state, fresh = self._catch_up(state), True
                continue
            try:
                result = self.log.append([event], tenant_id=state.tenant_id, idempotency=claim)
            except StreamVersionTaken:
                # Another process appended first. Back off a little (so competing writers
                # spread out instead of colliding again), catch up, and decide again.
                self._cache.drop(sid)
                if attempt:
                    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))  # noqa: S311
                state, fresh = self._catch_up(state), True
                continue
            self._cache.put(rules.evolve(state, event))
            return result
        raise ConcurrencyConflict(
            sid,
            state.version,
            self._load(sid).version,
            detail=f"gave up after {self.MAX_ATTEMPTS} attempts: other writers kept appending",
        )

    def _state(self, sid: UUID) -> tuple[Session, bool]:
        cached = self._cache.get(sid)
        if cached is not None:
            return cached, False
        return self._load(sid), True

    def _load(self, sid: UUID) -> Session:
        state = rules.replay(recorded.event for recorded in self.log.read_session(sid))
        if state is None:
            raise SessionNotFound(sid)
        self._cache.put(state)
        return state

    def _catch_up(self, state: Session) -> Session:
        newer = self.log.read_session(state.session_id, after_version=state.version)
        caught_up = rules.replay((recorded.event for recorded in newer), state) or state
        self._cache.put(caught_up)
        return caught_up

    def _decider(self, command: Command) -> Decide:
        clock, new_id = self._clock, self._new_id
        if isinstance(command, AddMessage):
            message_id = command.message_id or str(new_id())
            return lambda s: rules.add_message(
                s, command, message_id=message_id, at=clock(), event_id=new_id()
            )
        if isinstance(command, RecordTurn):
            return lambda s: rules.record_turn(s, command, at=clock(), event_id=new_id())
        if isinstance(command, UpdateContext):
            return lambda s: rules.update_context(s, command, at=clock(), event_id=new_id())
        if isinstance(command, Interrupt):
            return lambda s: rules.interrupt(s, command, at=clock(), event_id=new_id())
        if isinstance(command, Resume):
            return lambda s: rules.resume(s, at=clock(), event_id=new_id())
        if isinstance(command, End):
            return lambda s: rules.end(s, command, at=clock(), event_id=new_id())
        msg = f"unknown command {type(command).__name__}"
        raise TypeError(msg)

    def _claim(self, command: Command, key: str | None) -> IdempotencyClaim | None:
        if key is None:
            return None
        if not isinstance(key, str) or not key or len(key) > self.limits.max_idempotency_key_length:
            limit = self.limits.max_idempotency_key_length
            raise InvalidInput(
                [{"field": "idempotency_key", "message": f"must be 1 to {limit} characters"}]
            )
        problem = contract.check_text("idempotency_key", key)
        if problem:
            raise InvalidInput([problem])
        return IdempotencyClaim(key=key, request_hash=command.fingerprint())

    def _check_limits(self, command: Command) -> None:
        """The input contract (``domain.contract``): one walk over the command's values, then
        the configurable limits on what it measured. Raises InvalidInput listing each problem
        with its field path (PayloadTooLarge when the only problem is one size)."""
        fields = contract.model_fields(command)
        found = contract.scan(fields, self.limits)
        problems = found.problems + contract.limit_problems(found.shapes, self.limits)
        if problems:
            raise InvalidInput(problems)
        sizes = contract.oversized(dict(fields), self.limits)
        if sizes:
            raise PayloadTooLarge(sizes[0].field, sizes[0].size, sizes[0].limit)


def parse_session_id(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidInput([{"field": "session_id", "message": f"not a UUID: {value!r}"}]) from None


def _validated(model: type[M], fields: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        raise InvalidInput(
            [
                {
                    "field": ".".join(str(p) for p in err["loc"]) or model.__name__,
                    "message": err["msg"],
                }
                for err in e.errors()
            ]
        ) from None


def _replayed(
    stored: StoredIdempotency, claim: IdempotencyClaim | None, session_id: UUID | None
) -> AppendResult:
    if claim is None:  # only reachable through a backend bug: a key error without a key
        msg = "idempotency conflict reported for an append that carried no key"
        raise RuntimeError(msg)
    if stored.request_hash != claim.request_hash or (
        session_id is not None and stored.session_id != session_id
    ):
        raise IdempotencyKeyReused(claim.key, stored.session_id)
    return AppendResult(
        session_id=stored.session_id,
        version=stored.last_version,
        position=stored.position,
        events=stored.last_version - stored.first_version + 1,
        replayed=True,
    )
