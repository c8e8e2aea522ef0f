"""SQLite view store: projection tables, tracking and batched writes (see sql_views)."""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Self
from uuid import UUID

import orjson
from eventsourcing import persistence as es
from eventsourcing.sqlite import SQLiteDatastore

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.sql.views import Cursor, Reader, SQLViewStore
from sessionstore.adapters.storage.sqlite.log import (
    format_time,
    open_datastore,
    parse_time,
    rejected,
)
from sessionstore.domain.errors import SchemaNotReady, StorageError, StorageRejected
from sessionstore.projections.base import ColumnType, Key, Table

_TO_DB: dict[ColumnType, Callable[[Any], Any]] = {
    "uuid": str,
    "timestamp": format_time,
    "date": date.isoformat,
    "json": lambda value: orjson.dumps(value).decode(),
    "bool": int,
}
_FROM_DB: dict[ColumnType, Callable[[Any], Any]] = {
    "uuid": UUID,
    "timestamp": parse_time,
    "date": date.fromisoformat,
    "json": orjson.loads,
    "bool": bool,
    "float": float,
}


class SQLiteViewStore(SQLViewStore):
    placeholder = "?"
    types: ClassVar[dict[ColumnType, str]] = {
        "uuid": "TEXT",
        "text": "TEXT",
        "int": "INTEGER",
        "float": "REAL",
        "bool": "INTEGER",
        "timestamp": "TEXT",
        "date": "TEXT",
        "json": "TEXT",
    }

    def __init__(
        self, datastore: SQLiteDatastore, *, where: str, lock_path: Path | None = None
    ) -> None:
        self.datastore = datastore
        self._known = {}
        self._reader_cache = {}
        self.where = where
        self.lock_path = lock_path
        self._thread_lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings) -> Self:
        path = settings.sqlite_path
        return cls(
            open_datastore(settings),
            where=f"SQLite file {path}",
            lock_path=path.with_name(path.name + ".feed-lock"),
        )

    @contextmanager
    def feed_lock(self) -> Iterator[None]:
        # An advisory file lock beside the database (threads of this process queue on a mutex
        # first: flock is per open file, not per thread); the OS frees it if the process dies.
        if self.lock_path is None:
            with self._thread_lock:
                yield
            return
        with self._thread_lock, self.lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def close(self) -> None:
        self.datastore.close()

    @contextmanager
    def _transaction(self, *, ddl: bool = False) -> Iterator[Cursor]:
        # BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a
        # transaction that reads before it writes can never fail on a lock upgrade.
        with self._translated(), self.datastore.get_connection(commit=True) as conn:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _reading(self) -> Iterator[Cursor]:
        with self._translated(), self.datastore.transaction(commit=False) as cur:
            yield cur

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.OperationalError, es.OperationalError) as e:
            if "no such table" in str(e):
                raise SchemaNotReady(f"{self.where}: {e}") from e
            if rejected(e):
                raise StorageRejected(f"{self.where}: value rejected: {e}") from e
            raise StorageError(f"{self.where}: database error: {e}") from e
        except (sqlite3.Error, es.PersistenceError, OverflowError) as e:
            if rejected(e):
                raise StorageRejected(f"{self.where}: value rejected: {e}") from e
            raise StorageError(f"{self.where}: database error: {e}") from e

    def _to_db(self, type_: ColumnType, value: Any) -> Any:
        convert = _TO_DB.get(type_)
        return value if value is None or convert is None else convert(value)

    def _reader(self, type_: ColumnType) -> Reader | None:
        return _FROM_DB.get(type_)

    def _from_db(self, type_: ColumnType, value: Any) -> Any:
        convert = _FROM_DB.get(type_)
        return value if value is None or convert is None else convert(value)

    def _load_query(self, table: Table, name: str, keys: Sequence[Key]) -> tuple[str, list[Any]]:
        columns = ", ".join(table.column_names)
        types = {c.name: c.type for c in table.columns}
        params = [
            self._to_db(types[k], part)
            for key in keys
            for k, part in zip(table.key, key, strict=True)
        ]
        if len(table.key) == 1:
            marks = ", ".join("?" for _ in keys)
            return f"SELECT {columns} FROM {name} WHERE {table.key[0]} IN ({marks})", params
        row = "(" + ", ".join("?" for _ in table.key) + ")"
        values = ", ".join(row for _ in keys)
        return (
            f"SELECT {columns} FROM {name} WHERE ({', '.join(table.key)}) IN (VALUES {values})",
            params,
        )

    def _insert_rows(self, cur: Cursor, table: Table, name: str, rows: list[list[Any]]) -> None:
        marks = ", ".join("?" for _ in table.columns)
        cur.executemany(
            f"INSERT INTO {name} ({', '.join(table.column_names)}) VALUES ({marks})", rows
        )
