"""The query contract on SQLite and on a real PostgreSQL, and the SQL plans behind it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sessionstore.adapters.bootstrap import open_log, open_queries, open_views
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.sql.queries import SQLQueries
from sessionstore.adapters.storage.sqlite.views import SQLiteViewStore
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.queries import SessionQueries
from sessionstore.projections.runner import ProjectionRunner
from tests.contracts.queries import Clock, QueriesContract


class SQLBackend:
    """Fixtures shared by the SQL backends; subclasses provide ``settings``."""

    @pytest.fixture
    def log(self, settings: Settings) -> Iterator[EventLog]:
        log = open_log(settings)
        yield log
        log.close()

    @pytest.fixture
    def views(self, settings: Settings) -> Iterator[ViewStore]:
        views = open_views(settings)  # `migrate` (in the settings fixture) made the views
        yield views
        views.close()

    @pytest.fixture
    def queries(
        self, settings: Settings, views: ViewStore, log: EventLog
    ) -> Iterator[SessionQueries]:
        queries = open_queries(settings, views, log)
        assert isinstance(queries, SQLQueries)
        yield queries
        queries.close()

    @pytest.fixture
    def new_log(self, settings: Settings) -> Callable[[], EventLog]:
        # A log with connections of its own: another process, as far as the database can tell.
        return lambda: open_log(settings)


class TestSQLiteQueries(SQLBackend, QueriesContract):
    @pytest.fixture
    def settings(self, sqlite_settings: Settings) -> Settings:
        return sqlite_settings


@pytest.mark.postgres
class TestPostgresQueries(SQLBackend, QueriesContract):
    @pytest.fixture
    def settings(self, pg_settings: Settings) -> Settings:
        return pg_settings


def test_open_queries_opens_and_closes_a_log_of_its_own(sqlite_settings: Settings) -> None:
    views = open_views(sqlite_settings)
    try:
        queries = open_queries(sqlite_settings, views)
        assert queries.list_sessions().items == ()
        queries.wait_for(0, timeout=0)
        queries.close()
    finally:
        views.close()


# -- plans: the queries are answered from indexes --------------------------------------------------


class RecordingViews:
    """Wraps SQLViewStore.select to keep each statement and its parameters."""

    def __init__(self, views: SQLiteViewStore) -> None:
        self.statements: list[tuple[str, list[Any]]] = []
        self._select = views.select
        views.select = self.select  # type: ignore[method-assign]

    def select(self, table: Any, where: str = "", params: Any = (), tail: str = "") -> Any:
        query = f"SELECT {', '.join(table.column_names)} FROM {table.name}"
        query += f" WHERE {where}" if where else ""
        query += f" {tail}" if tail else ""
        self.statements.append((query, list(params)))
        return self._select(table, where, params, tail)


def sqlite_plan(views: SQLiteViewStore, query: str, params: list[Any]) -> str:
    with views._reading() as cur:  # a test looks at the plan
        cur.execute(f"EXPLAIN QUERY PLAN {query}", params)
        return " | ".join(str(row[-1]) for row in cur.fetchall())


@pytest.fixture
def sqlite_world(sqlite_settings: Settings) -> Iterator[tuple[SQLiteViewStore, SQLQueries]]:
    log = open_log(sqlite_settings)
    views = SQLiteViewStore.open(sqlite_settings)
    store = SessionStore(log, clock=Clock())
    for n in range(30):
        sid = store.create(tenant_id=f"t{n % 3}", user_id="u", agent_id="a").session_id
        store.add_message(sid, role="user", content="hi")
        store.record_turn(sid, request_id="r", duration_ms=5)
    ProjectionRunner(log, views, all_projections()).catch_up()
    yield views, SQLQueries(views, log)
    views.close()
    log.close()


@pytest.mark.parametrize(
    ("call", "index"),
    [
        (lambda q, sid: q.list_sessions(tenant_id="t1", limit=5), "session_state_g1_ix1"),
        (
            lambda q, sid: q.list_sessions(tenant_id="t1", status="active", limit=5),
            "session_state_g1_ix2",
        ),
        (lambda q, sid: q.list_sessions(tenant_id="t1", user_id="u"), "session_state_g1_ix3"),
        (lambda q, sid: q.list_sessions(tenant_id="t1", agent_id="a"), "session_state_g1_ix4"),
        (lambda q, sid: q.get_session(sid), "sqlite_autoindex_session_state_g1_1"),
        (lambda q, sid: q.last_messages(sid, 20), "sqlite_autoindex_transcript_g1_1"),
        (lambda q, sid: q.transcript(sid), "sqlite_autoindex_transcript_g1_1"),
        (
            lambda q, sid: q.agent_metrics("a", from_day=datetime.now(UTC).date()),
            "agent_daily_metrics_g1_ix1",
        ),
    ],
)
def test_sqlite_queries_use_an_index_and_never_sort(
    sqlite_world: tuple[SQLiteViewStore, SQLQueries],
    call: Callable[[SQLQueries, Any], object],
    index: str,
) -> None:
    views, queries = sqlite_world
    sid = queries.list_sessions(limit=1).items[0].session_id
    recorder = RecordingViews(views)
    call(queries, sid)
    query, params = recorder.statements[0]
    plan = sqlite_plan(views, query, params)
    assert f"USING INDEX {index} " in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # ordered by the index itself


def test_sqlite_next_page_seeks_with_the_row_value_in_the_index(
    sqlite_world: tuple[SQLiteViewStore, SQLQueries],
) -> None:
    views, queries = sqlite_world
    first = queries.list_sessions(tenant_id="t2", limit=3)
    assert first.next_cursor is not None
    recorder = RecordingViews(views)
    queries.list_sessions(tenant_id="t2", limit=3, cursor=first.next_cursor)
    query, params = recorder.statements[0]
    assert "(created_at, session_id) >" in query
    plan = sqlite_plan(views, query, params)
    assert "session_state_g1_ix1 (tenant_id=? AND (created_at,session_id)>(?,?))" in plan, plan


def test_sqlite_cleanup_candidates_use_the_deadline_indexes(
    sqlite_world: tuple[SQLiteViewStore, SQLQueries],
) -> None:
    views, queries = sqlite_world
    recorder = RecordingViews(views)
    queries.cleanup_candidates(now=datetime.now(UTC) + timedelta(days=1))
    plans = [sqlite_plan(views, q, p) for q, p in recorder.statements]
    for number, plan in enumerate(plans, start=1):
        assert f"session_cleanup_g1_ix{number}" in plan, plan
        # Rows come in deadline order from the index; only ties are sorted (by session id).
        assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
    assert len(plans) == 3


def test_a_query_on_a_view_that_is_being_rebuilt_reads_the_old_generation_sqlite(
    sqlite_world: tuple[SQLiteViewStore, SQLQueries],
) -> None:
    views, queries = sqlite_world
    before = queries.list_sessions(limit=500)
    state = next(p for p in all_projections() if p.name == "session_state")
    views.start_generation(state)
    assert queries.list_sessions(limit=500) == before
    assert len(before.items) == 30
    assert queries.session_metrics(before.items[0].session_id).requests == 1
