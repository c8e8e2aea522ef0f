"""The query contract on the in-memory backend, and the query layer's pure rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.memory.queries import MemoryQueries
from sessionstore.adapters.storage.memory.views import MemoryViewStore
from sessionstore.domain.errors import InvalidInput
from sessionstore.domain.session import SessionStatus
from sessionstore.events.catalogue import EndStatus
from sessionstore.projections import all_projections
from sessionstore.projections.expiry import IDLE_REASON, TTL_REASON, expiry_reason, idempotency_key
from sessionstore.projections.metrics import BUCKETS_MS, new_daily_row
from sessionstore.projections.queries import (
    CleanupCandidate,
)
from sessionstore.projections.query_rules import (
    agent_metrics_from_rows,
    decode_cursor,
    encode_cursor,
    parse_status,
)
from tests.contracts.queries import Clock, QueriesContract


class TestMemoryQueries(QueriesContract):
    @pytest.fixture
    def log(self) -> MemoryEventLog:
        return MemoryEventLog()

    @pytest.fixture
    def views(self) -> MemoryViewStore:
        views = MemoryViewStore()
        for projection in all_projections():
            views.ensure(projection)
        return views

    @pytest.fixture
    def queries(self, views: MemoryViewStore, log: MemoryEventLog) -> Iterator[MemoryQueries]:
        queries = MemoryQueries(views, log)
        yield queries
        queries.close()

    @pytest.fixture
    def new_log(self, log: MemoryEventLog) -> Callable[[], MemoryEventLog]:
        return lambda: log  # another "process" shares the same memory


def test_memory_queries_on_views_never_projected_find_nothing() -> None:
    queries = MemoryQueries(MemoryViewStore(), MemoryEventLog())
    assert queries.list_sessions().items == ()
    assert queries.agent_metrics("a").turns == 0


# -- cursors ---------------------------------------------------------------------------------------


def test_a_cursor_round_trips_and_is_url_safe() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    sid = uuid4()
    cursor = encode_cursor(moment, sid)
    assert decode_cursor(cursor) == (moment, sid)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_cursor_keeps_the_instant_whatever_the_timezone_given() -> None:
    cet = datetime(2026, 1, 1, 13, 0, tzinfo=UTC).astimezone()
    moment, _ = decode_cursor(encode_cursor(cet, UUID(int=1)))
    assert moment == cet
    assert moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "bad",
    ["", "x", "====", encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), UUID(int=1))[:-3] + "A"],
)
def test_a_damaged_cursor_is_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        decode_cursor(bad)
    assert raised.value.errors == [
        {"field": "cursor", "message": "not a cursor returned by a previous page"}
    ]


# -- status filter ---------------------------------------------------------------------------------


def test_a_status_filter_is_a_status_or_an_end_status() -> None:
    assert parse_status(None) == (None, None)
    assert parse_status("interrupted") == (SessionStatus.INTERRUPTED, None)
    assert parse_status("ended") == (SessionStatus.ENDED, None)
    assert parse_status("abandoned") == (SessionStatus.ENDED, EndStatus.ABANDONED)
    with pytest.raises(InvalidInput, match="must be one of active, interrupted, ended, completed"):
        parse_status("Active")


# -- agent metrics aggregation ---------------------------------------------------------------------


def test_agent_metrics_add_rows_and_merge_histograms_bucket_by_bucket() -> None:
    one = new_daily_row("t", "a", date(2026, 1, 1)) | {
        "turns": 2,
        "error_turns": 1,
        "interrupts": 0,
        "resumes": 0,
        "total_ms": 0.1,
        "llm_ms": 10.0,
        "llm_count": 2,
    }
    two = new_daily_row("t", "a", date(2026, 1, 2)) | {
        "turns": 2,
        "interrupts": 4,
        "resumes": 1,
        "total_ms": 0.2,
        "llm_ms": 20.0,
        "llm_count": 1,
    }
    one["latency_histogram"] = [1, 1] + [0] * (len(BUCKETS_MS) - 2)
    two["latency_histogram"] = [0] * (len(BUCKETS_MS) - 1) + [2]

    m = agent_metrics_from_rows("a", [one, two], tenant_id="t", from_day=None, to_day=None)

    assert (m.days, m.turns, m.error_turns, m.interrupts, m.resumes) == (2, 4, 1, 4, 1)
    assert (m.error_rate, m.resume_rate) == (0.25, 0.25)
    assert m.total_ms == pytest.approx(0.3)
    assert m.stages.llm_ms == 10.0
    assert m.stages.stt_ms is None
    assert m.latency_histogram[:2] == (1, 1)
    assert (m.p50_ms, m.p95_ms, m.p99_ms) == (BUCKETS_MS[1], BUCKETS_MS[-1], BUCKETS_MS[-1])


# -- expiry ----------------------------------------------------------------------------------------


def candidate(idle: datetime | None, ttl: datetime | None) -> CleanupCandidate:
    return CleanupCandidate(
        session_id=UUID(int=7),
        tenant_id="t",
        status=SessionStatus.ACTIVE,
        version=4,
        last_activity_at=datetime(2026, 1, 1, tzinfo=UTC),
        idle_deadline=idle,
        expires_at=ttl,
        retention_until=None,
    )


def test_the_expiry_reason_is_the_deadline_that_passed_first_whatever_the_clock() -> None:
    early, late = datetime(2026, 1, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 2, tzinfo=UTC)
    assert expiry_reason(candidate(early, late)) == IDLE_REASON
    assert expiry_reason(candidate(late, early)) == TTL_REASON
    assert expiry_reason(candidate(early, early)) == TTL_REASON
    assert expiry_reason(candidate(early, None)) == IDLE_REASON
    assert expiry_reason(candidate(None, late)) == TTL_REASON
    assert idempotency_key(candidate(early, None)) == f"cleanup:expire:{UUID(int=7)}:4"


def test_clock_steps_a_millisecond_per_reading() -> None:
    clock = Clock()
    first = clock()
    assert clock() - first == timedelta(milliseconds=1)
