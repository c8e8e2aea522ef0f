"""Query benchmark on PostgreSQL views, beside raw psycopg SELECTs of the same rows.

Reproduce with:  make bench   (or: .venv/bin/python bench/queries_bench.py --help)

Targets (DESIGN.md): get session state p99 < 1 ms at any history length; full transcript of
1,000 messages <= 2.5 ms; last 20 of 10,000 messages p99 < 1 ms; list 5,000 sessions <= 10 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg import sql
from seeding import copy_into_log

from sessionstore.adapters.bootstrap import migrate, open_log, open_queries, open_views
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.runner import ProjectionRunner


def timings(call: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(50, n)):
        call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def populate(settings: Settings, sessions: int) -> tuple[uuid.UUID, uuid.UUID]:
    """5,000 short sessions, one of 1,000 messages and one of 10,000, COPYed into the log."""
    memory = MemoryEventLog()
    store = SessionStore(memory, cache_size=10)
    for n in range(sessions):
        sid = store.create(tenant_id="t", user_id=f"u{n}", agent_id=f"a{n % 7}").session_id
        store.add_message(sid, role="user", content="hello")
        store.add_message(sid, role="assistant", content="hi, how can I help?")
    longs = []
    for length in (1_000, 10_000):
        sid = store.create(tenant_id="t", user_id="long", agent_id="a").session_id
        for i in range(length):
            role = "user" if i % 2 == 0 else "assistant"
            store.add_message(sid, role=role, content=f"message {i} " * 10)
        longs.append(sid)
    copy_into_log(memory, settings)
    log, views = open_log(settings), open_views(settings)
    ProjectionRunner(log, views, all_projections(), batch_size=5000).catch_up()
    views.close()
    log.close()
    return longs[0], longs[1]


def main() -> None:  # noqa: PLR0915 - one linear script of measures
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "SESSIONSTORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--n", type=int, default=500, help="repetitions per measure")
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    settings = load_settings(database_url=args.url, database_schema=schema)
    migrate(settings)
    rows: list[tuple[str, str, str, str]] = []
    try:
        thousand, ten_thousand = populate(settings, args.sessions)
        views = open_views(settings)
        queries = open_queries(settings, views)
        raw = psycopg.connect(args.url, autocommit=True)
        raw.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))

        def raw_rows(query: str, params: tuple[object, ...]) -> Callable[[], object]:
            return lambda: raw.execute(query, params, prepare=True).fetchall()

        def list_all() -> int:
            count, cursor = 0, None
            while True:
                page = queries.list_sessions(tenant_id="t", limit=500, cursor=cursor)
                count += len(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    return count

        def raw_list_all() -> int:
            count, after = 0, None
            while True:
                if after is None:
                    got = raw.execute(
                        "SELECT * FROM session_state WHERE tenant_id = %s "
                        "ORDER BY created_at, session_id LIMIT 500",
                        ("t",),
                    ).fetchall()
                else:
                    got = raw.execute(
                        "SELECT * FROM session_state WHERE tenant_id = %s AND "
                        "(created_at, session_id) > (%s, %s) ORDER BY created_at, session_id "
                        "LIMIT 500",
                        ("t", *after),
                    ).fetchall()
                count += len(got)
                if len(got) < 500:
                    return count
                after = (got[-1][8], got[-1][0])

        assert list_all() == args.sessions + 2
        measures: list[
            tuple[str, list[float], list[float], float, Callable[[list[float]], float]]
        ] = [
            (
                "get session state (10,000-message history), p99",
                timings(lambda: queries.get_session(ten_thousand), args.n),
                timings(
                    raw_rows("SELECT * FROM session_state WHERE session_id = %s", (ten_thousand,)),
                    args.n,
                ),
                1.0,
                p99,
            ),
            (
                "full transcript of 1,000 messages, median",
                timings(lambda: queries.transcript(thousand), max(20, args.n // 10)),
                timings(
                    raw_rows(
                        "SELECT * FROM transcript WHERE session_id = %s ORDER BY version, seq",
                        (thousand,),
                    ),
                    max(20, args.n // 10),
                ),
                2.5,
                statistics.median,
            ),
            (
                "last 20 of 10,000 messages, p99",
                timings(lambda: queries.last_messages(ten_thousand, 20), args.n),
                timings(
                    raw_rows(
                        "SELECT * FROM transcript WHERE session_id = %s "
                        "ORDER BY version DESC, seq DESC LIMIT 20",
                        (ten_thousand,),
                    ),
                    args.n,
                ),
                1.0,
                p99,
            ),
            (
                f"list all {args.sessions:,} sessions (pages of 500), median",
                timings(list_all, 20),
                timings(raw_list_all, 20),
                10.0,
                statistics.median,
            ),
            (
                "list: first page of 50, median",
                timings(lambda: queries.list_sessions(tenant_id="t", limit=50), args.n),
                timings(
                    raw_rows(
                        "SELECT * FROM session_state WHERE tenant_id = %s "
                        "ORDER BY created_at, session_id LIMIT 50",
                        ("t",),
                    ),
                    args.n,
                ),
                10.0,
                statistics.median,
            ),
        ]
        for name, ours, base, target, stat in measures:
            o, b = stat(ours), stat(base)
            verdict = "met" if o <= target else "NOT met"
            rows.append(
                (
                    name,
                    f"{o:.3f} ms",
                    f"{b:.3f} ms (raw psycopg)",
                    f"{o / b:.1f}x raw; target {target} ms -> {verdict}",
                )
            )
        raw.close()
        queries.close()
        views.close()
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    print(f"machine: {os.cpu_count()} cores; PostgreSQL views")
    print(f"command: python bench/queries_bench.py --sessions {args.sessions} --n {args.n}")
    print()
    print("| measure | sessionstore | baseline (same run) | verdict |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
