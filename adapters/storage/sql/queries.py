"""SessionQueries on SQL (SQLite and PostgreSQL): each query is one SELECT through the views.

Queries read the SQL view named like each table, which points at the projection's active
generation, so they keep answering (from the old generation) while a rebuild fills a new one.
Every statement is written to be answered from an index of ``projections/tables.py``: primary
keys for one session, ``(tenant_id, ..., created_at, session_id)`` for listings (paged with a
row-value comparison, never OFFSET, so page N costs what page 1 costs), ``(agent_id, day)``
for agent metrics and one index per cleanup deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from sessionstore.adapters.storage.sql.views import SQLViewStore
from sessionstore.domain.errors import SessionNotFound, StorageError
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import parse_session_id
from sessionstore.projections import all_projections
from sessionstore.projections.base import Row, Table, ViewStore
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


def narrowed(table: Table, columns: tuple[str, ...], key: tuple[str, ...]) -> Table:
    """The same view read through fewer columns (less to fetch and convert per row)."""
    by_name = {c.name: c for c in table.columns}
    return Table(name=table.name, columns=tuple(by_name[c] for c in columns), key=key)


SUMMARY = narrowed(
    SESSION_STATE,
    (
        "session_id", "tenant_id", "user_id", "agent_id", "channel", "status", "end_status",
        "created_at", "last_activity_at", "ended_at", "version", "last_position",
        "message_count", "turn_count", "interrupt_count", "resume_count",
        "last_message_role", "last_message_preview",
    ),
    ("session_id",),
)  # fmt: skip
EXISTS = narrowed(SESSION_STATE, ("session_id",), ("session_id",))
ENTRY = narrowed(
    TRANSCRIPT,
    tuple(c for c in TRANSCRIPT.column_names if c not in {"session_id", "tenant_id"}),
    ("version", "seq"),
)


class SQLQueries:
    """SessionQueries over a SQLViewStore (and the event log, for read-your-writes waits)."""

    def __init__(
        self,
        views: SQLViewStore,
        log: EventLog,
        *,
        owns_log: bool = False,
        owns_views: bool = False,
    ) -> None:
        self.views = views
        self.log = log
        self._owns_log = owns_log
        self._owns_views = owns_views
        self._p = views.placeholder
        self._known = [p.name for p in all_projections()]
        self._older_entries: dict[int, Table | None] = {}

    def close(self) -> None:
        """Close the log and the view store if this object was given them to own."""
        if self._owns_log:
            self.log.close()
        if self._owns_views:
            self.views.close()

    # -- one session ------------------------------------------------------------------------------

    def get_session(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> SessionStateView:
        sid = parse_session_id(session_id)
        rows = self._select(SESSION_STATE, *self._one_session(sid, tenant_id))
        if not rows:
            raise SessionNotFound(sid)
        return SessionStateView(state=row_to_state(rows[0]), last_position=rows[0]["last_position"])

    def transcript(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> list[TranscriptEntry]:
        sid = parse_session_id(session_id)
        where, params = self._one_session(sid, tenant_id)
        rows = self._select_entries(where, params, "ORDER BY version, seq")
        return self._entries(sid, tenant_id, rows)

    def last_messages(
        self, session_id: UUID | str, n: int = 20, *, tenant_id: str | None = None
    ) -> list[TranscriptEntry]:
        sid = parse_session_id(session_id)
        check_limit("n", n, MAX_MESSAGES)
        where, params = self._one_session(sid, tenant_id)
        # Newest first through the primary key (session_id, version, seq), then put in order.
        tail = f"ORDER BY version DESC, seq DESC LIMIT {self._p}"
        rows = self._select_entries(where, [*params, n], tail)
        rows.reverse()
        return self._entries(sid, tenant_id, rows)

    def session_metrics(
        self, session_id: UUID | str, *, tenant_id: str | None = None
    ) -> SessionMetrics:
        sid = parse_session_id(session_id)
        rows = self._select(SESSION_METRICS, *self._one_session(sid, tenant_id))
        if not rows:
            raise SessionNotFound(sid)
        return session_metrics_from_row(rows[0])

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
        p = self._p
        conditions: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("tenant_id", f.tenant_id),
            ("status", f.status),
            ("end_status", f.end_status),
            ("user_id", f.user_id),
            ("agent_id", f.agent_id),
        ):
            if value is not None:
                conditions.append(f"{column} = {p}")
                params.append(str(value))
        if f.idle_since is not None:
            conditions.append(f"last_activity_at <= {p}")
            params.append(self._db("timestamp", f.idle_since))
        if f.after is not None:
            # A row-value comparison: the index (tenant_id, [filter,] created_at, session_id)
            # seeks straight to the first row of the page.
            conditions.append(f"(created_at, session_id) > ({p}, {p})")
            params += [self._db("timestamp", f.after[0]), self._db("uuid", f.after[1])]
        params.append(f.limit + 1)  # one more than asked: is there a next page?
        rows = self._select(
            SUMMARY,
            " AND ".join(conditions),
            params,
            f"ORDER BY created_at, session_id LIMIT {p}",
        )
        return page_of([summary_from_row(row) for row in rows], f.limit)

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
        p = self._p
        conditions, params = [f"agent_id = {p}"], [agent_id]
        if tenant_id is not None:
            conditions.append(f"tenant_id = {p}")
            params.append(tenant_id)
        if from_day is not None:
            conditions.append(f"day >= {p}")
            params.append(self._db("date", from_day))
        if to_day is not None:
            conditions.append(f"day <= {p}")
            params.append(self._db("date", to_day))
        rows = self._select(AGENT_DAILY_METRICS, " AND ".join(conditions), params)
        return agent_metrics_from_rows(
            agent_id, rows, tenant_id=tenant_id, from_day=from_day, to_day=to_day
        )

    def cleanup_candidates(
        self, *, now: datetime, tenant_id: str | None = None, limit: int = 1000
    ) -> CleanupCandidates:
        check_texts(tenant_id=tenant_id)
        moment = aware("now", now)
        check_limit("limit", limit, 100_000)

        def due(deadline: str, *, ended: bool) -> list[Row]:
            p = self._p
            conditions = [f"{deadline} <= {p}", f"status {'=' if ended else '<>'} 'ended'"]
            params: list[Any] = [self._db("timestamp", moment)]
            if tenant_id is not None:
                conditions.append(f"tenant_id = {p}")
                params.append(tenant_id)
            params.append(limit)
            tail = f"ORDER BY {deadline}, session_id LIMIT {p}"
            return self._select(SESSION_CLEANUP, " AND ".join(conditions), params, tail)

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
            # SQLViewStore implements ViewStore; only ``close`` lives in its subclasses.
            views = cast("ViewStore", self.views)
            wait_for_position(self.log, views, name, position, timeout=seconds)

        wait_for_views(wait_one, self._known, views, timeout)

    # -- helpers ----------------------------------------------------------------------------------

    def _select(self, table: Table, where: str, params: list[Any], tail: str = "") -> list[Row]:
        return self.views.select(table, where, params, tail)

    def _select_entries(self, where: str, params: list[Any], tail: str) -> list[Row]:
        try:
            return self._select(ENTRY, where, params, tail)
        except StorageError:
            # After an upgrade that added transcript columns, the view keeps pointing at the
            # generation the old code built until `projections rebuild transcript` switches
            # over: answer from the columns it has (entry_from_row fills in the defaults the
            # upcasters give the old events) instead of failing every transcript read.
            older = self._entry_columns_present()
            if older is None:
                raise
            return self._select(older, where, params, tail)

    def _entry_columns_present(self) -> Table | None:
        """ENTRY narrowed to the columns the active transcript generation has, or None if it
        has them all (then the error was something else). Probed once per generation."""
        generation = self.views.active_generation("transcript")
        if generation not in self._older_entries:
            present = []
            for column in ENTRY.column_names:
                try:
                    self._select(narrowed(ENTRY, (column,), ()), "1 = 0", [])
                except StorageError:
                    continue
                present.append(column)
            missing = len(present) < len(ENTRY.columns)
            self._older_entries[generation] = (
                narrowed(ENTRY, tuple(present), ENTRY.key) if missing else None
            )
        return self._older_entries[generation]

    def _db(self, type_: Any, value: Any) -> Any:
        return self.views._to_db(type_, value)  # the store's own conversions

    def _one_session(self, sid: UUID, tenant_id: str | None) -> tuple[str, list[Any]]:
        check_texts(tenant_id=tenant_id)
        p = self._p
        where, params = f"session_id = {p}", [self._db("uuid", sid)]
        if tenant_id is not None:
            where += f" AND tenant_id = {p}"
            params.append(tenant_id)
        return where, params

    def _entries(self, sid: UUID, tenant_id: str | None, rows: list[Row]) -> list[TranscriptEntry]:
        if not rows and not self._select(EXISTS, *self._one_session(sid, tenant_id)):
            raise SessionNotFound(sid)  # no messages is fine; no session is not
        return [entry_from_row(sid, row) for row in rows]
