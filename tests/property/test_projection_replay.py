"""Every view three ways: applied incrementally, rebuilt from zero, and computed from the events.

Random histories of several sessions are driven through a SessionStore with a clock that jumps
by random amounts (across UTC midnight too). The runner applies them now and then, in small
random batches; then each projection is rebuilt into a new generation. Both must equal rows
computed straight from the log: the aggregate's fold for session state, and small, obviously
correct re-implementations for the transcript, metrics and cleanup views. Every count in a
view must be a count of events.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.memory.views import MemoryViewStore
from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.session import Session, SessionStatus, replay
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import (
    ContextUpdated,
    EndStatus,
    InterruptReason,
    MessageAdded,
    Modality,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionResumed,
    TurnRecorded,
)
from sessionstore.projections import all_projections
from sessionstore.projections.base import Batch, Key, Projection, Row, Table
from sessionstore.projections.metrics import BUCKETS_MS, merge_histograms, percentile
from sessionstore.projections.runner import ProjectionRunner, rebuild
from sessionstore.projections.session_state import state_to_row
from sessionstore.projections.tables import (
    AGENT_DAILY_METRICS,
    SESSION_CLEANUP,
    SESSION_METRICS,
    SESSION_STATE,
    TRANSCRIPT,
)

Draw = Callable[..., Any]  # data.draw(strategy, label=...)
View = dict[Key, Row]
Views = dict[str, View]

START = datetime(2025, 3, 1, 21, 0, tzinfo=UTC)
STAGES = ("stt", "llm", "tts", "tool")

gaps = st.one_of(
    st.integers(0, 3),
    st.integers(0, 600),
    st.integers(0, 8 * 3600),  # hours: histories cross midnight
).map(lambda s: timedelta(seconds=s))
micros = st.integers(0, 999_999).map(lambda us: timedelta(microseconds=us))
millis = st.floats(0, 1_000_000, allow_nan=False, allow_infinity=False)  # beyond the last bucket
stage_ms = st.none() | st.floats(0, 5_000, allow_nan=False, allow_infinity=False)
tokens = st.none() | st.integers(0, 5_000)
contents = st.sampled_from(["hi", "Grüezi 👋", "Where is my order?", "long " * 30])
context_keys = st.sampled_from(["lang", "cart", "step", "🔑"])
# No NUL: the input contract refuses it (docs/input-contract.md), so the store would too.
context_texts = st.text(st.characters(exclude_characters="\x00"), max_size=5)
context_values = st.none() | st.integers(-5, 5) | context_texts | st.lists(st.booleans())
policies = st.fixed_dictionaries(
    {
        "idle_timeout_seconds": st.none() | st.integers(1, 10_000),
        "ttl_seconds": st.none() | st.integers(1, 100_000),
        "retention_days": st.none() | st.integers(1, 400),
    }
)


# ---------------------------------------------------------------------------------------------
# Histories: each step picks a command the session's current state accepts


def _create(draw: Draw, store: SessionStore) -> UUID:
    return store.create(
        tenant_id=draw(st.sampled_from(["t1", "t2"])),
        user_id="u",
        agent_id=draw(st.sampled_from(["bot-a", "bot-b"])),
        channel=draw(st.sampled_from(["text", "voice", "phone"])),
        policy=draw(policies),
    ).session_id


def _act(draw: Draw, store: SessionStore, state: Session) -> None:
    sid = state.session_id
    if state.status is SessionStatus.INTERRUPTED:
        choice = draw(st.sampled_from(["resume", "resume", "context", "end"]))
    elif state.open_tool_calls:
        choice = draw(st.sampled_from(["answer", "answer", "answer", "turn", "interrupt", "end"]))
    else:
        choice = draw(
            st.sampled_from(
                ["message", "message", "tools", "turn", "turn", "context", "interrupt", "end"]
            )
        )
    if choice == "resume":
        store.resume(sid)
    elif choice == "context":
        changes = draw(st.dictionaries(context_keys, context_values, max_size=2))
        removed = draw(st.lists(context_keys, max_size=2, unique=True))
        removed = [key for key in removed if key not in changes]
        if not changes and not removed:
            changes = {"step": 0}
        store.update_context(sid, set=changes, remove=removed)
    elif choice == "end":
        store.end(sid, status=draw(st.sampled_from(EndStatus)).value)
    elif choice == "interrupt":
        store.interrupt(sid, reason=draw(st.sampled_from(InterruptReason)).value)
    elif choice == "answer":
        call = draw(st.sampled_from(state.open_tool_call_ids))
        store.add_message(sid, role="tool", content="result", tool_call_id=call)
    elif choice == "tools":
        calls = [
            {"id": f"c{state.version}-{i}", "name": "lookup", "arguments": {"i": i}}
            for i in range(draw(st.integers(1, 3)))
        ]
        store.add_message(sid, role="assistant", content="", tool_calls=calls, output_tokens=3)
    elif choice == "message":
        store.add_message(
            sid,
            role=draw(st.sampled_from(["user", "assistant", "system"])),
            content=draw(contents),
            input_tokens=draw(tokens),
            output_tokens=draw(tokens),
            modality=draw(st.sampled_from(Modality)).value,
            language=draw(st.sampled_from([None, "en", "de-CH", "zh-Hant-TW"])),
        )
    else:
        error = draw(st.booleans())
        store.record_turn(
            sid,
            request_id=f"r{state.version}",
            duration_ms=draw(millis),
            stt_ms=draw(stage_ms),
            llm_ms=draw(stage_ms),
            tts_ms=draw(stage_ms),
            tool_ms=draw(stage_ms),
            input_tokens=draw(tokens),
            output_tokens=draw(tokens),
            error=error,
            error_type="boom" if error else None,
        )


def _snapshot(views: MemoryViewStore, projections: list[Projection]) -> Views:
    return {
        table.name: {table.key_of(row): row for row in views.rows(projection.name, table.name)}
        for projection in projections
        for table in projection.tables
    }


# ---------------------------------------------------------------------------------------------
# The expected views, computed directly from the events


def _by_session(log: list[RecordedEvent]) -> dict[UUID, list[RecordedEvent]]:
    sessions: dict[UUID, list[RecordedEvent]] = defaultdict(list)
    for recorded in log:
        sessions[recorded.event.session_id].append(recorded)
    return sessions


def expected_state(log: list[RecordedEvent]) -> View:
    out: View = {}
    for sid, events in _by_session(log).items():
        state = replay(r.event for r in events)
        assert state is not None
        out[(sid,)] = state_to_row(state, events[-1].position)
    return out


def expected_transcript(log: list[RecordedEvent]) -> View:
    out: View = {}
    for r in log:
        e = r.event
        common = {
            "session_id": e.session_id,
            "version": e.version,
            "position": r.position,
            "tenant_id": r.tenant_id,
            "occurred_at": e.occurred_at,
        }
        if isinstance(e, MessageAdded):
            out[(e.session_id, e.version, 0)] = common | {
                "seq": 0,
                "message_id": e.message_id,
                "role": e.role.value,
                "content": e.content,
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments} for c in e.tool_calls
                ],
                "tool_call_id": e.tool_call_id,
                "aborted": False,
                "input_tokens": e.input_tokens,
                "output_tokens": e.output_tokens,
                "modality": e.modality.value,
                "language": e.language,
            }
        elif isinstance(e, SessionInterrupted | SessionEnded):
            why = (
                f"session interrupted ({e.reason.value})"
                if isinstance(e, SessionInterrupted)
                else f"session ended ({e.status.value})"
            )
            for seq, call in enumerate(e.aborted_tool_calls, start=1):
                out[(e.session_id, e.version, seq)] = common | {
                    "seq": seq,
                    "message_id": None,
                    "role": "tool",
                    "content": f"[tool call aborted: {why}]",
                    "tool_calls": [],
                    "tool_call_id": call,
                    "aborted": True,
                    "input_tokens": None,
                    "output_tokens": None,
                    "modality": "text",
                    "language": None,
                }
    return out


def _ms(values: list[float]) -> float:
    """The sum of durations kept to the microsecond (the metrics' documented precision)."""
    return round(math.fsum(round(v, 3) for v in values), 3)


def _bucket(duration: float) -> int:
    for index, bound in enumerate(BUCKETS_MS):
        if duration <= bound:
            return index
    return len(BUCKETS_MS) - 1


def _turn_sums(turns: list[TurnRecorded]) -> Row:
    row: Row = {"total_ms": _ms([t.duration_ms for t in turns])}
    for stage in STAGES:
        reported = [v for t in turns if (v := getattr(t, f"{stage}_ms")) is not None]
        row[f"{stage}_ms"] = _ms(reported)
        row[f"{stage}_count"] = len(reported)
    row["input_tokens"] = sum(t.input_tokens or 0 for t in turns)
    row["output_tokens"] = sum(t.output_tokens or 0 for t in turns)
    return row


def expected_session_metrics(log: list[RecordedEvent]) -> View:
    out: View = {}
    for sid, events in _by_session(log).items():
        created = events[0].event
        assert isinstance(created, SessionCreated)
        turns = [r.event for r in events if isinstance(r.event, TurnRecorded)]
        out[(sid,)] = {
            "session_id": sid,
            "tenant_id": created.tenant_id,
            "agent_id": created.agent_id,
            "requests": len(turns),
            "errors": sum(t.error for t in turns),
            **_turn_sums(turns),
            "first_turn_at": turns[0].occurred_at if turns else None,
            "last_turn_at": turns[-1].occurred_at if turns else None,
        }
    return out


def expected_daily_metrics(log: list[RecordedEvent]) -> View:
    owner: dict[UUID, tuple[str, str]] = {}
    grouped: dict[tuple[str, str, date], list[SessionEvent]] = defaultdict(list)
    for r in log:
        e = r.event
        if isinstance(e, SessionCreated):
            owner[e.session_id] = (e.tenant_id, e.agent_id)
        grouped[(*owner[e.session_id], e.occurred_at.date())].append(e)
    out: View = {}
    for (tenant, agent, day), events in grouped.items():

        def count(kind: type[SessionEvent], events: list[SessionEvent] = events) -> int:
            return sum(isinstance(e, kind) for e in events)

        turns = [e for e in events if isinstance(e, TurnRecorded)]
        ends = [e.status for e in events if isinstance(e, SessionEnded)]
        if (
            len(turns)
            + len(ends)
            + count(SessionCreated)
            + count(MessageAdded)
            + count(SessionInterrupted)
            + count(SessionResumed)
            == 0
        ):
            continue  # only context updates that day: they are not metrics
        histogram = [0] * len(BUCKETS_MS)
        for t in turns:
            histogram[_bucket(t.duration_ms)] += 1
        out[(tenant, agent, day)] = {
            "tenant_id": tenant,
            "agent_id": agent,
            "day": day,
            "sessions_started": count(SessionCreated),
            **{f"sessions_{s.value}": ends.count(s) for s in EndStatus},
            "messages": count(MessageAdded),
            "turns": len(turns),
            "error_turns": sum(t.error for t in turns),
            "interrupts": count(SessionInterrupted),
            "resumes": count(SessionResumed),
            **_turn_sums(turns),
            "latency_histogram": histogram,
        }
    return out


def expected_cleanup(log: list[RecordedEvent]) -> View:
    out: View = {}
    for sid, events in _by_session(log).items():
        created, last = events[0].event, events[-1].event
        assert isinstance(created, SessionCreated)
        policy = created.policy
        status = "active"
        for r in events:
            if isinstance(r.event, SessionInterrupted):
                status = "interrupted"
            elif isinstance(r.event, SessionResumed):
                status = "active"
            elif isinstance(r.event, SessionEnded):
                status = "ended"
        ended = status == "ended"
        idle, ttl, days = policy.idle_timeout_seconds, policy.ttl_seconds, policy.retention_days
        out[(sid,)] = {
            "session_id": sid,
            "tenant_id": created.tenant_id,
            "status": status,
            "version": last.version,
            "last_activity_at": last.occurred_at,
            "idle_timeout_seconds": idle,
            "retention_days": days,
            "idle_deadline": None
            if ended or idle is None
            else last.occurred_at + timedelta(seconds=idle),
            "expires_at": None
            if ended or ttl is None
            else created.occurred_at + timedelta(seconds=ttl),
            "retention_until": last.occurred_at + timedelta(days=days)
            if ended and days is not None
            else None,
        }
    return out


EXPECTED: dict[str, Callable[[list[RecordedEvent]], View]] = {
    SESSION_STATE.name: expected_state,
    TRANSCRIPT.name: expected_transcript,
    SESSION_METRICS.name: expected_session_metrics,
    AGENT_DAILY_METRICS.name: expected_daily_metrics,
    SESSION_CLEANUP.name: expected_cleanup,
}


def _assert_counts_are_counts_of_events(views: Views, log: list[RecordedEvent]) -> None:
    events = [r.event for r in log]

    def count(kind: type[SessionEvent]) -> int:
        return sum(isinstance(e, kind) for e in events)

    turns = [e for e in events if isinstance(e, TurnRecorded)]
    aborted = sum(
        len(e.aborted_tool_calls)
        for e in events
        if isinstance(e, SessionInterrupted | SessionEnded)
    )
    state = views[SESSION_STATE.name].values()
    daily = views[AGENT_DAILY_METRICS.name].values()
    transcript = views[TRANSCRIPT.name].values()

    assert len(state) == len(views[SESSION_CLEANUP.name]) == count(SessionCreated)
    assert len(views[SESSION_METRICS.name]) == count(SessionCreated)
    assert sum(r["version"] for r in state) == len(events)
    assert sum(r["message_count"] for r in state) == count(MessageAdded)
    assert sum(not r["aborted"] for r in transcript) == count(MessageAdded)
    assert sum(r["aborted"] for r in transcript) == aborted
    assert sum(r["messages"] for r in daily) == count(MessageAdded)
    assert sum(r["turn_count"] for r in state) == len(turns) == sum(r["turns"] for r in daily)
    assert sum(r["requests"] for r in views[SESSION_METRICS.name].values()) == len(turns)
    assert sum(sum(r["latency_histogram"]) for r in daily) == len(turns)
    merged: list[int] = []
    for row in daily:
        merged = merge_histograms(merged, row["latency_histogram"])
    assert (percentile(merged, 50) is None) == (not turns)
    assert sum(r["error_turns"] for r in daily) == sum(t.error for t in turns)
    assert sum(r["resume_count"] for r in state) == sum(r["resumes"] for r in daily)
    assert sum(r["resumes"] for r in daily) == count(SessionResumed)
    assert sum(r["interrupts"] for r in daily) == count(SessionInterrupted)
    assert sum(r["sessions_started"] for r in daily) == count(SessionCreated)
    ended = sum(r[f"sessions_{s.value}"] for r in daily for s in EndStatus)
    assert ended == count(SessionEnded) == sum(r["status"] == "ended" for r in state)
    assert count(ContextUpdated) == len(events) - sum(
        count(kind)
        for kind in (
            SessionCreated,
            MessageAdded,
            TurnRecorded,
            SessionInterrupted,
            SessionResumed,
            SessionEnded,
        )
    )


def _label(log: list[RecordedEvent]) -> None:
    """Statistics (pytest --hypothesis-show-statistics) showing the histories are varied."""
    events = [r.event for r in log]
    event(f"events: {min(len(events) // 20 * 20, 60)}+")
    event(f"sessions: {sum(isinstance(e, SessionCreated) for e in events)}")
    event(f"UTC days: {len({e.occurred_at.date() for e in events})}")
    if any(
        isinstance(e, SessionInterrupted | SessionEnded) and e.aborted_tool_calls for e in events
    ):
        event("aborted tool calls")
    if any(isinstance(e, SessionResumed) for e in events):
        event("resumed")
    if any(isinstance(e, SessionEnded) for e in events):
        event("ended")


# ---------------------------------------------------------------------------------------------
# The property


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_incremental_views_equal_rebuilt_views_equal_the_fold(data: st.DataObject) -> None:
    draw: Draw = data.draw
    clock_now = [START + draw(gaps)]
    ids = itertools.count(1)
    log = MemoryEventLog()
    store = SessionStore(log, clock=lambda: clock_now[0], new_id=lambda: UUID(int=next(ids)))
    views = MemoryViewStore()
    projections = all_projections()
    for projection in projections:
        views.ensure(projection)
    sessions: list[UUID] = []

    for _ in range(draw(st.integers(1, 45), label="steps")):
        clock_now[0] += draw(gaps) + draw(micros)
        open_sessions = [s for s in sessions if not store.get(s).is_ended]
        if not open_sessions or (len(sessions) < 5 and draw(st.integers(0, 5)) == 0):
            sessions.append(_create(draw, store))
        else:
            _act(draw, store, store.get(draw(st.sampled_from(open_sessions))))
        if draw(st.integers(0, 3)) == 0:  # now and then, part of the way, in small batches
            runner = ProjectionRunner(
                log, views, projections, batch_size=draw(st.integers(1, 4), label="batch")
            )
            for _ in range(draw(st.integers(1, 3))):
                runner.step()

    ProjectionRunner(log, views, projections, batch_size=draw(st.integers(1, 6))).catch_up()
    recorded = log.read_log(limit=1_000_000)
    _label(recorded)
    incremental = _snapshot(views, projections)
    rebuild_size = draw(st.integers(1, 50), label="rebuild batch")
    if draw(st.booleans(), label="rebuild all in one pass"):
        rebuild(log, views, projections, batch_size=rebuild_size)
    else:
        for projection in projections:
            rebuild(log, views, projection, batch_size=rebuild_size)
    assert all(views.active_generation(p.name) == 2 for p in projections)
    rebuilt = _snapshot(views, projections)

    for table, expected in EXPECTED.items():
        assert incremental[table] == expected(recorded), table
        assert rebuilt[table] == incremental[table], table
    _assert_counts_are_counts_of_events(incremental, recorded)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_metrics_do_not_depend_on_how_sessions_interleave(data: st.DataObject) -> None:
    """A consumer that sees the sessions in another interleaving (Kafka partitions) builds the
    same metrics: per-session order is all that matters."""
    draw: Draw = data.draw
    clock_now = [START]
    ids = itertools.count(1)
    log = MemoryEventLog()
    store = SessionStore(log, clock=lambda: clock_now[0], new_id=lambda: UUID(int=next(ids)))
    sessions = [_create(draw, store) for _ in range(3)]
    for _ in range(draw(st.integers(1, 30))):
        clock_now[0] += draw(gaps) + draw(micros)
        open_sessions = [s for s in sessions if not store.get(s).is_ended]
        if open_sessions:
            _act(draw, store, store.get(draw(st.sampled_from(open_sessions))))
    recorded = log.read_log(limit=1_000_000)
    by_session = list(_by_session(recorded).values())
    reordered = [r for events in draw(st.permutations(by_session)) for r in events]

    metrics = next(p for p in all_projections() if p.name == "metrics")
    batch = Batch(metrics.tables, lambda table, keys: [])
    for r in reordered:
        metrics.apply(batch, r)
    batch.finish()

    def built(table: Table) -> View:
        return {table.key_of(row): row for row in batch.changes[table.name].upserts.values()}

    assert built(SESSION_METRICS) == expected_session_metrics(recorded)
    assert built(AGENT_DAILY_METRICS) == expected_daily_metrics(recorded)
