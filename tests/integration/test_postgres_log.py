"""PostgreSQL-specific behaviour: concurrent writers, gap-safe log reading, schema handling."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from sessionstore.adapters.bootstrap import build_store, migrate
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.migrations import discover
from sessionstore.adapters.storage.postgres.log import PostgresEventLog
from sessionstore.domain.errors import ConcurrencyConflict, SchemaNotReady, StorageError
from sessionstore.domain.ports import LOG_START, AppendResult, LogCursor
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import SessionCreated
from tests.concurrency import run_together

pytestmark = pytest.mark.postgres


def test_two_threads_same_expected_version_exactly_one_wins(pg_settings: Settings) -> None:
    # Two stores = two processes with their own caches and pools; only the database arbitrates.
    first, second = build_store(pg_settings), build_store(pg_settings)
    try:
        sid = first.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        second.get(sid)  # warm the second cache too
        for round_no in range(20):
            version = first.get(sid).version
            outcomes = run_together(
                lambda v=version, n=round_no: first.add_message(
                    sid, role="user", content=f"A{n}", expected_version=v
                ),
                lambda v=version, n=round_no: second.add_message(
                    sid, role="user", content=f"B{n}", expected_version=v
                ),
            )
            wins = [o for o in outcomes if isinstance(o, AppendResult)]
            losses = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
            assert len(wins) == 1, outcomes
            assert len(losses) == 1, outcomes
            assert wins[0].version == version + 1
            assert (losses[0].expected_version, losses[0].actual_version) == (
                version,
                version + 1,
            )
        history = first.history(sid)
        assert [r.event.version for r in history] == list(range(1, 22))
    finally:
        first.close()
        second.close()


def test_concurrent_writers_without_expected_version_all_land_contiguously(
    pg_settings: Settings,
) -> None:
    stores = [build_store(pg_settings) for _ in range(4)]
    try:
        sid = stores[0].create(tenant_id="acme", user_id="u", agent_id="a").session_id

        def write(store: SessionStore, name: str) -> list[int]:
            return [
                store.add_message(sid, role="user", content=f"{name}-{i}").version
                for i in range(25)
            ]

        results = run_together(*[lambda s=s, n=n: write(s, n) for n, s in enumerate(stores)])
        assert all(isinstance(r, list) for r in results), results
        versions = sorted(v for r in results if isinstance(r, list) for v in r)
        assert versions == list(range(2, 102))
        history = stores[0].history(sid)
        assert [r.event.version for r in history] == list(range(1, 102))
        assert stores[0].get(sid).message_count == 100
    finally:
        for store in stores:
            store.close()


def test_log_reader_waits_for_an_earlier_open_transaction_instead_of_skipping_it(
    pg_settings: Settings, pg_url: str
) -> None:
    """An event whose transaction commits late still reaches a tailing reader."""
    log = PostgresEventLog.open(pg_settings)
    store = SessionStore(log)
    try:
        early = store.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        cursor = log.read_log(LOG_START)[-1].cursor

        # A writer that takes its position now but commits later (held open on purpose).
        slow = psycopg.connect(pg_url)
        slow.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_settings.database_schema))
        )
        late_sid = uuid4()
        late = SessionCreated(
            session_id=late_sid,
            version=1,
            occurred_at=datetime.now(UTC),
            event_id=uuid4(),
            tenant_id="acme",
            user_id="u",
            agent_id="a",
            channel="text",
        )
        stored = log.mapper.encode(late)
        slow.execute(
            "INSERT INTO events (session_id, version, event_id, topic, class_version, "
            "tenant_id, occurred_at, state) VALUES (%s, 1, %s, %s, 1, 'acme', %s, %s)",
            (late_sid, stored.event_id, stored.topic, stored.occurred_at, stored.state),
        )
        slow_position = slow.execute("SELECT max(position) FROM events").fetchone()
        assert slow_position is not None

        # Meanwhile another session appends and commits, with a HIGHER position.
        quick = store.add_message(early, role="user", content="committed first")
        assert quick.position > slow_position[0]

        # A reader must not move past the open transaction: it sees nothing yet.
        assert log.read_log(cursor) == []

        slow.commit()
        slow.close()
        seen = [(r.event.session_id, r.position) for r in log.read_log(cursor)]
        assert seen == [(late_sid, slow_position[0]), (early, quick.position)]
    finally:
        store.close()


def test_tailing_reader_sees_every_event_of_concurrent_writers_exactly_once(
    pg_settings: Settings,
) -> None:
    writers = [build_store(pg_settings) for _ in range(4)]
    reader = PostgresEventLog.open(pg_settings)
    per_writer = 60
    try:
        sessions = [
            w.create(tenant_id="acme", user_id=f"u{i}", agent_id="a").session_id
            for i, w in enumerate(writers)
        ]
        expected_total = len(writers) * (per_writer + 1)
        seen: list[tuple[UUID, int]] = []
        cursor: LogCursor = LOG_START

        def write(store: SessionStore, sid: UUID) -> None:
            for i in range(per_writer):
                store.add_message(sid, role="user", content=f"m{i}")

        threads = [
            threading.Thread(target=write, args=(w, s))
            for w, s in zip(writers, sessions, strict=True)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(seen) < expected_total and time.monotonic() < deadline:
            page = reader.read_log(cursor, limit=50)
            seen.extend((r.event.session_id, r.event.version) for r in page)
            if page:
                cursor = page[-1].cursor
        for t in threads:
            t.join()
        seen.extend(
            (r.event.session_id, r.event.version) for r in reader.read_log(cursor, limit=10_000)
        )

        assert len(seen) == expected_total
        assert len(set(seen)) == expected_total
        for sid in sessions:
            assert [v for s, v in seen if s == sid] == list(range(1, per_writer + 2))
    finally:
        reader.close()
        for w in writers:
            w.close()


def test_opening_an_unmigrated_schema_names_the_command(pg_bare_settings: Settings) -> None:
    with pytest.raises(SchemaNotReady, match="sessionstore db migrate"):
        PostgresEventLog.open(pg_bare_settings)


def test_an_unreachable_server_is_a_storage_error_naming_where(pg_url: str) -> None:
    settings = load_settings(
        database_url="postgresql://nobody:secret@127.0.0.1:1/nowhere", connect_timeout=1
    )
    with pytest.raises(StorageError) as caught:
        PostgresEventLog.open(settings)
    assert "127.0.0.1:1/nowhere" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_two_migrators_at_once_apply_each_migration_once(pg_bare_settings: Settings) -> None:
    outcomes = run_together(lambda: migrate(pg_bare_settings), lambda: migrate(pg_bare_settings))
    assert sorted(outcomes, key=len) == [
        [],
        [m.label for m in discover("sessionstore.adapters.storage.postgres.migrations")],
    ]
    PostgresEventLog.open(pg_bare_settings).close()


def test_the_database_refuses_to_change_or_delete_events(
    pg_settings: Settings, pg_url: str
) -> None:
    store = build_store(pg_settings)
    try:
        store.create(tenant_id="acme", user_id="u", agent_id="a")
    finally:
        store.close()
    schema = sql.Identifier(pg_settings.database_schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in ("UPDATE {}.events SET topic = 'x'", "DELETE FROM {}.events"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="immutable"):
                conn.execute(sql.SQL(statement).format(schema))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}.events").format(schema)).fetchone()
        assert row == (1,)
