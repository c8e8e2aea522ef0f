"""Tamper evidence against real databases: change a stored byte, delete an event, reorder two
events, strip a hash — directly in SQL, past the immutability triggers, as an attacker with
database access would — and the verification names the exact session and version."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any, Protocol
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from sessionstore.adapters.bootstrap import build_store, open_log
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.chain import Auditable, create_checkpoint, verify
from sessionstore.domain.store import SessionStore


class Database(Protocol):
    def run(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...


class Postgres:
    """Runs SQL in the test's schema with the immutability triggers switched off."""

    def __init__(self, settings: Settings) -> None:
        self.conn = psycopg.connect(settings.database_url, autocommit=True)
        self.conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.database_schema))
        )
        self.conn.execute("ALTER TABLE events DISABLE TRIGGER USER")

    def run(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(statement.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []

    def close(self) -> None:
        self.conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
        self.conn.close()


class SQLite:
    def __init__(self, settings: Settings) -> None:
        self.conn = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        self.conn.execute("DROP TRIGGER events_no_update")
        self.conn.execute("DROP TRIGGER events_no_delete")

    def run(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(statement, params).fetchall()

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest) -> Settings:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        value: Settings = request.getfixturevalue("pg_settings")
    else:
        value = request.getfixturevalue("sqlite_settings")
    return value


@pytest.fixture
def sessions(settings: Settings) -> list[UUID]:
    """Two sessions of seven events each, written through the store."""
    store = build_store(settings)
    try:
        ids = [fill(store, n) for n in range(2)]
    finally:
        store.close()
    return ids


def fill(store: SessionStore, n: int) -> UUID:
    sid = store.create(tenant_id="acme", user_id=f"u{n}", agent_id="a").session_id
    store.add_message(sid, role="user", content="book a table for four")
    store.add_message(sid, role="assistant", tool_calls=[{"id": "c1", "name": "book"}])
    store.add_message(sid, role="tool", tool_call_id="c1", content='{"ok": true}')
    store.add_message(sid, role="assistant", content="Booked for Friday at 8.")
    store.record_turn(sid, request_id="r1", duration_ms=900)
    store.end(sid, status="completed")
    return sid


@pytest.fixture
def log(settings: Settings) -> Iterator[Auditable]:
    log = open_log(settings)
    yield log  # type: ignore[misc]
    log.close()


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db: Postgres | SQLite = (
        Postgres(settings) if settings.backend == "postgres" else SQLite(settings)
    )
    yield db
    db.close()


def sid_param(settings: Settings, sid: UUID) -> object:
    return sid if settings.backend == "postgres" else str(sid)


def test_an_untouched_log_verifies(log: Auditable, sessions: list[UUID]) -> None:
    report = verify(log)
    assert report.ok, report.breaks
    assert (report.sessions, report.events, report.unsealed_events) == (2, 14, 0)
    assert verify(log, sessions[0]).ok


def test_a_changed_byte_is_found_at_its_session_and_version(
    settings: Settings, log: Auditable, database: Database, sessions: list[UUID]
) -> None:
    victim = sid_param(settings, sessions[1])
    (state,) = database.run("SELECT state FROM events WHERE session_id = ? AND version = 5",
                            (victim,))[0]  # fmt: skip
    altered = bytes(state).replace(b"Friday", b"Monday")
    assert altered != bytes(state)
    database.run(
        "UPDATE events SET state = ? WHERE session_id = ? AND version = 5", (altered, victim)
    )

    report = verify(log)
    assert not report.ok
    first = report.first_break
    assert first is not None
    assert (first.session_id, first.version, first.kind) == (sessions[1], 5, "hash-mismatch")
    assert verify(log, sessions[0]).ok  # the other session is untouched


def test_a_deleted_event_is_found_where_it_is_missing(
    settings: Settings, log: Auditable, database: Database, sessions: list[UUID]
) -> None:
    victim = sid_param(settings, sessions[0])
    database.run("DELETE FROM events WHERE session_id = ? AND version = 3", (victim,))

    first = verify(log, sessions[0]).first_break
    assert first is not None
    assert (first.session_id, first.version, first.kind) == (sessions[0], 3, "missing-version")
    assert "found version 4" in first.detail


def test_two_reordered_events_are_found_at_the_first_of_them(
    settings: Settings, log: Auditable, database: Database, sessions: list[UUID]
) -> None:
    victim = sid_param(settings, sessions[0])
    # Swap versions 3 and 4 (through a free version number, the primary key forbids a clash).
    database.run("UPDATE events SET version = 1000 WHERE session_id = ? AND version = 3", (victim,))
    database.run("UPDATE events SET version = 3 WHERE session_id = ? AND version = 4", (victim,))
    database.run("UPDATE events SET version = 4 WHERE session_id = ? AND version = 1000", (victim,))

    first = verify(log).first_break
    assert first is not None
    assert (first.session_id, first.version, first.kind) == (sessions[0], 3, "hash-mismatch")


def test_a_stripped_hash_after_sealed_events_is_found(
    settings: Settings, log: Auditable, database: Database, sessions: list[UUID]
) -> None:
    victim = sid_param(settings, sessions[0])
    database.run("UPDATE events SET hash = NULL WHERE session_id = ? AND version = 6", (victim,))

    first = verify(log, sessions[0]).first_break
    assert first is not None
    assert (first.version, first.kind) == (6, "unsealed-after-sealed")


def test_deleting_a_sessions_last_event_needs_a_checkpoint_to_be_found(
    settings: Settings, log: Auditable, database: Database, sessions: list[UUID]
) -> None:
    checkpoint = create_checkpoint(log)
    assert checkpoint is not None
    assert checkpoint.events == 14
    assert create_checkpoint(log) is None  # nothing new since
    assert verify(log).checkpoints == 1

    victim = sid_param(settings, sessions[1])
    database.run("DELETE FROM events WHERE session_id = ? AND version = 7", (victim,))

    # The session's own chain is still consistent: it simply ends one event earlier ...
    assert verify(log, sessions[1]).ok
    # ... but the checkpoint covered 14 events and the log now has 13 there.
    report = verify(log)
    first = report.first_break
    assert first is not None
    assert first.kind == "checkpoint"
    assert "covered 14 events" in first.detail


def test_rows_written_before_hashing_are_continuity_checked_and_new_events_chain_on(
    settings: Settings, log: Auditable, database: Database
) -> None:
    writer = build_store(settings)
    try:
        sid = writer.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        writer.add_message(sid, role="user", content="hello")
    finally:
        writer.close()
    # As if both rows had been written before migration 0004 added the hash column.
    database.run("UPDATE events SET hash = NULL WHERE session_id = ?", (sid_param(settings, sid),))
    report = verify(log, sid)
    assert report.ok
    assert report.unsealed_events == 2

    later = build_store(settings)  # a new process: nothing cached
    try:
        later.add_message(sid, role="assistant", content="hi, how can I help?")
    finally:
        later.close()
    report = verify(log, sid)
    assert report.ok, report.breaks
    assert (report.events, report.unsealed_events) == (3, 2)
    stored = database.run(
        "SELECT hash FROM events WHERE session_id = ? ORDER BY version", (sid_param(settings, sid),)
    )
    assert [h is None for (h,) in stored] == [True, True, False]
