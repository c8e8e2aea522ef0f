"""What every SessionQueries implementation shares: request validation, cursors, and turning view
rows into the result types of ``projections.queries``."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from sessionstore.domain import contract
from sessionstore.domain.errors import InvalidInput, UnknownProjection
from sessionstore.domain.session import SessionStatus
from sessionstore.events.catalogue import Channel, EndStatus, Modality, Role
from sessionstore.projections.metrics import STAGES, add_ms, merge_histograms, percentile, rates
from sessionstore.projections.queries import (
    MAX_PAGE_SIZE,
    AgentMetrics,
    CleanupCandidate,
    SessionMetrics,
    SessionPage,
    SessionSummary,
    StageTimes,
    TranscriptEntry,
)

# ---------------------------------------------------------------------------------------------
# Cursors: opaque to callers, "<created_at>|<session_id>" in URL-safe base64 underneath


def encode_cursor(created_at: datetime, session_id: UUID) -> str:
    """The cursor of a listing row: the next page starts strictly after it."""
    moment = created_at.astimezone(UTC).isoformat(timespec="microseconds")
    raw = f"{moment}|{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """(created_at, session_id) of a cursor; InvalidInput if it is not one we made."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, sid = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        created_at = datetime.fromisoformat(moment)
        session_id = UUID(sid)
    except (ValueError, UnicodeError, binascii.Error):
        raise _invalid("cursor", "not a cursor returned by a previous page") from None
    if created_at.tzinfo is None:
        raise _invalid("cursor", "not a cursor returned by a previous page")
    return created_at, session_id


# ---------------------------------------------------------------------------------------------
# Rules every implementation shares


@dataclass(frozen=True, slots=True)
class ListFilter:
    """A validated listing request."""

    tenant_id: str | None
    status: SessionStatus | None
    end_status: EndStatus | None
    user_id: str | None
    agent_id: str | None
    idle_since: datetime | None
    """Only sessions with ``last_activity_at <= idle_since``."""
    limit: int
    after: tuple[datetime, UUID] | None


def list_filter(
    *,
    tenant_id: str | None,
    status: str | None,
    user_id: str | None,
    agent_id: str | None,
    idle_for: timedelta | None,
    now: datetime | None,
    limit: int,
    cursor: str | None,
) -> ListFilter:
    """Validate a listing request (InvalidInput names the bad field)."""
    check_texts(tenant_id=tenant_id, user_id=user_id, agent_id=agent_id)
    session_status, end_status = parse_status(status)
    check_limit("limit", limit, MAX_PAGE_SIZE)
    idle_since = None
    if idle_for is not None:
        if not isinstance(idle_for, timedelta) or idle_for < timedelta(0):
            raise _invalid("idle_for", "must be a duration of 0 or more")
        try:
            idle_since = aware("now", now or datetime.now(UTC)) - idle_for
        except OverflowError:
            raise _invalid("idle_for", "is longer than the calendar reaches") from None
    return ListFilter(
        tenant_id=tenant_id,
        status=session_status,
        end_status=end_status,
        user_id=user_id,
        agent_id=agent_id,
        idle_since=idle_since,
        limit=limit,
        after=None if cursor is None else decode_cursor(cursor),
    )


_SESSION_STATUSES = frozenset(s.value for s in SessionStatus)
_END_STATUSES = frozenset(s.value for s in EndStatus)
STATUS_CHOICES = (*(s.value for s in SessionStatus), *(s.value for s in EndStatus))


def parse_status(status: str | None) -> tuple[SessionStatus | None, EndStatus | None]:
    """A status filter: a session status, or an end status (which implies ``ended``)."""
    if status is None:
        return None, None
    if status in _SESSION_STATUSES:
        return SessionStatus(status), None
    if status in _END_STATUSES:
        return SessionStatus.ENDED, EndStatus(status)
    raise _invalid("status", f"must be one of {', '.join(STATUS_CHOICES)}; got {status!r}")


def check_texts(**values: str | None) -> None:
    """Filters and ids follow the input contract too: text without NUL, valid Unicode (a NUL
    would otherwise reach PostgreSQL as a driver error, i.e. "retry later")."""
    problems = [
        problem
        for name, value in values.items()
        if value is not None and (problem := contract.check_text(name, value))
    ]
    if problems:
        raise InvalidInput(problems)


