"""Metrics views: per session (requests, errors, processing and stage times, tokens) and per
agent per UTC day (sessions started and ended by status, messages, turns, errors,
interruptions, resumptions, stage times, tokens and a latency histogram).

Every value is a sum of per-event contributions that does not depend on the order events are
applied in, so a rebuild, a catch-up in batches of any size, or a consumer that sees sessions
interleaved differently (Kafka partitions) all give identical rows:

- counts are integers;
- times are kept to the microsecond: each value is rounded to 3 decimals of a millisecond and
  every running sum is rounded again, which makes the float sum exact in decimal terms and
  therefore independent of the order of the additions;
- latency percentiles come from a histogram of turn durations over fixed buckets
  (``BUCKETS_MS``), never from a running estimate. Histograms of several days or agents add up
  with ``merge_histograms``; ``percentile`` reads one.

Tokens here are those reported by TurnRecorded (what the model consumed and produced for a
request). The session state view also adds the token counts of individual messages.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sessionstore.domain.contract import saturated
from sessionstore.domain.ports import RecordedEvent
from sessionstore.events.catalogue import (
    EndStatus,
    MessageAdded,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionResumed,
    TurnRecorded,
)
from sessionstore.projections.base import Batch, Key, Row, Table
from sessionstore.projections.tables import AGENT_DAILY_METRICS, SESSION_METRICS

BUCKET_RATIO = 1.15
BUCKETS_MS: tuple[float, ...] = tuple(round(BUCKET_RATIO**i, 3) for i in range(97))
"""Upper bounds (inclusive) of the latency histogram's buckets, in milliseconds: 1 ms, then
each about 15 % above the previous, up to ~11 minutes (about 7 % relative error on any
percentile). A duration goes to the first bucket whose bound is >= it; the last bucket also
holds everything above its bound. Changing these bounds changes the meaning of stored
histograms, so it needs a rebuild of the metrics projection."""

STAGES = ("stt", "llm", "tts", "tool")


def bucket_of(duration_ms: float) -> int:
    """Index of the histogram bucket a duration falls into."""
    return min(bisect.bisect_left(BUCKETS_MS, duration_ms), len(BUCKETS_MS) - 1)


def empty_histogram() -> list[int]:
    return [0] * len(BUCKETS_MS)


def merge_histograms(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Bucket-wise sum of two histograms (of several days, agents, ...)."""
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return [count + (shorter[i] if i < len(shorter) else 0) for i, count in enumerate(longer)]


def percentile(histogram: Sequence[int], p: float) -> float | None:
    """The ``p``-th percentile (0 <= p <= 100) of a histogram over ``BUCKETS_MS``: the upper
    bound of the bucket where the cumulative count first reaches p % of all values (so the true
    value is at most this, and above the previous bucket's bound). None for an empty histogram.
    """
    if not 0 <= p <= 100:
        msg = f"percentile must be between 0 and 100, got {p}"
        raise ValueError(msg)
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(p * total / 100))
    cumulative = 0
    for index, count in enumerate(histogram):
        cumulative += count
        if cumulative >= rank:
            return BUCKETS_MS[min(index, len(BUCKETS_MS) - 1)]
    return BUCKETS_MS[-1]  # unreachable: the cumulative count ends at total >= rank


def latency_percentiles(histogram: Sequence[int]) -> dict[str, float | None]:
    """p50, p95 and p99 of a latency histogram."""
    return {f"p{p}": percentile(histogram, p) for p in (50, 95, 99)}


