"""Projection benchmark: rebuild rate of all views beside the raw read+decode rate of the same
log, memory growth of a rebuild, and live lag from append to visible in the views.

Reproduce with:  make bench   (or: .venv/bin/python bench/views_bench.py --help)

Targets (DESIGN.md, issue "Projections"): rebuild >= 50,000 events/s across all views with flat
memory; live lag append -> visible p99 < 50 ms at 1,000 events/s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from seeding import copy_into_log

from sessionstore.adapters.bootstrap import build_store, migrate, open_log, open_views, open_waiter
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.ports import LogCursor
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.base import Batch, Projection, Tracking, ViewStore
from sessionstore.projections.runner import ProjectionRunner, rebuild

READ_SQL = (
    "SELECT position, tx::text::bigint, session_id, version, event_id, topic, class_version,"
    " tenant_id, occurred_at, recorded_at, state FROM events"
    " WHERE (tx, position) > (%s::text::xid8, %s)"
    " AND tx < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx, position LIMIT %s"
)


def generate(settings: Settings, sessions: int, turns: int, seed: int) -> int:
    """Make a realistic history with the domain (in memory, fast), then COPY it into the log."""
    rng = random.Random(seed)
    memory = MemoryEventLog()
    store = SessionStore(memory, cache_size=100)
    for n in range(sessions):
        sid = store.create(tenant_id=f"t{n % 5}", user_id=f"u{n}", agent_id=f"a{n % 7}").session_id
        for turn in range(turns):
            store.add_message(sid, role="user", content=f"question {turn} " * 8)
            if rng.random() < 0.3:
                store.add_message(
                    sid, role="assistant", tool_calls=[{"id": f"c{turn}", "name": "lookup"}]
                )
                store.add_message(sid, role="tool", tool_call_id=f"c{turn}", content='{"ok":1}')
            store.add_message(sid, role="assistant", content=f"answer {turn} " * 12)
            store.record_turn(
                sid, request_id=f"r{turn}", duration_ms=rng.uniform(200, 3000), llm_ms=150
            )
            if rng.random() < 0.1:
                store.update_context(sid, set={"turn": turn})
        store.end(sid, status=rng.choice(["completed", "failed", "abandoned"]))
    return copy_into_log(memory, settings)


def raw_read_decode(settings: Settings, batch: int) -> float:
    """The ceiling: page through the log with psycopg and orjson-decode every state."""
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.database_schema))
        )
        start, count, cursor = time.perf_counter(), 0, (0, 0)
        while True:
            rows = conn.execute(
                READ_SQL, (str(cursor[0]), cursor[1], batch), prepare=True
            ).fetchall()
            if not rows:
                break
            for row in rows:
                orjson.loads(row[10])
            count += len(rows)
            cursor = (rows[-1][1], rows[-1][0])
        return count / (time.perf_counter() - start)


def peak_rss_mb() -> float:
    """This process's resident high-water mark (VmHWM: reset by exec, unlike ru_maxrss, which
    a spawned child inherits from its parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rebuild_child(settings: Settings, batch: int, out: Queue[tuple[float, float, float]]) -> None:
    log, views = open_log(settings), open_views(settings)
    try:
        start = time.perf_counter()
        applied = rebuild(log, views, all_projections(), batch_size=batch)
        elapsed = time.perf_counter() - start
        peak_mb = peak_rss_mb()
        out.put((applied / elapsed, peak_mb, elapsed))
    finally:
        views.close()
        log.close()


def rebuild_all(settings: Settings, batch: int) -> tuple[float, float, float]:
    """Rebuild every view in a fresh process: (events/s, that process's peak RSS MB, seconds)."""
    context = multiprocessing.get_context("spawn")
    out: Queue[tuple[float, float, float]] = context.Queue()
    child = context.Process(target=_rebuild_child, args=(settings, batch, out))
    child.start()
    result = out.get(timeout=600)
    child.join()
    return result


