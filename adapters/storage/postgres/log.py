"""PostgreSQL event log: the production backend (psycopg 3 + psycopg_pool via eventsourcing).

Connections come from the eventsourcing library's ``PostgresDatastore`` (a psycopg_pool pool in
autocommit mode), whose ``get_connection`` is the single place where psycopg errors become
library errors; ``_translated`` below is the single place where those become our domain errors.

An append is ONE statement, so one round trip and one implicit transaction: the idempotency key
(if any) and the events are inserted together or not at all. See migration 0001 for why the
log is read in (tx, position) order rather than by position alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self
from urllib.parse import unquote, urlsplit
from uuid import UUID

import orjson
import psycopg
import psycopg.errors
from eventsourcing import persistence as es
from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import TupleRow, tuple_row
from psycopg.sql import SQL, Identifier
from psycopg.types.json import set_json_loads

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.migrations import check_version, discover
from sessionstore.adapters.storage.postgres.notify import PostgresNotifier
from sessionstore.adapters.storage.postgres.refusals import explained, misconfiguration
from sessionstore.adapters.storage.serialization import SessionEventMapper, SessionStoredEvent
from sessionstore.adapters.storage.sql.log import (
    LastHashes,
    SQLEventLog,
    appended,
    chain_hashes,
    encode_batch,
    undecodable,
)
from sessionstore.domain.errors import (
    DatabaseMisconfigured,
    SchemaNotReady,
    StorageError,
    StorageRejected,
    StreamVersionTaken,
    UndecodableEvent,
)
from sessionstore.domain.ports import (
    LOG_START,
    AppendResult,
    IdempotencyClaim,
    LogCursor,
    RecordedEvent,
    StoredIdempotency,
    StoredRow,
)
from sessionstore.events.catalogue import SessionEvent

MIGRATIONS_PACKAGE = "sessionstore.adapters.storage.postgres.migrations"

_COLUMNS = (
    "position, tx::text::bigint, session_id, version, event_id, topic, class_version, "
    "tenant_id, occurred_at, recorded_at, state"
)

# One event (the common case): scalar parameters. Measured ~0.27 ms vs ~0.36 ms for the
# unnest() form below, which multi-event appends use.
_INSERT_EVENT = """
INSERT INTO events (session_id, version, event_id, topic, class_version, tenant_id, occurred_at,
                    state, hash)
VALUES (%(session_id)s, %(version)s, %(event_id)s, %(topic)s, %(class_version)s, %(tenant)s,
        %(occurred)s, %(state)s, %(hash)s)
RETURNING position
"""

_CLAIM = """
WITH claim AS (
    INSERT INTO idempotency_keys (key, session_id, request_hash, first_version, last_version)
    VALUES (%(key)s, %(session_id)s, %(request_hash)s, %(first_version)s, %(last_version)s)
    ON CONFLICT (key) DO NOTHING
    RETURNING key
)
"""

_INSERT_EVENT_WITH_KEY = (
    _CLAIM
    + """
INSERT INTO events (session_id, version, event_id, topic, class_version, tenant_id, occurred_at,
                    state, hash)
SELECT %(session_id)s, %(version)s, %(event_id)s, %(topic)s, %(class_version)s, %(tenant)s,
       %(occurred)s, %(state)s, %(hash)s
FROM claim
RETURNING position
"""
)

_INSERT_EVENTS = """
INSERT INTO events (session_id, version, event_id, topic, class_version, tenant_id, occurred_at,
                    state, hash)
SELECT * FROM unnest(%(session_ids)s::uuid[], %(versions)s::int[], %(event_ids)s::uuid[],
                     %(topics)s::text[], %(class_versions)s::smallint[], %(tenants)s::text[],
                     %(occurred)s::timestamptz[], %(states)s::bytea[], %(hashes)s::bytea[])
RETURNING position
"""

# The key row and the events in one statement: if the key is already taken, the claim CTE
# returns no row, the cross join yields nothing and no event is inserted; if an event version
# is taken, the whole statement fails and the key is not stored either.
_INSERT_EVENTS_WITH_KEY = (
    _CLAIM
    + """
INSERT INTO events (session_id, version, event_id, topic, class_version, tenant_id, occurred_at,
                    state, hash)
