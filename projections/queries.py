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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from sessionstore.domain.ports import EventLog
from sessionstore.domain.session import Session, SessionStatus
from sessionstore.events.catalogue import Channel, EndStatus, Modality, Role
from sessionstore.projections.base import ViewStore

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

    @property
    def views(self) -> ViewStore:
        """The view store the queries read (a projection runner writes into it)."""
        ...

    @property
    def log(self) -> EventLog:
        """The event log the views are built from (read-your-writes waits look at it)."""
        ...

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
