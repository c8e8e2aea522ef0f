"""HTTP append benchmark: the API over a real uvicorn process beside the same appends in-process.

Reproduce with:  make bench            (or: .venv/bin/python bench/http_bench.py --help)

Measures, in one run on one machine and one fresh PostgreSQL schema:
1. in-process: N threads, each appending messages to its own session through SessionStore;
2. over HTTP: N clients (httpx, keep-alive, one thread each) doing the same appends with
   ``POST /v1/sessions/{id}/messages`` against a uvicorn server process (one worker);
3. the floor of the HTTP stack: ``GET /healthz`` (no auth, no database) at the same concurrency;
4. a profile of the server process during a shorter HTTP run (cProfile in every thread, since
   the handlers run in worker threads), grouped by package: what the time goes to.
Reports appends/s, p50 and p99 latency, and the HTTP/in-process ratio.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from sessionstore.adapters.bootstrap import build_store, migrate, open_log
from sessionstore.adapters.http.keys import KeyStore
from sessionstore.adapters.settings import Settings, load_settings

sys.path.insert(0, str(Path(__file__).parent))
from append import CONTENT, machine, percentile

ROOT = Path(__file__).resolve().parent.parent

# The server, as a script so it can also run under the per-thread profiler.
LAUNCHER = """
import sys, threading, cProfile, uvicorn
from sessionstore.adapters.http.app import create_app
from sessionstore.adapters.settings import load_settings

port, profile_to = int(sys.argv[1]), sys.argv[2]
profiles = []
if profile_to:
    def start_profiling(*_args):
        # First event in a new thread: swap this Python-level hook for a C profiler.
        profiler = cProfile.Profile()
        profiles.append(profiler)
        profiler.enable()
    threading.setprofile(start_profiling)
    main_profiler = cProfile.Profile()
    profiles.append(main_profiler)
    main_profiler.enable()
uvicorn.run(create_app(load_settings()), host="127.0.0.1", port=port, log_level="warning",
            access_log=False)
if profile_to:
    import pstats
    stats = None
    for profiler in profiles:
        profiler.disable()
        stats = pstats.Stats(profiler) if stats is None else (stats.add(profiler) or stats)
    stats.dump_stats(profile_to)