SELECT u.* FROM claim CROSS JOIN
    unnest(%(session_ids)s::uuid[], %(versions)s::int[], %(event_ids)s::uuid[],
           %(topics)s::text[], %(class_versions)s::smallint[], %(tenants)s::text[],
           %(occurred)s::timestamptz[], %(states)s::bytea[], %(hashes)s::bytea[]) AS u
RETURNING position
"""
)

_FIND_KEY = """
SELECT k.key, k.session_id, k.request_hash, k.first_version, k.last_version, e.position
FROM idempotency_keys k
JOIN events e ON e.session_id = k.session_id AND e.version = k.last_version
WHERE k.key = %s
"""

# The horizon of the log: no transaction that is writing this schema's `events` table and has a
# transaction id below it is still running, and every transaction that gets one later gets one
# at or above it. Rows below it can no longer be joined by a row that sorts before them, so a
# reader may move its cursor past them (trap 2 of a tailing reader; decisions.md §4).
#
# Why this is safe. Every transaction that inserts into events holds RowExclusiveLock on it
# until it ends, and takes that lock (when the statement starts) before it is given its
# transaction id (by the insert itself): a writer that has an id also shows the lock. So:
# - writers with an id below the snapshot's xmax that are still running are in pg_locks, with
#   that id (the transactionid lock every transaction holds on its own id, same
#   virtualtransaction), and bound the horizon;
# - writers without an id yet get one >= the xmax of this statement's snapshot;
# - writers that finished before pg_locks was read are visible to the NEXT statement's
#   snapshot — which is why the horizon is read in its own statement, before the rows.
# Transactions that do not write the log (another database, another schema, another
# application, an idle-in-transaction session) are not in this set, so they hold nothing back,
# unlike the cluster-wide pg_snapshot_xmin used before. pg_locks is readable by every role.
#
# pg_locks shows 32-bit transaction ids; the writer's id is rebuilt from the snapshot's 64-bit
# xmax (it is below xmax and within 2^31 of it; ids at or above xmax are left out: xmax bounds
# the horizon anyway).
_HORIZON = """
SELECT least(s.xmax, min(s.xmax - w.behind))
FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax) AS s
LEFT JOIN LATERAL (
    SELECT (s.xmax - t.transactionid::text::bigint) & 4294967295 AS behind
    FROM pg_locks AS l
    JOIN pg_locks AS t
      ON t.locktype = 'transactionid' AND t.virtualtransaction = l.virtualtransaction
    WHERE l.locktype = 'relation'
      AND l.mode = 'RowExclusiveLock'
      AND l.relation = 'events'::regclass
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS w ON w.behind BETWEEN 1 AND 2147483647
GROUP BY s.xmax
"""

# How long the oldest transaction still writing this log has been running (NULL when none is,
# or when its start is hidden from this role: pg_stat_activity shows other roles' sessions
# without it unless the role has pg_read_all_stats).
_OLDEST_APPEND = """
SELECT extract(epoch FROM clock_timestamp() - min(a.xact_start))
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'relation'
  AND l.mode = 'RowExclusiveLock'
  AND l.relation = 'events'::regclass
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid <> pg_backend_pid()
"""

# Only rows below the horizon, read in a statement AFTER the one that found it (see above).
_READ_LOG = f"""
SELECT {_COLUMNS} FROM events
WHERE (tx, position) > (%s::text::xid8, %s)
  AND tx < %s::text::xid8
ORDER BY tx, position
LIMIT %s
"""


REJECTED_CLASSES = ("22", "54")
"""SQLSTATE classes that refuse a value, not fail: 22 data exception (numeric_value_out_of_range,
character_not_in_repertoire, untranslatable_character, datetime_field_overflow, ...) and 54
program limit exceeded (a value too big for an index row or a jsonb)."""


def rejected(error: BaseException) -> bool:
    """Whether PostgreSQL (or psycopg, before sending) refused a value as invalid data: the
    same write fails again, so it is not a transient failure. psycopg raises DataError itself
    for text with a NUL character; the library wraps psycopg's errors with the original as
    the cause."""
    found: BaseException | None = error
    for _ in range(3):  # the error itself, the library's cause, its cause
        if found is None:
            return False
        if isinstance(found, psycopg.DataError | es.DataError):
            return True
        if isinstance(found, psycopg.Error) and (found.sqlstate or "")[:2] in REJECTED_CLASSES:
            return True
        found = found.__cause__
    return False


class SessionStoreDatastore(PostgresDatastore):
    """The library's datastore, plus ``search_path`` set to our schema on every connection, and
    the reason a connection cannot be had (the pool only says it timed out)."""

    @contextmanager
    def get_connection(self) -> Iterator[psycopg.Connection[Any]]:
        with explained(self.pool), super().get_connection() as conn:
            yield conn

    def after_connect_func(self) -> Callable[[psycopg.Connection[Any]], None]:
        library_setup = super().after_connect_func()
        set_search_path = SQL("SET search_path TO {}").format(Identifier(self.schema))

        def after_connect(conn: psycopg.Connection[Any]) -> None:
            library_setup(conn)
            conn.execute(set_search_path)
            # Timestamps come back in UTC with a fixed offset: cheap to normalise and compare.
            conn.execute("SET TIME ZONE 'UTC'")
            set_json_loads(orjson.loads, conn)  # jsonb view columns: orjson, not json

        return after_connect


def datastore_from_settings(settings: Settings) -> SessionStoreDatastore:
    url = urlsplit(settings.database_url)
    return SessionStoreDatastore(
        dbname=unquote(url.path.lstrip("/")) or "postgres",
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        user=unquote(url.username or "postgres"),
        password=unquote(url.password or ""),
        connect_timeout=settings.connect_timeout,
        # Never hold locks while a client stalls mid-transaction.
        idle_in_transaction_session_timeout=5,
        pool_size=settings.pool_min_size,
        max_overflow=max(0, settings.pool_max_size - settings.pool_min_size),
        schema=settings.database_schema,
        # Leave pool_open_timeout unset: with it, the library calls pool.wait() on EVERY
        # get_connection(), which blocks until min_size connections are idle and trips an
        # assertion in psycopg_pool when two threads do it at once (seen under 8 writers).
        # Unset, a missing server still surfaces as PoolTimeout after connect_timeout.
    )


class PostgresEventLog(SQLEventLog):
    """EventLog on PostgreSQL. Thread-safe: every call borrows a pooled connection."""

    placeholder = "%s"
    columns = _COLUMNS
    stored_columns = (
        "session_id, version, event_id, topic, class_version, tenant_id, occurred_at, state, "
        "position, tx::text::bigint, hash"
    )

    def __init__(
        self,
        datastore: SessionStoreDatastore,
        *,
        where: str,
        mapper: SessionEventMapper | None = None,
        notifier: PostgresNotifier | None = None,
    ) -> None:
        self.datastore = datastore
        self.mapper = mapper or SessionEventMapper()
        self.where = where
        self.notifier = notifier
        self._hashes = LastHashes()

    @classmethod
    def open(cls, settings: Settings) -> Self:
        """Connect and check the schema is migrated; raises StorageError / SchemaNotReady."""
        where = f"{settings.redacted_url()} (schema {settings.database_schema})"
        log = cls(
            datastore_from_settings(settings), where=where, notifier=PostgresNotifier(settings)
        )
        try:
            log.check_schema()
        except BaseException:
            log.close()
            raise
        return log

    def check_schema(self) -> None:
        with self._translated(), self.datastore.get_connection() as conn:
            try:
                row = conn.execute("SELECT max(version) AS v FROM schema_migrations").fetchone()
            except psycopg.errors.UndefinedTable:
                applied = None
            else:
                applied = row["v"] if row else None
        check_version(applied, discover(MIGRATIONS_PACKAGE), self.where)

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
        self.datastore.close()

    # -----------------------------------------------------------------------------------------

    def append(
        self,
        events: Sequence[SessionEvent],
        *,
        tenant_id: str,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        stored, session_id = encode_batch(self.mapper, events)
        previous = self._previous_hash(session_id, stored[0].originator_version - 1)
        hashes = chain_hashes(previous, stored, tenant_id)
        params: dict[str, Any]
        if len(stored) == 1:
            (one,) = stored
            params = {
                "session_id": one.originator_id,
                "version": one.originator_version,
                "event_id": one.event_id,
                "topic": one.topic,
                "class_version": one.class_version,
                "tenant": tenant_id,
                "occurred": one.occurred_at,
                "state": one.state,
                "hash": hashes[0],
            }
            statement = _INSERT_EVENT if idempotency is None else _INSERT_EVENT_WITH_KEY
        else:
            params = {
                "session_id": session_id,
                "session_ids": [s.originator_id for s in stored],
                "versions": [s.originator_version for s in stored],
                "event_ids": [s.event_id for s in stored],
                "topics": [s.topic for s in stored],
                "class_versions": [s.class_version for s in stored],
                "tenants": [tenant_id] * len(stored),
                "occurred": [s.occurred_at for s in stored],
                "states": [s.state for s in stored],
                "hashes": hashes,
            }
            statement = _INSERT_EVENTS if idempotency is None else _INSERT_EVENTS_WITH_KEY
        if idempotency is not None:
            params.update(
                key=idempotency.key,
                request_hash=idempotency.request_hash,
                first_version=stored[0].originator_version,
                last_version=stored[-1].originator_version,
            )
        with (
            self._translated(session_id, stored[0].originator_version),
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            cur.execute(statement, params, prepare=True)
            positions = [row[0] for row in cur.fetchall()]
        if not positions and idempotency is not None:
            # Only the key claim can make the insert empty: the key was already taken.
            self._key_taken(idempotency.key)
        self._hashes.put(session_id, stored[-1].originator_version, hashes[-1])
        if self.notifier is not None:
            self.notifier.poke()  # wake live projection runners (after the commit, off-path)
        return appended(session_id, stored, positions)

    def read_log(self, after: LogCursor = LOG_START, *, limit: int = 1000) -> list[RecordedEvent]:
        horizon = self.horizon()
        return self._select(
            _READ_LOG, [str(after.tx), after.position, str(horizon), limit], report=True
        )

    def horizon(self) -> int:
        """The log's horizon (see ``_HORIZON``): rows with a smaller ``tx`` are all committed and
        no row can later appear among them. Read it in its own statement, BEFORE the rows."""
        row = self._one(_HORIZON, ())
        if row is None or row[0] is None:  # pragma: no cover - the query always returns a row
            msg = f"{self.where}: could not read the log horizon"
            raise StorageError(msg)
        return int(row[0])

    def oldest_append_seconds(self) -> float | None:
        """Age of the oldest transaction still writing this log (it holds readers back), or
        None when none is (or when this role may not see when it started)."""
        row = self._one(_OLDEST_APPEND, ())
        return None if row is None or row[0] is None else float(row[0])

    def head(self) -> LogCursor:
        horizon = self.horizon()
        row = self._one(
            "SELECT tx::text::bigint, position FROM events WHERE tx < %s::text::xid8"
            " ORDER BY tx DESC, position DESC LIMIT 1",
            (str(horizon),),
        )
        return LOG_START if row is None else LogCursor(row[0], row[1])

    def count_after(self, cursor: LogCursor) -> int:
        row = self._one(
            "SELECT count(*) FROM events WHERE (tx, position) > (%s::text::xid8, %s)",
            (str(cursor.tx), cursor.position),
        )
        return int(row[0]) if row else 0

    def cursor_of(self, position: int) -> LogCursor | None:
        row = self._one(
            "SELECT tx::text::bigint, position FROM events WHERE position = %s", (position,)
        )
        return None if row is None else LogCursor(row[0], row[1])

    def locate(self, position: int) -> tuple[UUID, int] | None:
        row = self._one("SELECT session_id, version FROM events WHERE position = %s", (position,))
        return None if row is None else (row[0], int(row[1]))

    def locate_events(self, event_ids: Sequence[UUID]) -> dict[UUID, tuple[UUID, int, int]]:
        if not event_ids:
            return {}
        rows = self._raw(
            "SELECT event_id, session_id, version, position FROM events "
            "WHERE event_id = ANY(%s::uuid[])",
            [list(event_ids)],
        )
        return {r[0]: (r[1], int(r[2]), int(r[3])) for r in rows}

    def _one(self, query: str, params: Sequence[Any]) -> TupleRow | None:
        with (
            self._translated(),
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            return cur.execute(query, params, prepare=True).fetchone()

    def find_idempotency(self, key: str) -> StoredIdempotency | None:
        with (
            self._translated(),
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            row = cur.execute(_FIND_KEY, (key,), prepare=True).fetchone()
        return None if row is None else StoredIdempotency(*row)

    # -----------------------------------------------------------------------------------------

    def _session_param(self, session_id: UUID) -> object:
        return session_id

    def _raw(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        with (
            self._translated(),
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row, binary=True) as cur,
        ):
            return cur.execute(query, params).fetchall()

    def _write(self, query: str, params: Sequence[Any]) -> None:
        with (
            self._translated(),
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            cur.execute(query, params)

    def _write_returning(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        with (
            self._translated(),
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            return cur.execute(query, params).fetchall()

    def _log_window(self, after: LogCursor) -> tuple[str, str, list[Any]]:
        horizon = self.horizon()  # its own statement, before the caller's read of the rows
        return (
            "(tx, position) > (%s::text::xid8, %s) AND tx < %s::text::xid8",
            "tx, position",
            [str(after.tx), after.position, str(horizon)],
        )

    def _stored_row(self, row: Sequence[Any]) -> StoredRow:
        (session_id, version, event_id, topic, class_version, tenant_id, occurred_at, state,
         position, tx, hash_) = row  # fmt: skip
        return StoredRow(
            session_id, version, event_id, topic, class_version, tenant_id, occurred_at,
            bytes(state), position, tx, None if hash_ is None else bytes(hash_),
        )  # fmt: skip

    def _select(
        self, query: str, params: Sequence[Any], *, report: bool = False
    ) -> list[RecordedEvent]:
        # Binary results: uuid, timestamptz and bytea load in C without text parsing (~20 %
        # faster reads of the log, which rebuilds and catch-ups are bound by).
        with (
            self._translated(),
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row, binary=True) as cur,
        ):
            rows = cur.execute(query, params, prepare=True).fetchall()
        return self._decoded(rows, report=report)

    def _undecodable(
        self, row: Any, decoded: list[RecordedEvent], error: Exception
    ) -> UndecodableEvent:
        (position, tx, session_id, version, event_id, topic, class_version, tenant_id,
         _occurred, _recorded, state) = row  # fmt: skip
        return undecodable(
            decoded, error, cursor=LogCursor(int(tx), int(position)), session_id=session_id,
            version=version, event_id=event_id, topic=topic, tenant_id=tenant_id,
            class_version=class_version, state=state,
        )  # fmt: skip

    def _recorded(self, row: TupleRow) -> RecordedEvent:
        (position, tx, session_id, version, event_id, topic, class_version, tenant_id,
         occurred_at, recorded_at, state) = row  # fmt: skip
        stored = SessionStoredEvent(
            originator_id=session_id,
            originator_version=version,
            topic=topic,
            state=bytes(state),
            event_id=event_id,
            occurred_at=occurred_at,
            class_version=class_version,
        )
        return RecordedEvent(
            event=self.mapper.decode(stored),
            tenant_id=tenant_id,
            position=position,
            tx=tx,
            recorded_at=recorded_at,
        )

    @contextmanager
    def _translated(
        self, session_id: UUID | None = None, version: int | None = None
    ) -> Iterator[None]:
        """The one place where storage errors become domain errors; drivers never leak."""
        try:
            yield
        except es.IntegrityError as e:
            cause = e.__cause__
            constraint = cause.diag.constraint_name if isinstance(cause, psycopg.Error) else None
            if constraint == "events_pkey" and session_id is not None and version is not None:
                raise StreamVersionTaken(session_id, version) from None
            msg = f"{self.where}: integrity error ({constraint or 'unknown constraint'}): {e}"
            raise StorageError(msg, constraint=constraint) from e
        except es.ProgrammingError as e:
            if isinstance(e.__cause__, psycopg.errors.UndefinedTable):
                raise SchemaNotReady(f"{self.where}: {e}") from e
            raise StorageError(f"{self.where}: {e}") from e
        except (es.PersistenceError, psycopg.Error) as e:
            # psycopg errors raised outside the datastore's own choke point land here too
            refused = misconfiguration(e)
            if refused:
                raise DatabaseMisconfigured(f"{self.where}: {refused}") from e
            if rejected(e):
                raise StorageRejected(f"{self.where}: value rejected: {e}") from e
            raise StorageError(f"{self.where}: database error: {e}") from e
