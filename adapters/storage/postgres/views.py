"""PostgreSQL view store: projection tables, tracking and batched writes (see sql_views)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import orjson
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.postgres.log import (
    PostgresEventLog,
    SessionStoreDatastore,
    datastore_from_settings,
)
from sessionstore.adapters.storage.sql.views import Cursor, Reader, SQLViewStore
from sessionstore.projections.base import ColumnType, Key, Table

_DDL_LOCK = 0x5E55_1058  # serialises projection DDL (generations) across processes
_FEED_LOCK = 0x5E55_1059  # one Kafka-fed worker at a time in a read-apply-write cycle
PIPELINE_MAX_INSERTS = 200
"""Commits with more append-only rows than this COPY them instead of pipelining INSERTs."""


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class PostgresViewStore(SQLViewStore):
    placeholder = "%s"
    types: ClassVar[dict[ColumnType, str]] = {
        "uuid": "uuid",
        "text": "text",
        "int": "bigint",
        "float": "double precision",
        "bool": "boolean",
        "timestamp": "timestamptz",
        "date": "date",
        "json": "jsonb",
    }

    def __init__(self, datastore: SessionStoreDatastore, *, where: str) -> None:
        self.datastore = datastore
        self._known = {}
        self._reader_cache = {}
        # The event log's error translation is the one choke point for this database too.
        self._errors = PostgresEventLog(datastore, where=where)

    @classmethod
    def open(cls, settings: Settings) -> Self:
        where = f"{settings.redacted_url()} (schema {settings.database_schema})"
        return cls(datastore_from_settings(settings), where=where)

    def close(self) -> None:
        self.datastore.close()

    @contextmanager
    def _transaction(self, *, ddl: bool = False, pipelined: bool = False) -> Iterator[Cursor]:
        with (
            self._errors._translated(),  # shared choke point
            self.datastore.get_connection() as conn,
            conn.pipeline() if pipelined else nullcontext(),
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            if ddl:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            yield cur

    def _write_transaction(self, inserts: int) -> AbstractContextManager[Cursor]:
        # A live batch: every statement is sent at once, so the transaction costs a round trip
        # or two instead of one per statement (psycopg pipeline mode). A rebuild's batch: COPY,
        # which cannot be pipelined.
        return self._transaction(pipelined=inserts <= PIPELINE_MAX_INSERTS)

    @contextmanager
    def feed_lock(self) -> Iterator[None]:
        # A session-level advisory lock on a connection held for the cycle (autocommit: no
        # transaction stays open); if the process dies the connection closes and frees it.
        with self._errors._translated(), self.datastore.get_connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_FEED_LOCK,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_FEED_LOCK,))

    @contextmanager
    def _reading(self) -> Iterator[Cursor]:
        with (
            self._errors._translated(),  # shared choke point
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row, binary=True) as cur,
        ):
            yield cur

    def _to_db(self, type_: ColumnType, value: Any) -> Any:
        if type_ == "json":
            return Jsonb(value, dumps=_json_text)
        return value

    def _reader(self, type_: ColumnType) -> Reader | None:
        # psycopg already returns the right Python types; only times are normalised to UTC.
        return _utc if type_ == "timestamp" else None

    def _from_db(self, type_: ColumnType, value: Any) -> Any:
        if type_ == "timestamp" and isinstance(value, datetime):
            return value.astimezone(UTC)
        return value

    def _load_query(self, table: Table, name: str, keys: Sequence[Key]) -> tuple[str, list[Any]]:
        columns = ", ".join(table.column_names)
        types = {c.name: self.types[c.type] for c in table.columns}
        if len(table.key) == 1:
            (k,) = table.key
            return (
                f"SELECT {columns} FROM {name} WHERE {k} = ANY(%s::{types[k]}[])",
                [[key[0] for key in keys]],
            )
        arrays = ", ".join(f"%s::{types[k]}[]" for k in table.key)
        return (
            f"SELECT {columns} FROM {name} WHERE ({', '.join(table.key)}) IN "
            f"(SELECT * FROM unnest({arrays}))",
            [[key[i] for key in keys] for i in range(len(table.key))],
        )

    def _insert_rows(self, cur: Cursor, table: Table, name: str, rows: list[list[Any]]) -> None:
        if cur.connection.pgconn.pipeline_status:  # type: ignore[attr-defined]
            # A live batch's few rows, queued in the pipeline (COPY cannot be pipelined).
            columns = ", ".join(table.column_names)
            marks = ", ".join("%s" for _ in table.column_names)
            cur.executemany(f"INSERT INTO {name} ({columns}) VALUES ({marks})", rows)
            return
        # COPY: the fastest way in for append-only rows (a rebuild writes many).
        with cur.copy(f"COPY {name} ({', '.join(table.column_names)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for row in rows:
                copy.write_row(row)
