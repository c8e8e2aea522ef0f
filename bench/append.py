"""Append benchmark: SessionStore on PostgreSQL beside raw psycopg INSERTs of the same rows.

Reproduce with:  make bench            (or: .venv/bin/python bench/append.py --help)

Measures, in one run on one machine:
1. single-client append latency (median, p99) vs a raw one-row INSERT of the same row;
2. throughput with N concurrent writers vs raw INSERTs at the same concurrency (ratio);
3. append cost vs conversation length: the 10th and the 1000th message of one session, beside
   a "rewrite the whole session blob" baseline (how many session stores persist a session);
4. what the input contract's check adds to the single-client append median (same store with
   the check skipped, interleaved).
Targets (DESIGN.md): median <= 0.5 ms; N=8 ratio >= 0.6; message 1000 <= 1.2x message 10.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

from sessionstore.adapters.bootstrap import build_store, migrate
from sessionstore.adapters.settings import load_settings
from sessionstore.adapters.storage.serialization import SessionEventMapper
from sessionstore.domain.commands import AddMessage
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import MessageAdded

HASH = bytes(range(32))
CONTENT = "Sure — I can move your appointment to Thursday at 10:30. Shall I confirm it? " * 3


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


class RawWriter:
    """The ceiling: one-row autocommit INSERT of the same encoded row, with psycopg only."""

    def __init__(self, url: str, schema: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        self.mapper = SessionEventMapper()
        self.session_id = uuid.uuid4()
        self.version = 0

    def append(self) -> None:
        self.version += 1
        event = MessageAdded(
            session_id=self.session_id,
            version=self.version,
            occurred_at=datetime.now(UTC),
            event_id=uuid.uuid4(),
            message_id=str(uuid.uuid4()),
            role="user",
            content=CONTENT,
        )
        state = orjson.dumps(event.payload())
        self.conn.execute(
            "INSERT INTO events (session_id, version, event_id, topic, class_version, tenant_id,"
            " occurred_at, state, hash) VALUES (%s, %s, %s, %s, 1, 'bench', %s, %s, %s)",
            (
                event.session_id,
                event.version,
                event.event_id,
                event.topic,
                event.occurred_at,
                state,
                HASH,  # the same 32 bytes a chained row carries (computing it is ours to pay)
            ),
            prepare=True,
        )

    def close(self) -> None:
        self.conn.close()


class BlobWriter:
    """Baseline: keep the whole session as one JSON document and rewrite it on every message."""

    def __init__(self, url: str, schema: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS blob_sessions (id uuid PRIMARY KEY, doc bytea NOT NULL)"
        )
        self.id = uuid.uuid4()
        self.messages: list[dict[str, object]] = []
        self.conn.execute("INSERT INTO blob_sessions VALUES (%s, %s)", (self.id, b"[]"))

    def append(self) -> None:
        self.messages.append(
            {
                "id": str(uuid.uuid4()),
                "role": "user",
                "content": CONTENT,
                "at": datetime.now(UTC).isoformat(),
            }
        )
        self.conn.execute(
            "UPDATE blob_sessions SET doc = %s WHERE id = %s",
            (orjson.dumps(self.messages), self.id),
            prepare=True,
        )

    def close(self) -> None:
        self.conn.close()


def concurrent_rate(make: Callable[[], Callable[[], None]], writers: int, per_writer: int) -> float:
    appenders = [make() for _ in range(writers)]
    barrier = threading.Barrier(writers + 1)
    failures: list[BaseException] = []

    def run(append: Callable[[], None]) -> None:
        barrier.wait()
        try:
            for _ in range(per_writer):
                append()
        except BaseException as e:
            failures.append(e)
            raise

    threads = [threading.Thread(target=run, args=(a,)) for a in appenders]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        msg = f"{len(failures)} writer(s) failed; first: {failures[0]!r}"
        raise RuntimeError(msg)
    return writers * per_writer / elapsed


Row = tuple[str, str, str, str]


def single_client(store: SessionStore, url: str, schema: str, n: int) -> Row:
    raw = RawWriter(url, schema)
    sid = store.create(tenant_id="bench", user_id="u", agent_id="a").session_id
    timed(raw.append, 200)  # warm up (prepared statements, caches)
    timed(lambda: store.add_message(sid, role="user", content=CONTENT), 200)
    raw_lat = timed(raw.append, n)
    ours_lat = timed(lambda: store.add_message(sid, role="user", content=CONTENT), n)
    raw.close()
    raw_med, ours_med = statistics.median(raw_lat) * 1e3, statistics.median(ours_lat) * 1e3
    return (
        "single-client append, median",
        f"{ours_med:.3f} ms (p99 {percentile(ours_lat, 0.99) * 1e3:.3f})",
        f"{raw_med:.3f} ms (p99 {percentile(raw_lat, 0.99) * 1e3:.3f})",
        f"{ours_med / raw_med:.2f}x raw; target <= 0.5 ms -> "
        + ("met" if ours_med <= 0.5 else "NOT met"),
    )


def contract_cost(store: SessionStore, n: int) -> Row:
    """What the input contract (domain.contract) adds to an append: the same store with its
    check skipped, interleaved in blocks so both see the same machine load."""
    unchecked = SessionStore(store.log, limits=store.limits)
    unchecked._check_limits = lambda command: None  # type: ignore[method-assign]
    arguments = {"order_id": "A-1234", "items": [{"sku": "X", "qty": 2}], "note": CONTENT[:80]}
    calls = [{"id": "c1", "name": "lookup_order", "arguments": arguments}]

    def exchange(s: SessionStore, sid: uuid.UUID) -> list[float]:
        """A user message, a tool call and its result: three timed appends."""
        return [
            *timed(lambda: s.add_message(sid, role="user", content=CONTENT), 1),
            *timed(lambda: s.add_message(sid, role="assistant", tool_calls=calls), 1),
            *timed(lambda: s.add_message(sid, role="tool", tool_call_id="c1", content="ok"), 1),
        ]

    samples: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(max(1, n // 150)):
        for name, s in (("on", store), ("off", unchecked)):
            sid = s.create(tenant_id="bench", user_id="u", agent_id="a").session_id
            for _ in range(50):
                samples[name] += exchange(s, sid)
    command = AddMessage(role="assistant", tool_calls=calls)
    check = timed(lambda: store._check_limits(command), 5000)
    on, off = statistics.median(samples["on"]) * 1e3, statistics.median(samples["off"]) * 1e3
    cost = (on - off) / off
    return (
        "input contract: append median with / without the check",
        f"{on:.3f} ms (the check alone: {statistics.median(check) * 1e6:.1f} µs)",
        f"{off:.3f} ms",
        f"{cost:+.1%}; target < 5 % -> " + ("met" if cost < 0.05 else "NOT met"),
    )


def concurrent(store: SessionStore, url: str, schema: str, writers: int, per_writer: int) -> Row:
    def make_raw() -> Callable[[], None]:
        return RawWriter(url, schema).append

    def make_ours() -> Callable[[], None]:
        own = store.create(tenant_id="bench", user_id="u", agent_id="a").session_id

        def append() -> None:
            store.add_message(own, role="user", content=CONTENT)

        return append

    raw_rate = concurrent_rate(make_raw, writers, per_writer)
    ours_rate = concurrent_rate(make_ours, writers, per_writer)
    ratio = ours_rate / raw_rate
    return (
        f"{writers} writers (threads, one process), appends/s",
        f"{ours_rate:,.0f}",
        f"{raw_rate:,.0f}",
        f"{ratio:.2f}x raw; target >= 0.6 -> " + ("met" if ratio >= 0.6 else "NOT met"),
    )


def marks_of(append: Callable[[], object], window: int) -> dict[int, list[float]]:
    """Append times of the ``window`` appends starting at message 10 and at message 1000."""
    at: dict[int, list[float]] = {10: [], 1000: []}
    for i in range(1, 1000 + window):
        start = time.perf_counter()
        append()
        elapsed = time.perf_counter() - start
        for mark in (10, 1000):
            if mark <= i < mark + window:
                at[mark].append(elapsed)
    return at


def conversation_length(store: SessionStore, url: str, schema: str, window: int = 100) -> Row:
    """Median append time over ``window`` messages starting at message 10 and at message 1000."""
    # Measured one after the other: the blob baseline's growing rewrites load the server
    # (WAL, TOAST) and would slow whatever runs beside them.
    long_sid = store.create(tenant_id="bench", user_id="u", agent_id="a").session_id
    ours_at = marks_of(lambda: store.add_message(long_sid, role="user", content=CONTENT), window)
    blob = BlobWriter(url, schema)
    blob_at = marks_of(blob.append, window)
    blob.close()
    ours_growth = statistics.median(ours_at[1000]) / statistics.median(ours_at[10])
    blob_growth = statistics.median(blob_at[1000]) / statistics.median(blob_at[10])
    return (
        f"message 1000 vs message 10 (median of {window} appends from each)",
        f"{ours_growth:.2f}x",
        f"{blob_growth:.1f}x (blob rewrite)",
        "target <= 1.2x -> " + ("met" if ours_growth <= 1.2 else "NOT met"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "SESSIONSTORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--n", type=int, default=2000, help="appends for the latency test")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--per-writer", type=int, default=400)
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        database_url=args.url, database_schema=schema, pool_max_size=args.writers + 2
    )
    migrate(settings)
    store = build_store(settings)
    rows: list[Row] = []
    try:
        rows.append(single_client(store, args.url, schema, args.n))
        rows.append(contract_cost(store, args.n))
        rows.append(concurrent(store, args.url, schema, args.writers, args.per_writer))
        rows.append(conversation_length(store, args.url, schema))
    finally:
        store.close()
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    with psycopg.connect(args.url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    print(f"machine: {machine()}; PostgreSQL {row[0] if row else '?'}")
    print(f"command: python bench/append.py --n {args.n} --writers {args.writers} "
          f"--per-writer {args.per_writer}")  # fmt: skip
    print()
    print("| measure | sessionstore | baseline (same run) | verdict |")
    print("|---|---|---|---|")
    for measure, ours, base, verdict in rows:
        print(f"| {measure} | {ours} | {base} | {verdict} |")


if __name__ == "__main__":
    main()