def rates(row: Mapping[str, Any]) -> dict[str, float | None]:
    """Ratios of a daily row (or of summed rows): error_rate = error_turns / turns and
    resume_rate = resumes / interrupts; None where the denominator is 0."""
    return {
        "error_rate": _ratio(row["error_turns"], row["turns"]),
        "resume_rate": _ratio(row["resumes"], row["interrupts"]),
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


def add_ms(total: float, value: float) -> float:
    """``total + value`` at microsecond precision; order-independent (see module docstring)."""
    return round(total + round(value, 3), 3)


def day_of(moment: datetime) -> date:
    """The UTC day an event counts for (``occurred_at`` is always UTC)."""
    return moment.date()


def new_session_row(event: SessionCreated) -> Row:
    row: Row = {
        "session_id": event.session_id,
        "tenant_id": event.tenant_id,
        "agent_id": event.agent_id,
        "requests": 0,
        "errors": 0,
        "total_ms": 0.0,
    }
    for stage in STAGES:
        row[f"{stage}_ms"] = 0.0
        row[f"{stage}_count"] = 0
    row |= {"input_tokens": 0, "output_tokens": 0, "first_turn_at": None, "last_turn_at": None}
    return row


def new_daily_row(tenant_id: str, agent_id: str, day: date) -> Row:
    row: Row = {"tenant_id": tenant_id, "agent_id": agent_id, "day": day, "sessions_started": 0}
    for status in EndStatus:
        row[f"sessions_{status.value}"] = 0
    row |= {
        "messages": 0,
        "turns": 0,
        "error_turns": 0,
        "interrupts": 0,
        "resumes": 0,
        "total_ms": 0.0,
    }
    for stage in STAGES:
        row[f"{stage}_ms"] = 0.0
        row[f"{stage}_count"] = 0
    row |= {"input_tokens": 0, "output_tokens": 0, "latency_histogram": empty_histogram()}
    return row


def add_turn(row: Row, turn: TurnRecorded) -> None:
    """Add one turn's time, stage times and tokens to a session or daily row (in place).
    A stage counts only the turns that reported it."""
    row["total_ms"] = add_ms(row["total_ms"], turn.duration_ms)
    for stage in STAGES:
        value = getattr(turn, f"{stage}_ms")
        if value is not None:
            row[f"{stage}_ms"] = add_ms(row[f"{stage}_ms"], value)
            row[f"{stage}_count"] += 1
    row["input_tokens"] = saturated(row["input_tokens"] + (turn.input_tokens or 0))
    row["output_tokens"] = saturated(row["output_tokens"] + (turn.output_tokens or 0))


class MetricsProjection:
    """Per-session and per-agent-per-day metrics.

    The daily row of an event is keyed by the session's tenant and agent, which only
    SessionCreated carries; the session row (created by SessionCreated) holds them for the
    session's later events. Within a batch, rows stay mutable in a working set (``_Rows``) and
    each changed row is written once, just before the commit.
    """

    name: str = "metrics"
    tables: tuple[Table, ...] = (SESSION_METRICS, AGENT_DAILY_METRICS)

    def __init__(self) -> None:
        self._handlers: dict[type[SessionEvent], Callable[[_Rows, Any], None]] = {
            SessionCreated: self._created,
            MessageAdded: self._message_added,
            TurnRecorded: self._turn_recorded,
            SessionInterrupted: self._interrupted,
            SessionResumed: self._resumed,
            SessionEnded: self._ended,
        }
        self.topics: frozenset[str] = frozenset(kind.topic for kind in self._handlers)

    def keys(self, event: RecordedEvent) -> Iterable[tuple[str, Key]]:
        e = event.event
        yield SESSION_METRICS.name, (e.session_id,)
        if isinstance(e, SessionCreated):
            yield AGENT_DAILY_METRICS.name, (e.tenant_id, e.agent_id, day_of(e.occurred_at))
        # For other events the daily key needs the session row first; it is loaded on demand.

    def apply(self, batch: Batch, event: RecordedEvent) -> None:
        handler = self._handlers.get(type(event.event))
        if handler is None:
            return
        rows: _Rows | None = batch.memo.get(self.name)
        if rows is None:
            rows = batch.memo[self.name] = _Rows(batch)
            batch.before_commit(rows.write)
        handler(rows, event.event)

    # -- handlers ---------------------------------------------------------------------------------

    def _created(self, rows: _Rows, e: SessionCreated) -> None:
        rows.add(SESSION_METRICS.name, (e.session_id,), new_session_row(e))
        self._daily(rows, e.tenant_id, e.agent_id, e)["sessions_started"] += 1

    def _message_added(self, rows: _Rows, e: MessageAdded) -> None:
        self._daily(rows, *self._owner(rows, e), e)["messages"] += 1

    def _turn_recorded(self, rows: _Rows, e: TurnRecorded) -> None:
        session = self._session(rows, e)
        rows.changed(SESSION_METRICS.name, (e.session_id,))
        session["requests"] += 1
        session["errors"] += 1 if e.error else 0
        add_turn(session, e)
        first, last = session["first_turn_at"], session["last_turn_at"]
        session["first_turn_at"] = e.occurred_at if first is None else min(first, e.occurred_at)
        session["last_turn_at"] = e.occurred_at if last is None else max(last, e.occurred_at)

        daily = self._daily(rows, session["tenant_id"], session["agent_id"], e)
        daily["turns"] += 1
        daily["error_turns"] += 1 if e.error else 0
        add_turn(daily, e)
        daily["latency_histogram"][bucket_of(e.duration_ms)] += 1

    def _interrupted(self, rows: _Rows, e: SessionInterrupted) -> None:
        self._daily(rows, *self._owner(rows, e), e)["interrupts"] += 1

    def _resumed(self, rows: _Rows, e: SessionResumed) -> None:
        self._daily(rows, *self._owner(rows, e), e)["resumes"] += 1

    def _ended(self, rows: _Rows, e: SessionEnded) -> None:
        self._daily(rows, *self._owner(rows, e), e)[f"sessions_{e.status.value}"] += 1

    # -- rows -------------------------------------------------------------------------------------

    def _session(self, rows: _Rows, e: SessionEvent) -> Row:
        row = rows.get(SESSION_METRICS.name, (e.session_id,))
        if row is None:
            msg = f"metrics: {e.topic} v{e.version} of session {e.session_id} before its creation"
            raise ValueError(msg)
        return row

    def _owner(self, rows: _Rows, e: SessionEvent) -> tuple[str, str]:
        session = self._session(rows, e)
        return session["tenant_id"], session["agent_id"]

    def _daily(self, rows: _Rows, tenant_id: str, agent_id: str, e: SessionEvent) -> Row:
        """The daily row the event counts in, marked changed (the caller changes it)."""
        key = (tenant_id, agent_id, day_of(e.occurred_at))
        row = rows.get(AGENT_DAILY_METRICS.name, key)
        if row is None:
            row = rows.add(AGENT_DAILY_METRICS.name, key, new_daily_row(*key))
        rows.changed(AGENT_DAILY_METRICS.name, key)
        return row


class _Rows:
    """The rows a batch reads and changes, kept as mutable dicts until ``write`` puts each
    changed one into the batch (once, however many events changed it)."""

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self._rows: dict[tuple[str, Key], Row] = {}
        self._changed: dict[tuple[str, Key], None] = {}  # insertion-ordered set

    def get(self, table: str, key: Key) -> Row | None:
        row = self._rows.get((table, key))
        if row is None:
            row = self._batch.get(table, key)
            if row is None:
                return None
            if "latency_histogram" in row:  # the batch copies rows shallowly; own the list
                row["latency_histogram"] = list(row["latency_histogram"])
            self._rows[(table, key)] = row
        return row

    def add(self, table: str, key: Key, row: Row) -> Row:
        self._rows[(table, key)] = row
        self._changed[(table, key)] = None
        return row

    def changed(self, table: str, key: Key) -> None:
        self._changed[(table, key)] = None

    def write(self) -> None:
        for table, key in self._changed:
            self._batch.put(table, self._rows[(table, key)])
