"""The PostgreSQL log horizon: readers wait for transactions that write the log, and only for
those (decisions.md §4).

Every PostgreSQL test already runs beside two neighbour transactions that hold transaction ids
for the whole run (``tests/fix_db.py``): one in another database, one in the test database that
never touches the log. These tests measure what the store's readers do around them.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from sessionstore.adapters.bootstrap import build_store, open_views
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.postgres.log import PostgresEventLog
from sessionstore.domain.ports import LOG_START, LogCursor, RecordedEvent
from sessionstore.events.catalogue import MessageAdded, SessionCreated, SessionEvent
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.runner import ProjectionRunner, TimerWaiter

pytestmark = pytest.mark.postgres


def _connect(pg_url: str, settings: Settings) -> psycopg.Connection[Any]:
    conn = psycopg.connect(pg_url)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.database_schema)))
    conn.commit()
    return conn


def _insert(conn: psycopg.Connection[Any], log: PostgresEventLog, event: SessionEvent) -> int:
    """Insert one event row in the connection's open transaction (as a writer that holds its
    transaction open would), returning its position."""
    stored = log.mapper.encode(event)
    row = conn.execute(
        "INSERT INTO events (session_id, version, event_id, topic, class_version, tenant_id, "
        "occurred_at, state) VALUES (%s, %s, %s, %s, %s, 'acme', %s, %s) RETURNING position",
        (
            stored.originator_id,
            stored.originator_version,
            stored.event_id,
            stored.topic,
            stored.class_version,
            stored.occurred_at,
            stored.state,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _created(sid: UUID) -> SessionCreated:
    return SessionCreated(
        session_id=sid,
        version=1,
        occurred_at=datetime.now(UTC),
        event_id=uuid4(),
        tenant_id="acme",
        user_id="u",
        agent_id="a",
        channel="text",
    )


def _message(sid: UUID, version: int) -> MessageAdded:
    return MessageAdded(
        session_id=sid,
        version=version,
        occurred_at=datetime.now(UTC),
        event_id=uuid4(),
        message_id=f"m{version}",
        role="user",
        content=f"message {version}",
    )


def applied(views: ViewStore) -> int:
    return views.tracking("session_state", views.active_generation("session_state")).position


class Tail:
    """A reader tailing the log in a thread, as a live projection or the relay does."""

    def __init__(self, log: PostgresEventLog) -> None:
        self.log = log
        self.seen: list[RecordedEvent] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.cursor: LogCursor = LOG_START
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = self.log.read_log(self.cursor, limit=50)
                if batch:
                    self.seen.extend(batch)
                    self.cursor = batch[-1].cursor
                else:
                    self.stop.wait(0.005)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    @contextmanager
    def running(self) -> Iterator[Tail]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            self.thread.join(timeout=30)

    def wait_for(self, positions: set[int], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not positions <= {r.position for r in self.seen}:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the reader never saw every committed event"
            time.sleep(0.01)


def test_writers_committing_in_reverse_order_are_each_seen_once_in_session_order(
    pg_settings: Settings, pg_url: str
) -> None:
    """Five writers take their positions in order, then commit in reverse order with pauses,
    while appends through the store go on and a reader tails the log."""
    log = PostgresEventLog.open(pg_settings)
    store = build_store(pg_settings)
    writers = [_connect(pg_url, pg_settings) for _ in range(5)]
    try:
        with Tail(log).running() as tail:
            sessions = [uuid4() for _ in writers]
            positions: set[int] = set()
            for conn, sid in zip(writers, sessions, strict=True):
                positions.add(_insert(conn, log, _created(sid)))
                positions.add(_insert(conn, log, _message(sid, 2)))
            quick = store.create(tenant_id="acme", user_id="q", agent_id="a").session_id
            for n, conn in enumerate(reversed(writers)):
                # The reader may see the quick appends only once every writer below them ended.
                positions.add(store.add_message(quick, role="user", content=f"q{n}").position)
                time.sleep(0.05)  # a pause between commits, not a synchronisation
                conn.commit()
            tail.wait_for(positions)
        seen = [r.position for r in tail.seen]
        assert sorted(seen) == sorted(set(seen)), "an event was seen twice"
        assert positions <= set(seen)
        for sid in [*sessions, quick]:
            versions = [r.event.version for r in tail.seen if r.event.session_id == sid]
            assert versions == list(range(1, len(versions) + 1)), (sid, versions)
    finally:
        for conn in writers:
            conn.close()
        store.close()
        log.close()


def test_a_writer_holds_readers_back_until_it_commits_and_reports_its_age(
    pg_settings: Settings, pg_url: str
) -> None:
    log = PostgresEventLog.open(pg_settings)
    store = build_store(pg_settings)
    slow = _connect(pg_url, pg_settings)
    try:
        assert log.oldest_append_seconds() is None  # the neighbours do not write the log
        sid = uuid4()
        held = _insert(slow, log, _created(sid))
        later = store.create(tenant_id="acme", user_id="u", agent_id="a")
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            # Committed and visible to a plain SELECT, but below the horizon only once the
            # slower writer has ended: the reader waits rather than skip the earlier row.
            assert [r.position for r in log.read_log(LOG_START)] == []
            time.sleep(0.02)
        age = log.oldest_append_seconds()
        assert age is not None
        assert age >= 0.3
        slow.commit()
        assert [r.position for r in log.read_log(LOG_START)] == sorted([held, later.position])
        assert log.oldest_append_seconds() is None
        assert log.head().position == max(held, later.position)
    finally:
        slow.close()
        store.close()
        log.close()


def test_views_keep_up_beside_transactions_that_do_not_write_the_log(
    pg_settings: Settings, pg_url: str
) -> None:
    """Appends at about 200/s with a live runner, while a transaction holds an xid in another
    database and another one in this database reads and writes elsewhere (besides the two
    neighbours every test has): the views' lag stays far below a second."""
    other_db = psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres")
    same_db = psycopg.connect(pg_url)
    store = build_store(pg_settings)
    log = PostgresEventLog.open(pg_settings)
    views = open_views(pg_settings)
    stop = threading.Event()
    runner = ProjectionRunner(log, views, all_projections())
    live = threading.Thread(
        target=runner.run, args=(stop, TimerWaiter(stop)), kwargs={"poll_interval": 0.005}
    )
    try:
        other_db.execute("SELECT pg_current_xact_id()")
        same_db.execute("CREATE TEMP TABLE busy (n int)")
        same_db.execute("INSERT INTO busy VALUES (1)")  # writes, holds an xid, not the log
        live.start()
        sid = store.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        lags: list[float] = []
        for n in range(400):  # about two seconds at 200/s
            started = time.monotonic()
            position = store.add_message(sid, role="user", content=f"m{n}").position
            if n % 20 == 0:
                while (
                    views.tracking(
                        "session_state", views.active_generation("session_state")
                    ).position
                    < position
                ):
                    assert time.monotonic() - started < 10, "the view stopped following the log"
                    time.sleep(0.001)
                lags.append(time.monotonic() - started)
            time.sleep(max(0.0, 0.005 - (time.monotonic() - started)))
        lags.sort()
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        assert p99 < 1.0, f"lag p99 {p99:.3f} s (median {statistics.median(lags):.3f} s)"
    finally:
        stop.set()
        if live.is_alive():
            live.join(timeout=10)
        other_db.close()
        same_db.close()
        views.close()
        log.close()
        store.close()
