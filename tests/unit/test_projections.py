"""The four projections over the in-memory log and view store: exact rows after realistic
conversations, day boundaries, percentile math, cleanup deadlines for every policy, and the
same views whatever the batch size or after a rebuild."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.memory.views import MemoryViewStore
from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.session import PREVIEW_CHARS, SessionStatus, replay
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import EVENT_TYPES, EndStatus, MessageAdded, TurnRecorded
from sessionstore.projections import all_projections
from sessionstore.projections.base import Batch, Projection, Row, Table
from sessionstore.projections.cleanup import CleanupProjection
from sessionstore.projections.metrics import (
    BUCKETS_MS,
    MetricsProjection,
    bucket_of,
    latency_percentiles,
    merge_histograms,
    percentile,
    rates,
)
from sessionstore.projections.runner import ProjectionRunner, rebuild
from sessionstore.projections.session_state import (
    SessionStateProjection,
    row_to_state,
    state_to_row,
)
from sessionstore.projections.tables import (
    AGENT_DAILY_METRICS,
    SESSION_CLEANUP,
    SESSION_METRICS,
    SESSION_STATE,
    TRANSCRIPT,
)
from sessionstore.projections.transcript import TranscriptProjection

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
OWNER = {
    SESSION_STATE.name: "session_state",
    TRANSCRIPT.name: "transcript",
    SESSION_METRICS.name: "metrics",
    AGENT_DAILY_METRICS.name: "metrics",
    SESSION_CLEANUP.name: "cleanup",
}
ALL_TABLES = (SESSION_STATE, TRANSCRIPT, SESSION_METRICS, AGENT_DAILY_METRICS, SESSION_CLEANUP)
WEATHER = {"id": "call-w", "name": "get_weather", "arguments": {"city": "Zürich"}}
TIME = {"id": "call-t", "name": "get_time", "arguments": {}}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class Views:
    """A store, its log, the four projections on a memory view store, and a runner."""

    clock: Clock = field(default_factory=Clock)
    log: MemoryEventLog = field(default_factory=MemoryEventLog)
    views: MemoryViewStore = field(default_factory=MemoryViewStore)
    projections: list[Projection] = field(default_factory=all_projections)

    def __post_init__(self) -> None:
        self.store = SessionStore(self.log, clock=self.clock)
        for projection in self.projections:
            self.views.ensure(projection)

    def run(self, batch_size: int = 1000) -> int:
        return ProjectionRunner(
            self.log, self.views, self.projections, batch_size=batch_size
        ).catch_up()

    def rows(self, table: Table) -> list[Row]:
        return self.views.rows(OWNER[table.name], table.name)

    def row(self, table: Table, *key: Any) -> Row:
        self.run()
        [row] = [r for r in self.rows(table) if table.key_of(r) == key]
        return row

    def snapshot(self) -> dict[str, list[Row]]:
        return {table.name: self.rows(table) for table in ALL_TABLES}

    def events(self) -> list[RecordedEvent]:
        return self.log.read_log(limit=1_000_000)


@pytest.fixture
def v() -> Views:
    return Views()


def conversation(v: Views, **create: Any) -> UUID:
    """A realistic support conversation: tool calls answered, an interruption that aborts a
    call, a resumption, context set and removed. Leaves the session active (version 13)."""
    store, clock = v.store, v.clock
    sid = store.create(
        tenant_id="acme",
        user_id="u-1",
        agent_id="support-bot",
        channel="voice",
        metadata={"locale": "de-CH"},
        **create,
    ).session_id
    clock.advance(1)
    store.add_message(sid, role="system", content="You are helpful.", message_id="m-sys")
    clock.advance(2)
    store.add_message(
        sid,
        role="user",
        content="Weather and time?",
        message_id="m-1",
        input_tokens=7,
        modality="audio",
        language="en-GB",
    )
    clock.advance(1)
    store.add_message(
        sid, role="assistant", content="", tool_calls=[WEATHER, TIME], message_id="m-2"
    )
    clock.advance(1)
    store.add_message(sid, role="tool", content="12°C", tool_call_id="call-w", message_id="m-3")
    store.record_turn(
        sid, request_id="r-1", duration_ms=850.5, stt_ms=120.25, llm_ms=600, tts_ms=None,
        tool_ms=90, input_tokens=40, output_tokens=12,
    )  # fmt: skip
    clock.advance(3)
    store.interrupt(sid, reason="barge_in", detail="user spoke")  # aborts call-t
    clock.advance(4)
    store.update_context(sid, set={"cart": ["sku-1"], "step": 2, "lang": "de"})
    clock.advance(5)
    store.resume(sid)
    store.update_context(sid, set={"step": 3}, remove=["lang"])
    clock.advance(1)
    store.add_message(sid, role="user", content="Thanks!", message_id="m-4")
    clock.advance(1)
    store.add_message(sid, role="assistant", content="You're welcome.", message_id="m-5")
    store.record_turn(
        sid, request_id="r-2", duration_ms=400, llm_ms=300.125, tts_ms=80, error=True,
        error_type="tts_timeout", output_tokens=5,
    )  # fmt: skip
    return sid


# ---------------------------------------------------------------------------------------------
# all_projections


def test_all_projections_are_fresh_instances_in_a_fixed_order() -> None:
    first, second = all_projections(), all_projections()

    assert [p.name for p in first] == ["session_state", "transcript", "metrics", "cleanup"]
    assert [type(p) for p in first] == [
        SessionStateProjection,
        TranscriptProjection,
        MetricsProjection,
        CleanupProjection,
    ]
    assert all(a is not b for a, b in zip(first, second, strict=True))
    tables = [t.name for p in first for t in p.tables]
    assert sorted(tables) == sorted(OWNER)
    every_topic = {kind.topic for kind in EVENT_TYPES}
    assert all(p.topics <= every_topic and p.topics for p in first)
    assert first[0].topics == every_topic
    assert first[3].topics == every_topic


# ---------------------------------------------------------------------------------------------
# session_state


def test_a_new_session_is_one_row_with_every_column(v: Views) -> None:
    result = v.store.create(
        tenant_id="acme",
        user_id="u-1",
        agent_id="support-bot",
        channel="phone",
        metadata={"locale": "fr-FR", "tags": ["vip"]},
        policy={"idle_timeout_seconds": 120, "retention_days": 7},
    )

    assert v.row(SESSION_STATE, result.session_id) == {
        "session_id": result.session_id,
        "tenant_id": "acme",
        "user_id": "u-1",
        "agent_id": "support-bot",
        "channel": "phone",
        "status": "active",
        "end_status": None,
        "end_reason": None,
        "created_at": T0,
        "last_activity_at": T0,
        "interrupted_at": None,
        "ended_at": None,
        "version": 1,
        "last_position": result.position,
        "message_count": 0,
        "turn_count": 0,
        "error_turn_count": 0,
        "interrupt_count": 0,
        "resume_count": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "open_tool_calls": [],
        "last_message_role": None,
        "last_message_preview": None,
        "context": {},
        "metadata": {"locale": "fr-FR", "tags": ["vip"]},
        "policy": {"idle_timeout_seconds": 120, "ttl_seconds": None, "retention_days": 7},
    }


def test_the_state_row_is_the_fold_of_the_events_after_every_single_event(v: Views) -> None:
    sid = conversation(v)
    events = v.events()
    runner = ProjectionRunner(v.log, v.views, v.projections, batch_size=1)

    for applied, recorded in enumerate(events, start=1):
        assert runner.step() == 1
        row = v.rows(SESSION_STATE)[0]
        assert (row["version"], row["last_position"]) == (applied, recorded.position)
        assert row_to_state(row) == replay(e.event for e in events[:applied])
    assert runner.step() == 0
    assert row_to_state(v.rows(SESSION_STATE)[0]) == v.store.get(sid)


def test_tool_calls_interruption_resumption_and_context_end_up_in_the_row(v: Views) -> None:
    sid = conversation(v)
    store, clock = v.store, v.clock
    store.add_message(sid, role="assistant", content="Checking.", tool_calls=[TIME])
    v.run()

    row = v.row(SESSION_STATE, sid)
    assert row["open_tool_calls"] == [TIME]
    assert row["last_message_role"] == "assistant"

    clock.advance(10)
    last = store.end(sid, status="abandoned", reason="hung up")

    row = v.row(SESSION_STATE, sid)
    assert {k: row[k] for k in row if k not in {"session_id", "metadata", "policy"}} == {
        "tenant_id": "acme",
        "user_id": "u-1",
        "agent_id": "support-bot",
        "channel": "voice",
        "status": "ended",
        "end_status": "abandoned",
        "end_reason": "hung up",
        "created_at": T0,
        "last_activity_at": clock.now,
        "interrupted_at": None,
        "ended_at": clock.now,
        "version": 15,
        "last_position": last.position,
        "message_count": 7,
        "turn_count": 2,
        "error_turn_count": 1,
        "interrupt_count": 1,
        "resume_count": 1,
        "input_tokens": 7 + 40,
        "output_tokens": 12 + 5,
        "open_tool_calls": [],  # aborted by the end
        "last_message_role": "assistant",
        "last_message_preview": "Checking.",
        "context": {"cart": ["sku-1"], "step": 3},  # lang removed, step overwritten
    }
    assert row_to_state(row) == store.get(sid)


def test_an_interrupted_session_shows_when_and_keeps_no_open_calls(v: Views) -> None:
    sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    v.store.add_message(sid, role="assistant", content="", tool_calls=[WEATHER])
    v.clock.advance(30)
    v.store.interrupt(sid, reason="disconnect")

    row = v.row(SESSION_STATE, sid)

    assert (row["status"], row["interrupted_at"], row["interrupt_count"]) == (
        "interrupted",
        T0 + timedelta(seconds=30),
        1,
    )
    assert row["open_tool_calls"] == []
    v.store.resume(sid)
    row = v.row(SESSION_STATE, sid)
    assert (row["status"], row["interrupted_at"], row["resume_count"]) == ("active", None, 1)


@pytest.mark.parametrize("status", list(EndStatus))
def test_every_end_status_is_recorded(v: Views, status: EndStatus) -> None:
    sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    v.store.interrupt(sid, reason="timeout")
    v.clock.advance(60)
    v.store.end(sid, status=status.value, reason=f"because {status.value}")

    row = v.row(SESSION_STATE, sid)

    assert (row["status"], row["end_status"], row["end_reason"], row["ended_at"]) == (
        "ended",
        status.value,
        f"because {status.value}",
        T0 + timedelta(seconds=60),
    )
    assert row["interrupted_at"] == T0  # an ended session keeps when it was interrupted
    assert row_to_state(row) == v.store.get(sid)


def test_the_preview_is_the_start_of_the_last_message(v: Views) -> None:
    sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    v.store.add_message(sid, role="user", content="é" * (PREVIEW_CHARS + 50))

    assert v.row(SESSION_STATE, sid)["last_message_preview"] == "é" * PREVIEW_CHARS


def test_a_state_row_is_json_data_and_reads_back_as_the_same_state(v: Views) -> None:
    sid = conversation(v)
    v.store.add_message(sid, role="assistant", content="", tool_calls=[WEATHER, TIME])
    state = v.store.get(sid)

    row = state_to_row(state, position=99)

    for column in SESSION_STATE.columns:
        if column.type == "json":
            assert json.loads(json.dumps(row[column.name])) == row[column.name]
    assert row["open_tool_calls"] == [WEATHER, TIME]
    assert row["last_position"] == 99
    assert set(row) == set(SESSION_STATE.column_names)
    assert row_to_state(row) == state


def test_the_state_view_refuses_an_event_that_does_not_follow_its_row(v: Views) -> None:
    sid = conversation(v)
    events = [e for e in v.events() if e.event.session_id == sid]
    projection = SessionStateProjection()
    batch = Batch(projection.tables, lambda table, keys: [])
    projection.apply(batch, events[0])

    with pytest.raises(ValueError, match="does not follow"):
        projection.apply(batch, events[2])  # version 3 on a row at version 1


# ---------------------------------------------------------------------------------------------
# transcript


def _entries(v: Views, sid: UUID) -> list[Row]:
    v.run()
    return [r for r in v.rows(TRANSCRIPT) if r["session_id"] == sid]


def test_the_transcript_holds_messages_in_order_and_aborted_calls_as_tool_results(
    v: Views,
) -> None:
    sid = conversation(v)

    entries = _entries(v, sid)

    assert [
        (e["version"], e["seq"], e["role"], e["content"], e["tool_call_id"], e["aborted"])
        for e in entries
    ] == [
        (2, 0, "system", "You are helpful.", None, False),
        (3, 0, "user", "Weather and time?", None, False),
        (4, 0, "assistant", "", None, False),
        (5, 0, "tool", "12°C", "call-w", False),
        (7, 1, "tool", "[tool call aborted: session interrupted (barge_in)]", "call-t", True),
        (11, 0, "user", "Thanks!", None, False),
        (12, 0, "assistant", "You're welcome.", None, False),
    ]
    by_version = {e.event.version: e for e in v.events() if e.event.session_id == sid}
    assistant = entries[2]
    assert assistant == {
        "session_id": sid,
        "version": 4,
        "seq": 0,
        "position": by_version[4].position,
        "tenant_id": "acme",
        "message_id": "m-2",
        "role": "assistant",
        "content": "",
        "tool_calls": [WEATHER, TIME],
        "tool_call_id": None,
        "aborted": False,
        "occurred_at": T0 + timedelta(seconds=4),
        "input_tokens": None,
        "output_tokens": None,
        "modality": "text",
        "language": None,
    }
    assert (entries[1]["input_tokens"], entries[1]["modality"], entries[1]["language"]) == (
        7,
        "audio",
        "en-GB",
    )
    aborted = entries[4]
    assert aborted == {
        "session_id": sid,
        "version": 7,
        "seq": 1,
        "position": by_version[7].position,
        "tenant_id": "acme",
        "message_id": None,
        "role": "tool",
        "content": "[tool call aborted: session interrupted (barge_in)]",
        "tool_calls": [],
        "tool_call_id": "call-t",
        "aborted": True,
        "occurred_at": by_version[7].event.occurred_at,
        "input_tokens": None,
        "output_tokens": None,
        "modality": "text",
        "language": None,
    }


def test_ending_with_open_calls_adds_one_aborted_result_per_call_in_order(v: Views) -> None:
    sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    v.store.add_message(sid, role="assistant", content="", tool_calls=[WEATHER, TIME])
    v.store.end(sid, status="failed")

    entries = _entries(v, sid)

    assert [(e["version"], e["seq"], e["tool_call_id"], e["content"]) for e in entries] == [
        (2, 0, None, ""),
        (3, 1, "call-w", "[tool call aborted: session ended (failed)]"),
        (3, 2, "call-t", "[tool call aborted: session ended (failed)]"),
    ]


def test_an_interruption_or_end_without_open_calls_adds_no_entry(v: Views) -> None:
    sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    v.store.add_message(sid, role="user", content="hi")
    v.store.interrupt(sid, reason="disconnect")
    v.store.resume(sid)
    v.store.end(sid, status="completed")

    assert [e["content"] for e in _entries(v, sid)] == ["hi"]


def test_every_window_of_the_transcript_answers_every_tool_call_it_shows(v: Views) -> None:
    sid = conversation(v)
    v.store.add_message(sid, role="assistant", content="", tool_calls=[WEATHER, TIME])
    v.store.add_message(sid, role="tool", content="sunny", tool_call_id="call-t")
    v.store.end(sid, status="expired")
    entries = _entries(v, sid)

    for n in range(1, len(entries) + 1):
        window = entries[-n:]  # the last N entries, as an agent would fetch them
        asked = [c["id"] for e in window for c in e["tool_calls"]]
        answered = [e["tool_call_id"] for e in window if e["role"] == "tool"]
        # Every call asked inside the window is answered inside it, after it was asked.
        assert set(asked) <= set(answered)
        for call in asked:
            asked_at = next(i for i, e in enumerate(window) if call in _ids(e))
            answered_at = [i for i, e in enumerate(window) if e["tool_call_id"] == call]
            assert answered_at
            assert answered_at[-1] > asked_at
    assert sum(e["aborted"] for e in entries) == 2  # call-t in the conversation, call-w here


def _ids(entry: Row) -> list[str]:
    return [c["id"] for c in entry["tool_calls"]]


# ---------------------------------------------------------------------------------------------
# metrics


def test_session_metrics_sum_turns_and_count_only_the_stages_reported(v: Views) -> None:
    sid = conversation(v)
    first_turn = T0 + timedelta(seconds=5)

    assert v.row(SESSION_METRICS, sid) == {
        "session_id": sid,
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "requests": 2,
        "errors": 1,
        "total_ms": 1250.5,
        "stt_ms": 120.25,
        "stt_count": 1,
        "llm_ms": 900.125,
        "llm_count": 2,
        "tts_ms": 80.0,
        "tts_count": 1,
        "tool_ms": 90.0,
        "tool_count": 1,
        "input_tokens": 40,  # tokens of turns only (message tokens are in session_state)
        "output_tokens": 17,
        "first_turn_at": first_turn,
        "last_turn_at": v.clock.now,
    }


def test_a_session_without_turns_has_zero_metrics(v: Views) -> None:
    sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    v.store.add_message(sid, role="user", content="hi")

    row = v.row(SESSION_METRICS, sid)

    assert (row["requests"], row["total_ms"], row["llm_count"]) == (0, 0.0, 0)
    assert (row["first_turn_at"], row["last_turn_at"]) == (None, None)


def test_daily_metrics_count_each_event_on_its_own_utc_day(v: Views) -> None:
    v.clock.now = datetime(2025, 3, 1, 23, 59, 30, tzinfo=UTC)
    store = v.store
    sid = store.create(tenant_id="acme", user_id="u", agent_id="bot").session_id
    store.add_message(sid, role="user", content="hi")
    store.record_turn(sid, request_id="r1", duration_ms=5, llm_ms=4)
    v.clock.advance(40)  # 00:00:10 on March 2nd
    store.add_message(sid, role="assistant", content="hello")
    store.record_turn(sid, request_id="r2", duration_ms=2000, error=True, tts_ms=1)
    store.interrupt(sid, reason="disconnect")
    store.resume(sid)
    store.end(sid, status="completed")
    v.run()

    day1, day2 = v.rows(AGENT_DAILY_METRICS)

    assert {k: day1[k] for k in day1 if k != "latency_histogram"} == {
        "tenant_id": "acme",
        "agent_id": "bot",
        "day": date(2025, 3, 1),
        "sessions_started": 1,
        "sessions_completed": 0,
        "sessions_failed": 0,
        "sessions_expired": 0,
        "sessions_abandoned": 0,
        "messages": 1,
        "turns": 1,
        "error_turns": 0,
        "interrupts": 0,
        "resumes": 0,
        "total_ms": 5.0,
        "stt_ms": 0.0,
        "stt_count": 0,
        "llm_ms": 4.0,
        "llm_count": 1,
        "tts_ms": 0.0,
        "tts_count": 0,
        "tool_ms": 0.0,
        "tool_count": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    assert {k: day2[k] for k in day2 if k != "latency_histogram"} == {
        **{k: day1[k] for k in day1 if k != "latency_histogram"},
        "day": date(2025, 3, 2),
        "sessions_started": 0,
        "sessions_completed": 1,
        "messages": 1,
        "turns": 1,
        "error_turns": 1,
        "interrupts": 1,
        "resumes": 1,
        "total_ms": 2000.0,
        "llm_ms": 0.0,
        "llm_count": 0,
        "tts_ms": 1.0,
        "tts_count": 1,
    }
    assert day1["latency_histogram"][bucket_of(5)] == 1
    assert sum(day1["latency_histogram"]) == 1
    assert day2["latency_histogram"][bucket_of(2000)] == 1
    assert sum(day2["latency_histogram"]) == 1
    assert rates(day2) == {"error_rate": 1.0, "resume_rate": 1.0}
    assert rates(day1) == {"error_rate": 0.0, "resume_rate": None}


def test_every_end_status_has_its_own_daily_count(v: Views) -> None:
    for status in EndStatus:
        sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        v.store.end(sid, status=status.value)
    sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    v.store.end(sid, status="failed")

    row = v.row(AGENT_DAILY_METRICS, "t", "a", T0.date())

    assert row["sessions_started"] == 5
    assert [row[f"sessions_{s.value}"] for s in EndStatus] == [1, 2, 1, 1]


def test_each_tenant_and_agent_has_its_own_daily_row(v: Views) -> None:
    for tenant, agent, turns in [("t1", "a", 1), ("t1", "b", 2), ("t2", "a", 3)]:
        sid = v.store.create(tenant_id=tenant, user_id="u", agent_id=agent).session_id
        for i in range(turns):
            v.store.record_turn(sid, request_id=f"r{i}", duration_ms=10 * (i + 1))
    v.run()

    rows = v.rows(AGENT_DAILY_METRICS)

    assert [(r["tenant_id"], r["agent_id"], r["turns"], r["total_ms"]) for r in rows] == [
        ("t1", "a", 1, 10.0),
        ("t1", "b", 2, 30.0),
        ("t2", "a", 3, 60.0),
    ]
    merged = [0] * len(BUCKETS_MS)
    for r in rows:
        merged = merge_histograms(merged, r["latency_histogram"])
    assert sum(merged) == 6
    assert latency_percentiles(merged) == {
        "p50": BUCKETS_MS[bucket_of(10)],  # 10, 10, 10 | 20, 20, 30
        "p95": BUCKETS_MS[bucket_of(30)],
        "p99": BUCKETS_MS[bucket_of(30)],
    }


def test_time_sums_do_not_depend_on_the_order_of_the_turns() -> None:
    durations = [0.1, 0.2, 0.3, 1e-4, 123.4567, 7.25]

    def daily_total(order: list[float]) -> float:
        v = Views()
        for duration in order:
            sid = v.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
            v.store.record_turn(sid, request_id="r", duration_ms=duration)
        return float(v.row(AGENT_DAILY_METRICS, "t", "a", T0.date())["total_ms"])

    totals = {daily_total(durations), daily_total(durations[::-1])}
    totals.add(daily_total(sorted(durations)))

    # 0.1 + 0.2 + 0.3 + 0.0 + 123.457 + 7.25 (each kept to the microsecond), exactly.
    assert totals == {131.307}


def test_histogram_buckets_grow_geometrically_from_one_millisecond_to_ten_minutes() -> None:
    assert BUCKETS_MS[0] == 1.0
    assert BUCKETS_MS[-2] < 600_000 <= BUCKETS_MS[-1]
    ratios = [b / a for a, b in itertools.pairwise(BUCKETS_MS)]
    assert all(1.149 < r < 1.151 for r in ratios)


@pytest.mark.parametrize(
    ("duration", "bucket"),
    [
        (0.0, 0),
        (0.5, 0),
        (1.0, 0),  # a bound belongs to its own bucket
        (1.0001, 1),
        (BUCKETS_MS[1], 1),
        (BUCKETS_MS[40], 40),
        (BUCKETS_MS[40] + 0.001, 41),
        (BUCKETS_MS[-1], len(BUCKETS_MS) - 1),
        (10**9, len(BUCKETS_MS) - 1),  # the last bucket catches everything above
    ],
)
def test_a_duration_goes_to_the_first_bucket_whose_bound_is_at_least_it(
    duration: float, bucket: int
) -> None:
    assert bucket_of(duration) == bucket


def _histogram(counts: dict[int, int]) -> list[int]:
    histogram = [0] * len(BUCKETS_MS)
    for index, count in counts.items():
        histogram[index] = count
    return histogram


def test_percentile_is_the_bound_of_the_bucket_where_the_count_is_reached() -> None:
    histogram = _histogram({10: 90, 20: 9, 30: 1})

    assert percentile(histogram, 0) == BUCKETS_MS[10]
    assert percentile(histogram, 50) == BUCKETS_MS[10]
    assert percentile(histogram, 90) == BUCKETS_MS[10]
    assert percentile(histogram, 90.5) == BUCKETS_MS[20]
    assert percentile(histogram, 99) == BUCKETS_MS[20]
    assert percentile(histogram, 99.5) == BUCKETS_MS[30]
    assert percentile(histogram, 100) == BUCKETS_MS[30]
    assert latency_percentiles(histogram) == {
        "p50": BUCKETS_MS[10],
        "p95": BUCKETS_MS[20],
        "p99": BUCKETS_MS[20],
    }


def test_percentile_of_a_single_value_is_its_bucket_at_every_p() -> None:
    histogram = _histogram({bucket_of(250): 1})

    assert {percentile(histogram, p) for p in (0, 1, 50, 99, 100)} == {BUCKETS_MS[bucket_of(250)]}
    assert 250 <= BUCKETS_MS[bucket_of(250)] < 250 * 1.151


def test_percentile_of_nothing_is_none_and_p_must_be_a_percentage() -> None:
    assert percentile([], 50) is None
    assert percentile([0] * len(BUCKETS_MS), 99) is None
    assert latency_percentiles([]) == {"p50": None, "p95": None, "p99": None}
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1], 101)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1], -1)


def test_merging_histograms_adds_bucket_by_bucket_whatever_their_lengths() -> None:
    a, b = [1, 0, 2], [0, 3, 1, 4]

    assert merge_histograms(a, b) == [1, 3, 3, 4]
    assert merge_histograms(b, a) == [1, 3, 3, 4]
    assert merge_histograms([], []) == []
    assert (
        percentile(merge_histograms(_histogram({5: 1}), _histogram({7: 3})), 50) == (BUCKETS_MS[7])
    )


def test_rates_are_none_without_a_denominator() -> None:
    assert rates({"turns": 0, "error_turns": 0, "interrupts": 0, "resumes": 0}) == {
        "error_rate": None,
        "resume_rate": None,
    }
    assert rates({"turns": 8, "error_turns": 2, "interrupts": 4, "resumes": 3}) == {
        "error_rate": 0.25,
        "resume_rate": 0.75,
    }


@pytest.mark.parametrize("projection", [MetricsProjection(), CleanupProjection()])
def test_an_event_of_a_session_never_created_is_an_error(projection: Projection) -> None:
    v = Views()
    sid = conversation(v)
    [message] = [e for e in v.events() if e.event.session_id == sid and e.event.version == 2]
    batch = Batch(projection.tables, lambda table, keys: [])

    with pytest.raises(ValueError, match="before its creation"):
        projection.apply(batch, message)


# ---------------------------------------------------------------------------------------------
# cleanup

POLICIES = [
    pytest.param({}, id="default-idle-only"),
    pytest.param({"idle_timeout_seconds": 300}, id="idle"),
    pytest.param({"idle_timeout_seconds": None, "ttl_seconds": 3600}, id="ttl"),
    pytest.param({"idle_timeout_seconds": None, "retention_days": 30}, id="retention"),
    pytest.param({"idle_timeout_seconds": 300, "ttl_seconds": 3600}, id="idle+ttl"),
    pytest.param({"idle_timeout_seconds": 300, "retention_days": 7}, id="idle+retention"),
    pytest.param(
        {"idle_timeout_seconds": None, "ttl_seconds": 60, "retention_days": 1}, id="ttl+r"
    ),
    pytest.param({"idle_timeout_seconds": 60, "ttl_seconds": 90, "retention_days": 2}, id="all"),
    pytest.param({"idle_timeout_seconds": None}, id="none"),
]


def _plus(moment: datetime, seconds: float | None) -> datetime | None:
    return None if seconds is None else moment + timedelta(seconds=seconds)


@pytest.mark.parametrize("policy", POLICIES)
def test_cleanup_deadlines_follow_the_policy_through_the_whole_life(
    v: Views, policy: dict[str, Any]
) -> None:
    idle = policy.get("idle_timeout_seconds", 1800)
    ttl = policy.get("ttl_seconds")
    days = policy.get("retention_days")
    sid = v.store.create(tenant_id="acme", user_id="u", agent_id="a", policy=policy).session_id

    def cleanup() -> Row:
        return v.row(SESSION_CLEANUP, sid)

    assert cleanup() == {
        "session_id": sid,
        "tenant_id": "acme",
        "status": "active",
        "version": 1,
        "last_activity_at": T0,
        "idle_timeout_seconds": idle,
        "retention_days": days,
        "idle_deadline": _plus(T0, idle),
        "expires_at": _plus(T0, ttl),
        "retention_until": None,
    }

    at = v.clock.advance(100)
    v.store.add_message(sid, role="user", content="hi")
    row = cleanup()
    assert (row["version"], row["last_activity_at"]) == (2, at)
    assert (row["idle_deadline"], row["expires_at"]) == (_plus(at, idle), _plus(T0, ttl))

    at = v.clock.advance(50)
    v.store.interrupt(sid, reason="disconnect")
    row = cleanup()
    assert (row["status"], row["idle_deadline"], row["expires_at"]) == (
        "interrupted",
        _plus(at, idle),
        _plus(T0, ttl),
    )

    at = v.clock.advance(20)
    v.store.update_context(sid, set={"k": 1})  # activity while interrupted moves the deadline
    assert cleanup()["idle_deadline"] == _plus(at, idle)

    at = v.clock.advance(5)
    v.store.resume(sid)
    row = cleanup()
    assert (row["status"], row["idle_deadline"]) == ("active", _plus(at, idle))

    end = v.clock.advance(7)
    v.store.end(sid, status="completed")
    assert cleanup() == {
        "session_id": sid,
        "tenant_id": "acme",
        "status": "ended",
        "version": 6,
        "last_activity_at": end,
        "idle_timeout_seconds": idle,
        "retention_days": days,
        "idle_deadline": None,
        "expires_at": None,
        "retention_until": None if days is None else end + timedelta(days=days),
    }


def test_idle_sessions_are_found_by_their_deadline(v: Views) -> None:
    quick = v.store.create(
        tenant_id="t", user_id="u", agent_id="a", policy={"idle_timeout_seconds": 60}
    ).session_id
    slow = v.store.create(
        tenant_id="t", user_id="u", agent_id="a", policy={"idle_timeout_seconds": 600}
    ).session_id
    v.clock.advance(50)
    v.store.add_message(quick, role="user", content="still here")  # deadline T0 + 110 s
    v.run()
    rows = v.rows(SESSION_CLEANUP)

    def idle_at(seconds: int) -> set[UUID]:
        now = T0 + timedelta(seconds=seconds)
        return {r["session_id"] for r in rows if r["idle_deadline"] < now}

    assert idle_at(100) == set()
    assert idle_at(111) == {quick}
    assert idle_at(601) == {quick, slow}


# ---------------------------------------------------------------------------------------------
# batch sizes and rebuilds


def _busy_log(v: Views) -> None:
    for n in range(3):
        conversation(v, policy={"ttl_seconds": 3600 * (n + 1), "retention_days": n + 1})
        v.clock.advance(6 * 3600)  # crosses midnight on the way
    sid = conversation(v)
    v.store.add_message(sid, role="assistant", content="", tool_calls=[WEATHER])
    v.store.end(sid, status="failed")


def test_batch_sizes_of_one_and_a_thousand_give_identical_views() -> None:
    small = Views()
    _busy_log(small)
    large = Views(log=small.log)

    assert small.run(batch_size=1) == len(small.events())
    assert large.run(batch_size=1000) == len(small.events())

    assert small.snapshot() == large.snapshot()
    assert len(small.rows(AGENT_DAILY_METRICS)) == 2  # two UTC days
    assert all(small.snapshot().values())


def test_incremental_views_equal_views_rebuilt_from_zero(v: Views) -> None:
    _busy_log(v)
    runner = ProjectionRunner(v.log, v.views, v.projections, batch_size=3)
    for _ in range(5):
        runner.step()
    v.run(batch_size=2)
    before = v.snapshot()

    for projection in v.projections:
        rebuild(v.log, v.views, projection, batch_size=5)

    assert {p.name: v.views.active_generation(p.name) for p in v.projections} == {
        "session_state": 2,
        "transcript": 2,
        "metrics": 2,
        "cleanup": 2,
    }
    assert v.snapshot() == before


def test_counts_in_every_view_are_counts_of_events(v: Views) -> None:
    _busy_log(v)
    v.run()
    events = [e.event for e in v.events()]
    messages = sum(isinstance(e, MessageAdded) for e in events)
    turns = [e for e in events if isinstance(e, TurnRecorded)]

    state = v.rows(SESSION_STATE)
    daily = v.rows(AGENT_DAILY_METRICS)
    assert sum(r["message_count"] for r in state) == messages
    assert sum(not r["aborted"] for r in v.rows(TRANSCRIPT)) == messages
    assert sum(r["messages"] for r in daily) == messages
    assert sum(r["requests"] for r in v.rows(SESSION_METRICS)) == len(turns)
    assert sum(r["turns"] for r in daily) == len(turns)
    assert sum(sum(r["latency_histogram"]) for r in daily) == len(turns)
    assert sum(r["error_turns"] for r in daily) == sum(t.error for t in turns)
    assert len(v.rows(SESSION_CLEANUP)) == len(state) == 4
    assert [r["status"] for r in state].count(SessionStatus.ENDED.value) == 1


def test_views_ignore_nothing_and_double_nothing_when_a_runner_stops_halfway(v: Views) -> None:
    _busy_log(v)
    total = len(v.events())
    runner = ProjectionRunner(v.log, v.views, v.projections, batch_size=10)
    runner.step()
    runner.step()
    partial = v.rows(SESSION_STATE)
    assert sum(r["version"] for r in partial) == 20

    v.run(batch_size=7)  # a new runner resumes from the tracking positions

    assert sum(r["version"] for r in v.rows(SESSION_STATE)) == total
    assert all(v.views.tracking(p.name, 1).position == total for p in v.projections)


def test_sessions_get_distinct_rows(v: Views) -> None:
    first = conversation(v)
    second = v.store.create(tenant_id="other", user_id="u", agent_id="a").session_id

    v.run()

    assert {r["session_id"] for r in v.rows(SESSION_STATE)} == {first, second}
    assert {r["session_id"] for r in v.rows(SESSION_CLEANUP)} == {first, second}
    assert {r["session_id"] for r in v.rows(SESSION_METRICS)} == {first, second}
    assert {(r["tenant_id"], r["sessions_started"]) for r in v.rows(AGENT_DAILY_METRICS)} == {
        ("acme", 1),
        ("other", 1),
    }