def check_limit(field: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise _invalid(field, f"must be an integer from 1 to {maximum}; got {value!r}")


def aware(field: str, moment: datetime) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise _invalid(field, "must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def check_days(from_day: date | None, to_day: date | None) -> None:
    if from_day is not None and to_day is not None and from_day > to_day:
        raise _invalid("from_day", f"{from_day} is after to_day {to_day}")


# Enum members by value: a dict lookup is ~10x cheaper than calling the enum, and listings and
# transcripts convert thousands of rows per request.
_CHANNELS = {c.value: c for c in Channel}
_STATUSES = {s.value: s for s in SessionStatus}
_ENDS: dict[str | None, EndStatus | None] = {None: None} | {e.value: e for e in EndStatus}
_ROLES = {r.value: r for r in Role}
_MODALITIES = {m.value: m for m in Modality}
_LAST_ROLES: dict[str | None, Role | None] = {None: None} | {r.value: r for r in Role}


def summary_from_row(row: Mapping[str, Any]) -> SessionSummary:
    return SessionSummary(
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        channel=_CHANNELS[row["channel"]],
        status=_STATUSES[row["status"]],
        end_status=_ENDS[row["end_status"]],
        created_at=row["created_at"],
        last_activity_at=row["last_activity_at"],
        ended_at=row["ended_at"],
        version=row["version"],
        last_position=row["last_position"],
        message_count=row["message_count"],
        turn_count=row["turn_count"],
        interrupt_count=row["interrupt_count"],
        resume_count=row["resume_count"],
        last_message_role=_LAST_ROLES[row["last_message_role"]],
        last_message_preview=row["last_message_preview"],
    )


def page_of(summaries: list[SessionSummary], limit: int) -> SessionPage:
    """A page from up to ``limit + 1`` rows in order (one more than asked: there is a next)."""
    items = tuple(summaries[:limit])
    more = len(summaries) > limit
    last = items[-1] if items else None
    cursor = encode_cursor(last.created_at, last.session_id) if more and last else None
    return SessionPage(items=items, next_cursor=cursor)


def entry_from_row(session_id: UUID, row: Mapping[str, Any]) -> TranscriptEntry:
    return TranscriptEntry(
        session_id=session_id,
        version=row["version"],
        seq=row["seq"],
        position=row["position"],
        message_id=row["message_id"],
        role=_ROLES[row["role"]],
        content=row["content"],
        tool_calls=tuple(row["tool_calls"]) if row["tool_calls"] else (),
        tool_call_id=row["tool_call_id"],
        aborted=row["aborted"],
        occurred_at=row["occurred_at"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        # A transcript generation built before MessageAdded v2 has neither column (queries read
        # it until `projections rebuild transcript` switches over): its messages were all v1.
        modality=_MODALITIES[row.get("modality", "text")],
        language=row.get("language"),
    )


def session_metrics_from_row(row: Mapping[str, Any]) -> SessionMetrics:
    requests = row["requests"]
    return SessionMetrics(
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        agent_id=row["agent_id"],
        requests=requests,
        errors=row["errors"],
        error_rate=None if requests == 0 else row["errors"] / requests,
        total_ms=row["total_ms"],
        mean_ms=_mean(row["total_ms"], requests),
        stages=_stage_means(row),
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        first_turn_at=row["first_turn_at"],
        last_turn_at=row["last_turn_at"],
    )


_SUMMED = (
    "sessions_started",
    *(f"sessions_{s.value}" for s in EndStatus),
    "messages",
    "turns",
    "error_turns",
    "interrupts",
    "resumes",
    *(f"{stage}_count" for stage in STAGES),
    "input_tokens",
    "output_tokens",
)
_SUMMED_MS = ("total_ms", *(f"{stage}_ms" for stage in STAGES))


def agent_metrics_from_rows(
    agent_id: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    tenant_id: str | None,
    from_day: date | None,
    to_day: date | None,
) -> AgentMetrics:
    """Sum daily rows (of one agent, any tenants and days) into one AgentMetrics."""
    totals: dict[str, Any] = dict.fromkeys(_SUMMED, 0) | dict.fromkeys(_SUMMED_MS, 0.0)
    histogram: list[int] = []
    days: set[date] = set()
    for row in rows:
        days.add(row["day"])
        for column in _SUMMED:
            totals[column] += row[column]
        for column in _SUMMED_MS:
            totals[column] = add_ms(totals[column], row[column])  # order-independent sums
        histogram = merge_histograms(histogram, row["latency_histogram"])
    ratios = rates(totals)
    return AgentMetrics(
        agent_id=agent_id,
        tenant_id=tenant_id,
        from_day=from_day,
        to_day=to_day,
        days=len(days),
        sessions_started=totals["sessions_started"],
        sessions_completed=totals["sessions_completed"],
        sessions_failed=totals["sessions_failed"],
        sessions_expired=totals["sessions_expired"],
        sessions_abandoned=totals["sessions_abandoned"],
        messages=totals["messages"],
        turns=totals["turns"],
        error_turns=totals["error_turns"],
        interrupts=totals["interrupts"],
        resumes=totals["resumes"],
        error_rate=ratios["error_rate"],
        resume_rate=ratios["resume_rate"],
        total_ms=totals["total_ms"],
        mean_ms=_mean(totals["total_ms"], totals["turns"]),
        stages=_stage_means(totals),
        p50_ms=percentile(histogram, 50),
        p95_ms=percentile(histogram, 95),
        p99_ms=percentile(histogram, 99),
        input_tokens=totals["input_tokens"],
        output_tokens=totals["output_tokens"],
        latency_histogram=tuple(histogram),
    )


def candidate_from_row(row: Mapping[str, Any]) -> CleanupCandidate:
    return CleanupCandidate(
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        status=SessionStatus(row["status"]),
        version=row["version"],
        last_activity_at=row["last_activity_at"],
        idle_deadline=row["idle_deadline"],
        expires_at=row["expires_at"],
        retention_until=row["retention_until"],
    )


def wait_for_views(
    wait_one: Callable[[str, float], None],
    known: Sequence[str],
    views: Sequence[str],
    timeout: float,
) -> None:
    """Wait for each view in turn within one overall deadline (``wait_one(name, seconds)``
    raises ProjectionTimeout when its view is not there in time)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise _invalid("timeout", "must be a number of seconds, 0 or more")
    for name in views:
        if name not in known:
            raise UnknownProjection(name, sorted(known))
    deadline = time.monotonic() + timeout
    for name in views or known:
        wait_one(name, max(0.0, deadline - time.monotonic()))


def check_position(position: int) -> None:
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise _invalid(
            "position", f"must be a log position (an integer, 0 or more); got {position!r}"
        )


def _mean(total: float, count: int) -> float | None:
    return None if count == 0 else round(total / count, 3)


def _stage_means(row: Mapping[str, Any]) -> StageTimes:
    means = {stage: _mean(row[f"{stage}_ms"], row[f"{stage}_count"]) for stage in STAGES}
    return StageTimes(
        stt_ms=means["stt"], llm_ms=means["llm"], tts_ms=means["tts"], tool_ms=means["tool"]
    )


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput([{"field": field, "message": message}])
