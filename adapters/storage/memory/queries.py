"""SessionQueries over the in-memory view store: plain Python, the same answers as SQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from sessionstore.adapters.storage.memory.views import MemoryViewStore
from sessionstore.domain.errors import SessionNotFound
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import parse_session_id
from sessionstore.projections import all_projections
from sessionstore.projections.base import Row, Table
from sessionstore.projections.queries import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_WAIT_SECONDS,
    MAX_MESSAGES,
    AgentMetrics,
    CleanupCandidates,
    SessionMetrics,
    SessionPage,
    SessionStateView,
    TranscriptEntry,
)
from sessionstore.projections.query_rules import (
    agent_metrics_from_rows,
    aware,
    candidate_from_row,
    check_days,
    check_limit,
    check_position,
    check_texts,
    entry_from_row,
    list_filter,
    page_of,
    session_metrics_from_row,
    summary_from_row,
    wait_for_views,
)
from sessionstore.projections.runner import wait_for_position
from sessionstore.projections.session_state import row_to_state
from sessionstore.projections.tables import (
    AGENT_DAILY_METRICS,
    SESSION_CLEANUP,
    SESSION_METRICS,
    SESSION_STATE,
    TRANSCRIPT,
)


class MemoryQueries:
    """SessionQueries over a MemoryViewStore (scans; meant for tests and memory://)."""

    def __init__(self, views: MemoryViewStore, log: EventLog) -> None:
        self.views = views
        self.log = log
        projections = all_projections()
        self._known = [p.name for p in projections]
        self._owner = {t.name: p.name for p in projections for t in p.tables}

    def close(self) -> None:
        """Nothing to release: the view store and the log belong to the caller."""

    # -- one session ------------------------------------------------------------------------------

    def get_session(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> SessionStateView:
        sid = parse_session_id(session_id)
        row = self._session_row(SESSION_STATE, sid, tenant_id)
        return SessionStateView(state=row_to_state(row), last_position=row["last_position"])

    def transcript(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> list[TranscriptEntry]:
        sid = parse_session_id(session_id)
        return self._entries(sid, tenant_id)

    def last_messages(
        self, session_id: UUID | str, n: int = 20, *, tenant_id: str | None = None
    ) -> list[TranscriptEntry]:
        sid = parse_session_id(session_id)
        check_limit("n", n, MAX_MESSAGES)
        return self._entries(sid, tenant_id)[-n:]

    def session_metrics(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> SessionMetrics:
        sid = parse_session_id(session_id)
        return session_metrics_from_row(self._session_row(SESSION_METRICS, sid, tenant_id))

    # -- many sessions ----------------------------------------------------------------------------

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
        f = list_filter(
            tenant_id=tenant_id,
            status=status,
            user_id=user_id,
            agent_id=agent_id,
            idle_for=idle_for,
            now=now,
            limit=limit,
            cursor=cursor,
        )
        checks: list[Callable[[Row], bool]] = []
        for column, value in (
            ("tenant_id", f.tenant_id),
            ("status", f.status),
            ("end_status", f.end_status),
            ("user_id", f.user_id),
            ("agent_id", f.agent_id),
        ):
            if value is not None:
                checks.append(_equals(column, str(value)))
        if (idle_since := f.idle_since) is not None:
            checks.append(lambda row: row["last_activity_at"] <= idle_since)
        if (after := f.after) is not None:
            checks.append(lambda row: (row["created_at"], row["session_id"]) > after)
        rows = sorted(
            (row for row in self._rows(SESSION_STATE) if all(check(row) for check in checks)),
            key=lambda row: (row["created_at"], row["session_id"]),
        )
        return page_of([summary_from_row(row) for row in rows[: f.limit + 1]], f.limit)

    def agent_metrics(
        self,
        agent_id: str,
        *,
        tenant_id: str | None = None,
        from_day: date | None = None,
        to_day: date | None = None,
    ) -> AgentMetrics:
        check_texts(agent_id=agent_id, tenant_id=tenant_id)
        check_days(from_day, to_day)
        rows = [
            row
            for row in self._rows(AGENT_DAILY_METRICS)
            if row["agent_id"] == agent_id
            and (tenant_id is None or row["tenant_id"] == tenant_id)
            and (from_day is None or row["day"] >= from_day)
            and (to_day is None or row["day"] <= to_day)
        ]
        return agent_metrics_from_rows(
            agent_id, rows, tenant_id=tenant_id, from_day=from_day, to_day=to_day
        )

    def cleanup_candidates(
        self, *, now: datetime, tenant_id: str | None = None, limit: int = 1000
    ) -> CleanupCandidates:
        check_texts(tenant_id=tenant_id)
        moment = aware("now", now)
        check_limit("limit", limit, 100_000)
        rows = [
            row
            for row in self._rows(SESSION_CLEANUP)
            if tenant_id is None or row["tenant_id"] == tenant_id
        ]

        def due(deadline: str, *, ended: bool) -> list[Row]:
            found = [
                row
                for row in rows
                if row[deadline] is not None
                and row[deadline] <= moment
                and (row["status"] == "ended") == ended
            ]
            found.sort(key=lambda row: (row[deadline], row["session_id"]))
            return found[:limit]

        return CleanupCandidates(
            now=moment,
            idle=tuple(map(candidate_from_row, due("idle_deadline", ended=False))),
            expirable=tuple(map(candidate_from_row, due("expires_at", ended=False))),
            past_retention=tuple(map(candidate_from_row, due("retention_until", ended=True))),
        )

    # -- read-your-writes -------------------------------------------------------------------------

    def wait_for(
        self,
        position: int,
        *,
        views: Sequence[str] = (),
        timeout: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        check_position(position)

        def wait_one(name: str, seconds: float) -> None:
            wait_for_position(self.log, self.views, name, position, timeout=seconds)

        wait_for_views(wait_one, self._known, views, timeout)

    # -- helpers ----------------------------------------------------------------------------------

    def _rows(self, table: Table) -> list[Row]:
        projection = self._owner[table.name]
        try:
            return self.views.rows(projection, table.name)
        except KeyError:  # the projection has no generation yet: nothing projected
            return []

    def _session_row(self, table: Table, sid: UUID, tenant_id: str | None) -> Row:
        check_texts(tenant_id=tenant_id)
        for row in self._rows(table):
            if row["session_id"] == sid and (tenant_id is None or row["tenant_id"] == tenant_id):
                return row
        raise SessionNotFound(sid)

    def _entries(self, sid: UUID, tenant_id: str | None) -> list[TranscriptEntry]:
        check_texts(tenant_id=tenant_id)
        rows: list[dict[str, Any]] = [
            row
            for row in self._rows(TRANSCRIPT)  # in key order: (session_id, version, seq)
            if row["session_id"] == sid and (tenant_id is None or row["tenant_id"] == tenant_id)
        ]
        if not rows:
            self._session_row(SESSION_STATE, sid, tenant_id)  # SessionNotFound if unknown
        return [entry_from_row(sid, row) for row in rows]


def _equals(column: str, value: str) -> Callable[[Row], bool]:
    return lambda row: bool(row[column] == value)
