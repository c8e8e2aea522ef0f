"""SQLite-specific behaviour: concurrent writers on one file, schema handling, immutability."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sessionstore.adapters.bootstrap import build_store, migrate
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.migrations import discover
from sessionstore.adapters.storage.sqlite.log import SQLiteEventLog
from sessionstore.domain.errors import ConcurrencyConflict, SchemaNotReady, StorageError
from sessionstore.domain.ports import AppendResult
from tests.concurrency import run_together


def test_two_stores_same_expected_version_exactly_one_wins(sqlite_settings: Settings) -> None:
    first, second = build_store(sqlite_settings), build_store(sqlite_settings)
    try:
        sid = first.create(tenant_id="acme", user_id="u", agent_id="a").session_id
        second.get(sid)
        for round_no in range(10):
            version = first.get(sid).version
            outcomes = run_together(
                lambda v=version, n=round_no: first.add_message(
                    sid, role="user", content=f"A{n}", expected_version=v
                ),
                lambda v=version, n=round_no: second.add_message(
                    sid, role="user", content=f"B{n}", expected_version=v
                ),
            )
            assert sorted(type(o).__name__ for o in outcomes) == [
                "AppendResult",
                "ConcurrencyConflict",
            ], outcomes
            win = next(o for o in outcomes if isinstance(o, AppendResult))
            loss = next(o for o in outcomes if isinstance(o, ConcurrencyConflict))
            assert win.version == version + 1
            assert (loss.expected_version, loss.actual_version) == (version, version + 1)
        assert [r.event.version for r in first.history(sid)] == list(range(1, 12))
    finally:
        first.close()
        second.close()


def test_a_missing_file_is_not_created_by_opening_it(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'new.db'}")
    with pytest.raises(SchemaNotReady, match="sessionstore db migrate"):
        SQLiteEventLog.open(settings)
    assert not (tmp_path / "new.db").exists()


def test_an_unmigrated_file_names_the_command(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    settings = load_settings(database_url=f"sqlite:///{path}")
    with pytest.raises(SchemaNotReady, match="sessionstore db migrate"):
        SQLiteEventLog.open(settings)


def test_a_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'nope' / 'x.db'}")
    with pytest.raises(StorageError, match="does not exist"):
        migrate(settings)


def test_migrating_twice_applies_nothing_the_second_time(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    outcomes = run_together(lambda: migrate(settings), lambda: migrate(settings))
    assert sorted(outcomes, key=len) == [
        [],
        [m.label for m in discover("sessionstore.adapters.storage.sqlite.migrations")],
    ]
    assert migrate(settings) == []


def test_the_file_refuses_to_change_or_delete_events(sqlite_settings: Settings) -> None:
    store = build_store(sqlite_settings)
    try:
        store.create(tenant_id="acme", user_id="u", agent_id="a")
    finally:
        store.close()
    with sqlite3.connect(sqlite_settings.sqlite_path) as conn:
        for statement in ("UPDATE events SET topic = 'x'", "DELETE FROM events"):
            with pytest.raises(sqlite3.IntegrityError, match="immutable"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
