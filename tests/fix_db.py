"""Database fixtures: a real PostgreSQL (own schema per test), a SQLite file, or memory.

PostgreSQL comes from SESSIONSTORE_TEST_DATABASE_URL (``make test`` makes sure one is running
and sets it). If it cannot be reached the tests FAIL, never skip: a suite that silently skips
its Postgres tests proves nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from sessionstore.adapters.bootstrap import migrate
from sessionstore.adapters.settings import Settings, load_settings

DEFAULT_TEST_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("SESSIONSTORE_TEST_DATABASE_URL", DEFAULT_TEST_URL)
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        pytest.fail(
            f"PostgreSQL not reachable at {url} ({e}). Run the tests with `make test`, which "
            "starts one, or set SESSIONSTORE_TEST_DATABASE_URL.",
            pytrace=False,
        )
    with neighbours(url):
        yield url


@contextmanager
def neighbours(url: str) -> Iterator[list[psycopg.Connection[Any]]]:
    """Other clients of a shared server, for the whole run: a transaction holding a transaction
    id open in another database and one in the test database that never touches the log. The
    store's readers must not wait for either (decisions.md §4), so every PostgreSQL test runs
    beside them."""
    other = conninfo_to_dict(url) | {"dbname": "postgres"}
    held = [psycopg.connect(**other), psycopg.connect(url)]
    try:
        for conn in held:
            conn.execute("SELECT pg_current_xact_id()")  # an xid: older than every append
        yield held
    finally:
        for conn in held:
            conn.close()


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_settings(pg_url: str) -> Iterator[Settings]:
    """Settings for a fresh, migrated schema of its own, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    settings = load_settings(database_url=pg_url, database_schema=schema, pool_max_size=12)
    migrate(settings)
    try:
        yield settings
    finally:
        drop_schema(pg_url, schema)


@pytest.fixture
def pg_bare_settings(pg_url: str) -> Iterator[Settings]:
    """Settings for a schema that has not been migrated (and may not exist yet)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield load_settings(database_url=pg_url, database_schema=schema)
    finally:
        drop_schema(pg_url, schema)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings for a fresh, migrated SQLite file."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'events.db'}")
    migrate(settings)
    return settings
