"""The public API, used as the README shows it: ``import sessionstore`` and nothing deeper."""

from __future__ import annotations

from pathlib import Path

import pytest

import sessionstore


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> sessionstore.Settings:
    """Settings of an empty, unmigrated database of each backend."""
    if request.param == "postgres":
        bare: sessionstore.Settings = request.getfixturevalue("pg_bare_settings")
        return bare
    if request.param == "sqlite":
        return sessionstore.load_settings(database_url=f"sqlite:///{tmp_path / 'facade.db'}")
    return sessionstore.load_settings(database_url="memory://")


def test_append_through_the_store_and_read_through_the_views(
    settings: sessionstore.Settings,
) -> None:
    applied = sessionstore.migrate(settings=settings)
    assert ("0001_event_log" in applied) is (settings.backend != "memory")
    assert sessionstore.migrate(settings=settings) == []  # up to date: nothing more to apply
    store = sessionstore.open_store(settings=settings)
    assert isinstance(store, sessionstore.SessionStore)
    try:
        created = store.create(tenant_id="acme", user_id="u-1", agent_id="bot", channel="voice")
        written = store.add_message(created.session_id, role="user", content="hello")
        assert store.get(created.session_id).message_count == 1
        with pytest.raises(sessionstore.ConcurrencyConflict):
            store.add_message(created.session_id, role="user", content="x", expected_version=1)

        queries = sessionstore.open_queries(settings=settings, store=store)
        try:
            # No projection runner beside this test: the views know nothing until catch_up.
            with pytest.raises(sessionstore.SessionNotFound):
                queries.get_session(created.session_id)
            assert sessionstore.catch_up(queries) == 2
            queries.wait_for(written.position, timeout=5)
            found = queries.get_session(created.session_id, tenant_id="acme")
            assert found.state.message_count == 1
            assert [e.content for e in queries.last_messages(created.session_id, 5)] == ["hello"]
            with pytest.raises(sessionstore.SessionNotFound):
                queries.get_session(created.session_id, tenant_id="someone-else")
        finally:
            queries.close()
    finally:
        store.close()


def test_a_url_is_all_the_embedded_default_needs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'by-url.db'}"
    sessionstore.migrate(url)
    store = sessionstore.open_store(url)
    try:
        sid = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    finally:
        store.close()
    reopened = sessionstore.open_store(url)
    try:
        assert reopened.get(sid).tenant_id == "t"
    finally:
        reopened.close()


def test_url_and_settings_together_is_a_usage_error() -> None:
    with pytest.raises(TypeError, match="either url or settings"):
        sessionstore.open_store("memory://", settings=sessionstore.load_settings())


def test_a_bad_url_is_a_settings_error_naming_the_variable() -> None:
    with pytest.raises(sessionstore.SettingsError, match="SESSIONSTORE_DATABASE_URL"):
        sessionstore.open_store("mysql://localhost/db")


def test_an_unmigrated_sqlite_file_is_schema_not_ready(tmp_path: Path) -> None:
    with pytest.raises(sessionstore.SchemaNotReady):
        sessionstore.open_store(f"sqlite:///{tmp_path / 'empty.db'}").create(
            tenant_id="t", user_id="u", agent_id="a"
        )