"""

GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("sessionstore HTTP layer (adapters/http)", ("/adapters/http/",)),
    (
        "sessionstore store + log (domain, events, adapters)",
        ("/domain/", "/events/", "/adapters/", "/projections/"),
    ),
    ("psycopg + pool (incl. waiting on PostgreSQL)", ("psycopg",)),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("fastapi + starlette (routing, request/response)", ("fastapi", "starlette")),
    ("uvicorn + h11/httptools (HTTP parsing, I/O)", ("uvicorn", "h11", "httptools")),
    ("asyncio + anyio (event loop, thread hand-off)", ("asyncio", "anyio", "selectors")),
    ("orjson/json, threading, other stdlib", ("json", "threading", "queue", "/python3")),
]


def server_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
    env.update(
        SESSIONSTORE_DATABASE_URL=settings.database_url,
        SESSIONSTORE_DATABASE_SCHEMA=settings.database_schema,
        SESSIONSTORE_POOL_MAX_SIZE=str(settings.pool_max_size),
        PYTHONPATH=str(ROOT),
    )
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``uvicorn`` serving ``create_app`` in a child process (optionally profiled)."""

    def __init__(self, settings: Settings, profile_to: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.script = Path(tempfile.mkstemp(suffix="_http_bench_server.py")[1])
        self.script.write_text(LAUNCHER)
        self.process = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
            [sys.executable, str(self.script), str(self.port), profile_to],
            env=server_env(settings),
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    msg = "the server did not answer /healthz within 30 s"
                    raise RuntimeError(msg)
                try:
                    code = self.process.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                msg = f"the server exited with {code}"
                raise RuntimeError(msg)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly; profiles dump
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.script.unlink(missing_ok=True)


def run_clients(make: Callable[[int], Callable[[], None]], clients: int, per_client: int) -> Result:
    """Start ``clients`` threads at once, each calling its appender ``per_client`` times."""
    appenders = [make(i) for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        barrier.wait()
        out = latencies[i]
        try:
            for _ in range(per_client):
                start = time.perf_counter()
                appenders[i]()
                out.append(time.perf_counter() - start)
        except BaseException as e:
            failures.append(e)
            raise

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        msg = f"{len(failures)} client(s) failed; first: {failures[0]!r}"
        raise RuntimeError(msg)
    flat = [v for vs in latencies for v in vs]
    return Result(clients * per_client / elapsed, percentile(flat, 0.5), percentile(flat, 0.99))


class Result:
    def __init__(self, rate: float, p50: float, p99: float) -> None:
        self.rate, self.p50, self.p99 = rate, p50, p99

    def cells(self) -> tuple[str, str, str]:
        return f"{self.rate:,.0f}", f"{self.p50 * 1e3:.2f} ms", f"{self.p99 * 1e3:.2f} ms"


def in_process(settings: Settings, clients: int, per_client: int) -> Result:
    store = build_store(settings)
    try:

        def make(_: int) -> Callable[[], None]:
            sid = store.create(tenant_id="bench", user_id="u", agent_id="a").session_id

            def append() -> None:
                store.add_message(sid, role="user", content=CONTENT)

            return append

        run_clients(make, clients, max(20, per_client // 10))  # warm up
        return run_clients(make, clients, per_client)
    finally:
        store.close()


def over_http(url: str, token: str, clients: int, per_client: int, path: str = "") -> Result:
    """Appends (or, with ``path``, GETs of it) over ``clients`` keep-alive connections."""
    opened: list[httpx.Client] = []

    def make(_: int) -> Callable[[], None]:
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        opened.append(client)
        if path:

            def get() -> None:
                client.get(path).raise_for_status()

            return get
        created = client.post("/v1/sessions", json={"user_id": "u", "agent_id": "a"})
        created.raise_for_status()
        target = f"/v1/sessions/{created.json()['session_id']}/messages"
        body = {"role": "user", "content": CONTENT}

        def append() -> None:
            response = client.post(target, json=body)
            if response.status_code != 201:
                msg = f"append failed: {response.status_code} {response.text}"
                raise RuntimeError(msg)

        return append

    try:
        run_clients(make, clients, max(20, per_client // 10))  # warm up
        return run_clients(make, clients, per_client)
    finally:
        for client in opened:
            client.close()


def profile_breakdown(path: str, top: int = 12) -> list[tuple[str, float]]:
    """Share of the server's own time (tottime) by package group, largest first."""
    stats = pstats.Stats(path)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    idle = 0.0
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        if "acquire" in func or "select" in func or "wait" in func.lower():
            idle += tottime  # threads parked on locks, the selector or a queue: not work
            continue
        group = "other"
        for name, needles in GROUPS:
            if any(n in filename for n in needles):
                group = name
                break
        if filename == "~" and "sqlite3" in func:
            group = "sqlite3"
        elif filename == "~":
            group = "C calls: socket send/recv, os.urandom, ..."
        totals[group] = totals.get(group, 0.0) + tottime
    busy = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [(name, share / busy) for name, share in ranked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "SESSIONSTORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=300)
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        database_url=args.url, database_schema=schema, pool_max_size=args.clients + 2
    )
    migrate(settings)
    log = open_log(settings)
    try:
        _, token = KeyStore(log).create("bench", "agent", name="http bench")  # type: ignore[arg-type]
    finally:
        log.close()

    breakdown: list[tuple[str, float]] = []
    try:
        local = in_process(settings, args.clients, args.per_client)
        server = ServerProcess(settings)
        try:
            remote = over_http(server.url, token, args.clients, args.per_client)
            floor = over_http(server.url, token, args.clients, args.per_client, path="/healthz")
        finally:
            server.stop()
        if not args.no_profile:
            with tempfile.TemporaryDirectory() as tmp:
                out = str(Path(tmp) / "server.prof")
                profiled = ServerProcess(settings, profile_to=out)
                try:
                    over_http(profiled.url, token, args.clients, max(50, args.per_client // 3))
                finally:
                    profiled.stop()
                if Path(out).exists():
                    breakdown = profile_breakdown(out)
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    report(args.url, args.clients, args.per_client, (local, remote, floor), breakdown)


def report(
    url: str,
    clients: int,
    per_client: int,
    results: tuple[Result, Result, Result],
    breakdown: list[tuple[str, float]],
) -> None:
    local, remote, floor = results
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    print(f"machine: {machine()}; PostgreSQL {row[0] if row else '?'}")
    print(f"command: python bench/http_bench.py --clients {clients} --per-client {per_client}")
    print()
    print(f"| {clients} concurrent clients, append one message | appends/s | p50 | p99 |")
    print("|---|---|---|---|")
    for label, result in (
        ("in-process SessionStore (threads)", local),
        ("HTTP API, uvicorn 1 worker (httpx keep-alive)", remote),
        ("HTTP floor: GET /healthz, same clients", floor),
    ):
        print(f"| {label} | " + " | ".join(result.cells()) + " |")
    print()
    print(
        f"HTTP / in-process: throughput {remote.rate / local.rate:.2f}x, "
        f"p50 latency {remote.p50 / local.p50:.1f}x, p99 {remote.p99 / local.p99:.1f}x"
    )
    if breakdown:
        print()
        print("Where the server's busy time goes (cProfile of every server thread, tottime):")
        print()
        print("| part | share |")
        print("|---|---|")
        for name, share in breakdown:
            print(f"| {name} | {share:.0%} |")


if __name__ == "__main__":
    main()
