"""Queries over the views: result types, the backend-neutral port, cursors and shared rules.

``SessionQueries`` is what services, the CLI and (later) the HTTP layer read sessions through.
It reads the views the projections keep (never the log), so an answer reflects the log up to
each view's position: right after an append, use ``wait_for(result.position)`` to read your
own write. Every query takes an optional ``tenant_id``; when given, rows of other tenants are
never returned (a session of another tenant is "not found"). Implementations:
``adapters.storage.sql.queries.SQLQueries`` (SQLite and PostgreSQL) and
``adapters.storage.memory.queries.MemoryQueries``; ``adapters.bootstrap.open_queries`` picks one.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from sessionstore.domain.errors import InvalidInput, UnknownProjection
from sessionstore.domain.session import Session, SessionStatus
from sessionstore.events.catalogue import Channel, EndStatus, Modality, Role
from sessionstore.projections.metrics import STAGES, add_ms, merge_histograms, percentile, rates

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_MESSAGES = 10_000
"""The most transcript entries ``last_messages`` returns at once."""
DEFAULT_WAIT_SECONDS = 5.0

# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class SessionStateView:
    """A session as the session state view holds it."""

    state: Session
    last_position: int
    """Global log position of the session's last event the view has applied."""


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One session in a listing: the columns a list needs, not the whole state."""

    session_id: UUID
    tenant_id: str
    user_id: str
    agent_id: str
    channel: Channel
    status: SessionStatus
    end_status: EndStatus | None
    created_at: datetime
    last_activity_at: datetime
    ended_at: datetime | None
    version: int
    last_position: int
    message_count: int
    turn_count: int
    interrupt_count: int
    resume_count: int
    last_message_role: Role | None
    last_message_preview: str | None


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of a listing. Pass ``next_cursor`` back to get the next page; None: the end."""

    items: tuple[SessionSummary, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One message of a transcript, in order (``version``, ``seq``).

    ``aborted`` entries are synthetic tool results the store recorded for tool calls that an
    interruption or the end of the session cut off (``seq`` 1, 2, ...), so the transcript stays
    valid to send to an LLM.
    """

    session_id: UUID
    version: int
    seq: int
    position: int
    message_id: str | None
    role: Role
    content: str
    tool_calls: tuple[Mapping[str, Any], ...]
    """``{"id", "name", "arguments"}`` for each tool an assistant message calls."""
    tool_call_id: str | None
    aborted: bool
    occurred_at: datetime
    input_tokens: int | None
    output_tokens: int | None
    modality: Modality
    """``text``, ``audio`` (content is the speech's transcript) or ``image`` (content describes
    it). Messages stored before MessageAdded v2, and aborted entries, are ``text``."""
    language: str | None
    """The message's BCP 47 language tag, if the writer gave one."""


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Mean milliseconds of each stage over the turns that reported it (None: no turn did)."""

    stt_ms: float | None
    llm_ms: float | None
    tts_ms: float | None
    tool_ms: float | None


@dataclass(frozen=True, slots=True)
class SessionMetrics:
    """Turn metrics of one session (from its TurnRecorded events)."""

    session_id: UUID
    tenant_id: str
    agent_id: str
    requests: int
    errors: int
    error_rate: float | None
    """errors / requests; None without requests."""
    total_ms: float
    mean_ms: float | None
    stages: StageTimes
    input_tokens: int
    output_tokens: int
    first_turn_at: datetime | None
    last_turn_at: datetime | None


@dataclass(frozen=True, slots=True)
class AgentMetrics:
    """An agent's metrics over a range of UTC days: the sum of its daily rows.

    Counters are summed and the daily latency histograms merged, so the percentiles are those of
    every turn in the range (to the histogram's precision: each is the upper bound of the bucket
    holding it, about 7 % above the true value at most; see ``projections.metrics``).
    """

    agent_id: str
    tenant_id: str | None
    """The tenant the rows were limited to; None: every tenant that runs this agent id."""
    from_day: date | None
    to_day: date | None
    days: int
    """How many distinct UTC days in the range have any activity."""
    sessions_started: int
    sessions_completed: int
    sessions_failed: int
    sessions_expired: int
    sessions_abandoned: int
    messages: int
    turns: int
    error_turns: int
    interrupts: int
    resumes: int
    error_rate: float | None
    """error_turns / turns; None without turns."""
    resume_rate: float | None
    """resumes / interrupts; None without interruptions."""
    total_ms: float
    mean_ms: float | None
    stages: StageTimes
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    input_tokens: int
    output_tokens: int
    latency_histogram: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CleanupCandidate:
    """A session's row of the cleanup view."""

    session_id: UUID
    tenant_id: str
    status: SessionStatus
    version: int
    """The version the view saw: cleanup acts only if the session is still at it."""
    last_activity_at: datetime
    idle_deadline: datetime | None
    expires_at: datetime | None
    retention_until: datetime | None


@dataclass(frozen=True, slots=True)
class CleanupCandidates:
    """Sessions due for cleanup at ``now``, each list ordered by the deadline that passed."""

    now: datetime
    idle: tuple[CleanupCandidate, ...]
    """Not ended, idle beyond the policy's idle timeout (``idle_deadline <= now``)."""
    expirable: tuple[CleanupCandidate, ...]
    """Not ended, older than the policy's TTL (``expires_at <= now``)."""
    past_retention: tuple[CleanupCandidate, ...]
    """Ended longer ago than the policy's retention (``retention_until <= now``)."""


# ---------------------------------------------------------------------------------------------
# The port


class SessionQueries(Protocol):
    """Read sessions from the views. See the module docstring for the consistency contract."""

    def get_session(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> SessionStateView:
        """The session's state as the view holds it; SessionNotFound if it has no row."""
        ...

    def list_sessions(
        self,
        *,
        tenant_id: str | None = None,
        status: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        idle_for: timedelta | None = None,
        now: datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> SessionPage:
        """Sessions ordered by (created_at, session_id), a page at a time.

        ``status`` is ``active``, ``interrupted`` or ``ended``, or an end status
        (``completed``, ``failed``, ``expired``, ``abandoned``). ``idle_for`` keeps sessions
        whose last activity is at least that long before ``now`` (default: the current time).
        ``limit`` is 1 to 500."""
        ...

    def transcript(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> list[TranscriptEntry]:
        """Every transcript entry of the session, in order; SessionNotFound if unknown."""
        ...

    def last_messages(
        self, session_id: UUID | str, n: int = 20, *, tenant_id: str | None = None
    ) -> list[TranscriptEntry]:
        """The last ``n`` (1 to 10,000) transcript entries, oldest first."""
        ...

    def session_metrics(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> SessionMetrics: ...

    def agent_metrics(
        self,
        agent_id: str,
        *,
        tenant_id: str | None = None,
        from_day: date | None = None,
        to_day: date | None = None,
    ) -> AgentMetrics:
        """The agent's metrics over the UTC days ``from_day`` to ``to_day`` (both included;
        None: unbounded). An agent without rows in the range gets zeros, not an error."""
        ...

    def cleanup_candidates(
        self, *, now: datetime, tenant_id: str | None = None, limit: int = 1000
    ) -> CleanupCandidates:
        """Up to ``limit`` sessions in each list, the longest overdue first."""
        ...

    def wait_for(
        self,
        position: int,
        *,
        views: Sequence[str] = (),
        timeout: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        """Read-your-writes: return once every named view (default: all) has applied the log up
        to ``position`` (what an append returned); ProjectionTimeout after ``timeout`` seconds."""
        ...

    def close(self) -> None: ...


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
    session_status, end_status = parse_status(status)
    check_limit("limit", limit, MAX_PAGE_SIZE)
    idle_since = None
    if idle_for is not None:
        if not isinstance(idle_for, timedelta) or idle_for < timedelta(0):
            raise _invalid("idle_for", "must be a duration of 0 or more")
        idle_since = aware("now", now or datetime.now(UTC)) - idle_for
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
