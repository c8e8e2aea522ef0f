"""Shared by the benchmarks: load a history made in memory into a PostgreSQL log with COPY."""

from __future__ import annotations

import psycopg
from psycopg import sql

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.ports import LOG_START


def copy_into_log(memory: MemoryEventLog, settings: Settings) -> int:
    """COPY every event of ``memory`` into the configured PostgreSQL log; return the count.

    Building the history with the domain in memory and COPYing it is ~50x faster than appending
    it one event at a time, and stores byte-for-byte what appends would have stored, hash chain
    included."""
    rows: list[tuple[object, ...]] = []
    cursor = LOG_START
    while page := memory.stored_rows(after=cursor, limit=10_000):
        rows.extend(
            (
                r.session_id,
                r.version,
                r.event_id,
                r.topic,
                r.class_version,
                r.tenant_id,
                r.occurred_at,
                r.state,
                r.hash,
            )
            for r in page
        )
        cursor = page[-1].cursor
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.database_schema))
        )
        with conn.cursor().copy(
            "COPY events (session_id, version, event_id, topic, class_version, tenant_id,"
            " occurred_at, state, hash) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
    return len(rows)