class TimedViews:
    """Wraps a ViewStore to record when each tracking move committed."""

    def __init__(self, inner: ViewStore) -> None:
        self.inner = inner
        self.commits: list[tuple[float, LogCursor]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def commit(
        self,
        writes: Sequence[tuple[Projection, int, Batch]],
        moves: Sequence[tuple[Tracking, LogCursor]],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.inner.commit(writes, moves, *args, **kwargs)
        if moves:
            self.commits.append((time.perf_counter(), min(new for _, new in moves)))


def live_lag(settings: Settings, rate: int, seconds: float) -> tuple[float, float, int]:
    log, views = open_log(settings), open_views(settings)
    timed = TimedViews(views)
    runner = ProjectionRunner(log, timed, all_projections(), batch_size=500)  # type: ignore[arg-type]
    runner.catch_up()
    stop = threading.Event()
    waiter = open_waiter(settings, stop)
    live = threading.Thread(target=runner.run, args=(stop, waiter), kwargs={"poll_interval": 0.5})
    live.start()
    store = build_store(settings)
    appended: list[tuple[float, int]] = []
    try:
        sid = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        interval = 1.0 / rate
        next_at = time.perf_counter()
        end = next_at + seconds
        while next_at < end:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            result = store.add_message(sid, role="user", content="hello " * 10)
            appended.append((time.perf_counter(), result.position))
            next_at += interval
        final = log.cursor_of(appended[-1][1])
        deadline = time.monotonic() + 30
        while final is not None and (not timed.commits or timed.commits[-1][1] < final):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
    finally:
        stop.set()
        live.join()
        waiter.close()
        store.close()
    lags = []
    for done_at, position in appended:
        cursor = log.cursor_of(position)
        visible = next((t for t, c in timed.commits if cursor is not None and c >= cursor), None)
        if visible is not None:
            lags.append(max(0.0, visible - done_at) * 1000)
    views.close()
    log.close()
    lags.sort()
    return statistics.median(lags), lags[int(len(lags) * 0.99) - 1], len(appended) - len(lags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "SESSIONSTORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=1000, help="appends/s for the live lag test")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    results = []
    for scale in (1, 2):
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        settings = load_settings(database_url=args.url, database_schema=schema)
        migrate(settings)
        try:
            events = generate(settings, args.sessions * scale, args.turns, seed=scale)
            raw = raw_read_decode(settings, args.batch)
            rate, growth, elapsed = rebuild_all(settings, args.batch)
            results.append((events, raw, rate, growth, elapsed))
            if scale == 1:
                lag = live_lag(settings, args.rate, args.seconds)
        finally:
            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    with psycopg.connect(args.url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    print(f"machine: {os.cpu_count()} cores; PostgreSQL {row[0] if row else '?'}")
    print(f"command: python bench/views_bench.py --sessions {args.sessions} --turns {args.turns} "
          f"--batch {args.batch} --rate {args.rate} --seconds {args.seconds}")  # fmt: skip
    print()
    print("| measure | sessionstore | baseline (same run) | verdict |")
    print("|---|---|---|---|")
    for events, raw, rate, _peak, elapsed in results:
        print(
            f"| rebuild all 4 views, {events:,} events | {rate:,.0f} events/s ({elapsed:.1f} s) "
            f"| raw read+orjson decode {raw:,.0f} events/s | {rate / raw:.2f}x raw; target >= 50k/s"
            f" -> {'met' if rate >= 50_000 else 'NOT met'} |"
        )
    (small, _, _, small_mb, _), (large, _, _, large_mb, _) = results
    print(
        f"| rebuild process peak RSS | {small_mb:.0f} MB at {small:,} events, {large_mb:.0f} MB at"
        f" {large:,} | - | {large_mb / small_mb:.2f}x memory for {large / small:.1f}x events |"
    )
    median, p99, missing = lag
    print(
        f"| live lag append -> visible at {args.rate}/s | median {median:.1f} ms, p99 {p99:.1f} ms"
        f" | - | target p99 < 50 ms -> {'met' if p99 < 50 and not missing else 'NOT met'}"
        f"{f' ({missing} never seen)' if missing else ''} |"
    )


if __name__ == "__main__":
    main()
