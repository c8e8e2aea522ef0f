"""Kafka benchmark: relay throughput beside the raw producer, and the lag Kafka adds to the views.

Reproduce with:  make bench            (or: .venv/bin/python bench/kafka_bench.py --help)

Measures, in one run on one machine, against a Tansu broker started here (or --kafka host:port):
1. relay throughput: ``Relay.catch_up()`` publishing a seeded log of ~50k realistic events to a
   fresh topic (reading PostgreSQL, encoding, producing with acks=all and the idempotent
   producer, waiting for the acknowledgements, saving its position), beside the raw kafka-python
   producer with the same settings sending the same messages, encoded beforehand, to another
   fresh topic, then flushing. Runs alternate; the medians are reported, with the range.
2. end-to-end lag append -> visible in the views at a steady rate, through ``sessionstore relay``
   and ``sessionstore projections run --source kafka`` (each its own process, as deployed),
   beside ``sessionstore projections run`` (log-fed, LISTEN/NOTIFY) on another fresh schema in
   the same run: p50, p95, p99 and max, as seen by a thread polling the ``session_state`` view
   (1 ms sleep between queries; the report gives the mean poll period). For the Kafka path, also
   the part up to the relay's saved position (moved after the brokers' acknowledgements), seen by
   the same poller.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import logging
import os
import pstats
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.kafka_broker
sys.path.insert(1, str(Path(__file__).resolve().parent))  # the other benchmarks' helpers
from append import CONTENT, machine, percentile
from views_bench import generate

from sessionstore.adapters.bootstrap import build_store, migrate, open_log
from sessionstore.adapters.kafka.messages import Message, encode
from sessionstore.adapters.kafka.relay import (
    Relay,
    ensure_topic,
    open_producer,
    relay_positions,
)
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.domain.ports import LOG_START, EventLog, LogCursor
from sessionstore.domain.store import SessionStore
from tests.kafka_broker import TansuBroker

START = time.perf_counter()


def say(line: str) -> None:
    """Progress, on stderr (stdout carries the report)."""
    print(f"[{time.perf_counter() - START:6.1f} s] {line}", file=sys.stderr, flush=True)


def tag() -> str:
    return uuid.uuid4().hex[:10]


@contextmanager
def fresh_schema(url: str, **settings: Any) -> Iterator[Settings]:
    """A migrated throwaway schema, dropped on the way out."""
    schema = f"bench_{tag()}"
    configured = load_settings(database_url=url, database_schema=schema, **settings)
    try:
        migrate(configured)
        yield configured
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- 1. relay throughput ---------------------------------------------------------------------------


def encoded_log(log: EventLog) -> list[Message]:
    """Every event of the log as the relay would produce it (not timed)."""
    messages: list[Message] = []
    cursor = LOG_START
    while page := log.read_log(cursor, limit=5000):
        messages.extend(encode(recorded) for recorded in page)
        cursor = page[-1].cursor
    return messages


def raw_produce(settings: Settings, messages: list[Message]) -> float:
    """The ceiling: the same producer settings, the same messages, one flush at the end."""
    topic = f"bench-raw-{tag()}"
    ensure_topic(settings, topic)
    start = time.perf_counter()
    producer = open_producer(settings)
    futures = [producer.send(topic, key=m.key, value=m.value, headers=m.headers) for m in messages]
    producer.flush(timeout=settings.kafka_timeout_seconds * 4)
    elapsed = time.perf_counter() - start
    producer.close()
    failed = sum(1 for f in futures if not f.is_done or f.failed())
    if failed:
        msg = f"raw producer: {failed} of {len(messages)} messages not acknowledged"
        raise RuntimeError(msg)
    return len(messages) / elapsed


def relay_catch_up(settings: Settings, log: EventLog, batch: int, expected: int) -> float:
    """``Relay.catch_up()`` from position 0 to a fresh topic; events/s."""
    topic = f"bench-relay-{tag()}"
    ensure_topic(settings, topic)
    relay = Relay(log, relay_positions(settings, log), settings, topic=topic, batch_size=batch)
    start = time.perf_counter()
    published = relay.catch_up()
    elapsed = time.perf_counter() - start
    relay.close()
    if published != expected or relay.status().published != expected:
        msg = f"relay published {published} of {expected} events"
        raise RuntimeError(msg)
    return published / elapsed


PROFILED = {
    "read the log (read_log)": ("postgres/log.py", "read_log"),
    "encode the messages (encode)": ("messages.py", "encode"),
    "producer.send": ("kafka.py", "send"),
    "producer.flush (wait for the acks)": ("kafka.py", "flush"),
    "read the position (positions.get)": ("relay.py", "get"),
    "save the position (positions.advance)": ("relay.py", "advance"),
}


def profile_relay(settings: Settings, log: EventLog, batch: int, top: int) -> None:
    """cProfile one catch-up: the relay's own thread only (kafka-python's sender thread, which
    does the network I/O, is not in it, but it holds the GIL some of the time)."""
    topic = f"bench-profile-{tag()}"
    ensure_topic(settings, topic)
    relay = Relay(log, relay_positions(settings, log), settings, topic=topic, batch_size=batch)
    profiler = cProfile.Profile()
    profiler.enable()
    relay.catch_up()
    profiler.disable()
    relay.close()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    total = max(ct for _, _, _, ct, _ in raw.values())
    print(f"\nprofile of one relay catch-up, batch {batch}: {total:.2f} s in the relay thread")
    for label, (file, function) in PROFILED.items():
        spent = sum(
            ct
            for (f, _, name), (_, _, _, ct, _) in raw.items()
            if f.endswith(file) and name == function
        )
        print(f"  {label:40} {spent:6.2f} s  {spent / total:5.1%}")
    print(f"\ntop {top} functions by own time:")
    stats.sort_stats("tottime").print_stats(top)


@dataclass
class Throughput:
    raw: list[float]
    relay: dict[int, list[float]]


def throughput(settings: Settings, log: EventLog, batches: list[int], runs: int) -> Throughput:
    messages = encoded_log(log)
    result = Throughput([], {b: [] for b in batches})
    for run in range(1, runs + 1):
        result.raw.append(raw_produce(settings, messages))
        for batch in batches:
            result.relay[batch].append(relay_catch_up(settings, log, batch, len(messages)))
        relay = ", ".join(f"batch {b} {rates[-1]:,.0f}/s" for b, rates in result.relay.items())
        say(f"  run {run}: raw {result.raw[-1]:,.0f}/s, relay {relay}")
    return result


# -- 2. end-to-end lag -----------------------------------------------------------------------------


class ViewPoller:
    """Polls ``session_state`` for the given sessions (sleeping ``interval`` between queries)
    and records when each (session, version) was first visible, and when the relay's saved
    position (moved after the brokers' acknowledgements) moved."""

    def __init__(self, settings: Settings, sessions: list[uuid.UUID], interval: float) -> None:
        self.conn = psycopg.connect(settings.database_url, autocommit=True)
        self.conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.database_schema))
        )
        self.sessions = sessions
        self.interval = interval
        self.latest: dict[uuid.UUID, int] = dict.fromkeys(sessions, 0)
        self.seen: dict[tuple[uuid.UUID, int], float] = {}
        self.relay_moves: list[tuple[float, LogCursor]] = []
        self.polls = 0
        self.started = self.stopped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="view-poller")

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        self.started = time.perf_counter()
        query = "SELECT session_id, version FROM session_state WHERE session_id = ANY(%s)"
        relay = "SELECT max(tx), max(position) FROM relay_positions"
        while not self._stop.is_set():
            # The time before the query: the snapshot it reads is taken just after.
            at = time.perf_counter()
            rows = self.conn.execute(query, (self.sessions,), prepare=True).fetchall()
            moved = self.conn.execute(relay, prepare=True).fetchone()
            if moved and moved[0] is not None:
                cursor = LogCursor(moved[0], moved[1])
                if not self.relay_moves or self.relay_moves[-1][1] != cursor:
                    self.relay_moves.append((at, cursor))
            self.polls += 1
            for sid, version in rows:
                for v in range(self.latest[sid] + 1, version + 1):
                    self.seen[sid, v] = at
                self.latest[sid] = max(self.latest[sid], version)
            time.sleep(self.interval)
        self.stopped = time.perf_counter()

    def wait_for(
        self, wanted: dict[uuid.UUID, int], timeout: float, projecting: Projecting
    ) -> bool:
        deadline = time.monotonic() + timeout
        while any(self.latest[sid] < v for sid, v in wanted.items()):
            projecting.check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


@dataclass
class Lag:
    lags_ms: list[float]
    relay_ms: list[float]
    """Kafka only: append -> the relay saved a position past it (the broker acknowledged it)."""
    appended: int
    missing: int
    poll_ms: float

    def at(self, p: float) -> float:
        return percentile(self.lags_ms, p)

    def cell(self) -> str:
        if not self.lags_ms:
            return f"none of {self.appended} appends became visible"
        missing = f"; {self.missing} never seen" if self.missing else ""
        relay = (
            f" (of which append -> acknowledged by the broker: p50 "
            f"{percentile(self.relay_ms, 0.5):.1f} / p99 {percentile(self.relay_ms, 0.99):.1f})"
            if self.relay_ms
            else ""
        )
        return (
            f"p50 {self.at(0.5):.1f} / p95 {self.at(0.95):.1f} / p99 {self.at(0.99):.1f} / "
            f"max {max(self.lags_ms):.1f} ms{relay}{missing}"
        )


def pooled(runs: list[Lag]) -> Lag:
    """Several lag runs as one sample."""
    return Lag(
        sorted(lag for run in runs for lag in run.lags_ms),
        sorted(lag for run in runs for lag in run.relay_ms),
        sum(run.appended for run in runs),
        sum(run.missing for run in runs),
        statistics.mean(run.poll_ms for run in runs),
    )


@dataclass
class Projecting:
    """Projector processes started for a lag run."""

    processes: list[subprocess.Popen[bytes]]

    def check(self) -> None:
        """RuntimeError if a projector process has exited (it should run until stopped)."""
        for process in self.processes:
            if process.poll() is not None:
                msg = f"{process.args!r} exited with {process.returncode}"
                raise RuntimeError(msg)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()  # SIGTERM: the CLI finishes its batch and exits
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


Projector = Callable[[Settings], Projecting]

SESSIONSTORE = [sys.executable, "-m", "sessionstore"]
KAFKA_PATH = [["relay"], ["projections", "run", "--source", "kafka"]]
LOG_PATH = [["projections", "run"]]


def env_of(settings: Settings) -> dict[str, str]:
    """The settings as SESSIONSTORE_* variables, for a CLI process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
    for name, value in settings.model_dump().items():
        env[f"SESSIONSTORE_{name.upper()}"] = str(value)
    return env


def projector(commands: list[list[str]]) -> Projector:
    """The CLI processes a deployment runs (each its own process, as in docker-compose)."""

    def start(settings: Settings) -> Projecting:
        env = env_of(settings)
        root = Path(__file__).resolve().parent.parent
        return Projecting(
            [
                subprocess.Popen(  # noqa: S603 - our own CLI
                    [*SESSIONSTORE, *command],
                    env=env,
                    cwd=root,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
                for command in commands
            ]
        )

    return start


Appended = tuple[float, uuid.UUID, int, int]
"""When an append returned, its session, version and global position."""


def append_steadily(
    store: SessionStore, sids: list[uuid.UUID], rate: int, seconds: float
) -> list[Appended]:
    appended: list[Appended] = []
    interval = 1.0 / rate
    next_at = time.perf_counter()
    end = next_at + seconds
    n = 0
    while next_at < end:
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sid = sids[n % len(sids)]
        result = store.add_message(sid, role="user", content=CONTENT)
        appended.append((time.perf_counter(), sid, result.version, result.position))
        n += 1
        next_at += interval
    return appended


def relay_lags(
    settings: Settings, appended: list[Appended], moves: list[tuple[float, LogCursor]]
) -> list[float]:
    """For each append: ms until the relay saved a position at or past it."""
    if not moves:
        return []
    cursors = [cursor for _, cursor in moves]
    log = open_log(settings)
    try:
        out = []
        for done, _, _, position in appended:
            cursor = log.cursor_of(position)
            at = bisect.bisect_left(cursors, cursor) if cursor is not None else len(cursors)
            if at < len(moves):
                out.append(max(0.0, moves[at][0] - done) * 1000)
    finally:
        log.close()
    return sorted(out)


def live_lag(
    url: str,
    bootstrap: str,
    start: Projector,
    *,
    rate: int,
    seconds: float,
    sessions: int,
    **overrides: Any,
) -> Lag:
    names = tag()
    with fresh_schema(
        url,
        **overrides,
        kafka_bootstrap_servers=bootstrap,
        kafka_topic=f"bench-live-{names}",
        kafka_dead_letter_topic=f"bench-dead-{names}",
        kafka_group_id=f"bench-{names}",
    ) as settings:
        projecting = start(settings)
        store = build_store(settings)
        poller: ViewPoller | None = None
        appended: list[Appended] = []
        try:
            sids = [
                store.create(tenant_id="t", user_id=f"u{n}", agent_id=f"a{n % 7}").session_id
                for n in range(sessions)
            ]
            poller = ViewPoller(settings, sids, interval=0.001)
            poller.start()
            # Warm-up: every session's creation visible (the group has its partitions, the
            # producer its metadata), then a second of idling.
            if not poller.wait_for(dict.fromkeys(sids, 1), timeout=90, projecting=projecting):
                msg = "the sessions' creation never became visible in the views"
                raise RuntimeError(msg)
            say(f"  warmed up; appending {rate}/s for {seconds:g} s")
            time.sleep(1.0)
            appended = append_steadily(store, sids, rate, seconds)
            wanted = {sid: v for _, sid, v, _ in appended}
            if not poller.wait_for(wanted, timeout=30, projecting=projecting):
                say("  not every append became visible within 30 s")
        finally:
            if poller is not None:
                poller.stop()
            projecting.stop()
            store.close()
        assert poller is not None
        lags = sorted(
            max(0.0, poller.seen[sid, v] - done) * 1000
            for done, sid, v, _ in appended
            if (sid, v) in poller.seen
        )
        poll_ms = (poller.stopped - poller.started) * 1000 / max(1, poller.polls)
        relay = relay_lags(settings, appended, poller.relay_moves)
        return Lag(lags, relay, len(appended), len(appended) - len(lags), poll_ms)


# -- report ----------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return (
        f"{statistics.median(values):,.0f} events/s (range {min(values):,.0f}-{max(values):,.0f})"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "SESSIONSTORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--kafka", help="host:port of a broker to use instead of starting Tansu")
    parser.add_argument("--sessions", type=int, default=1100, help="seeded sessions (~46 events)")
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3, help="alternating throughput runs")
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 5000], help="relay batch")
    parser.add_argument("--rate", type=int, default=200, help="appends/s for the lag test")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--lag-runs", type=int, default=1, help="alternating lag runs of each kind, pooled"
    )
    parser.add_argument("--live-sessions", type=int, default=50, help="sessions appended to")
    parser.add_argument(
        "--fetch-wait",
        type=int,
        metavar="MS",
        help="the worker's fetch_max_wait_ms (default: SESSIONSTORE_KAFKA_FETCH_WAIT_SECONDS)",
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile one relay run")
    return parser.parse_args()


@dataclass
class Results:
    events: int
    throughput: Throughput
    over_kafka: Lag
    from_log: Lag


def measure(args: argparse.Namespace, bootstrap: str) -> Results:
    with fresh_schema(args.url, kafka_bootstrap_servers=bootstrap) as settings:
        events = generate(settings, args.sessions, args.turns, seed=1)
        say(f"seeded {events:,} events; relay throughput, {args.runs} runs")
        log = open_log(settings)
        try:
            found = throughput(settings, log, args.batch, args.runs)
            if args.profile:
                profile_relay(settings, log, args.batch[0], 25)
        finally:
            log.close()
    steady: dict[str, Any] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "sessions": args.live_sessions,
    }
    if args.fetch_wait is not None:
        steady["kafka_fetch_wait_seconds"] = args.fetch_wait / 1000
    over_kafka: list[Lag] = []
    from_log: list[Lag] = []
    for run in range(1, args.lag_runs + 1):
        say(f"lag run {run}: through the relay and the Kafka-fed worker")
        over_kafka.append(live_lag(args.url, bootstrap, projector(KAFKA_PATH), **steady))
        say(f"lag run {run}: through the log-fed runner")
        from_log.append(live_lag(args.url, bootstrap, projector(LOG_PATH), **steady))
    say("done")
    return Results(events, found, pooled(over_kafka), pooled(from_log))


def report(args: argparse.Namespace, where: str, results: Results) -> None:
    with psycopg.connect(args.url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    print(f"machine: {machine()}; PostgreSQL {row[0] if row else '?'}; Kafka: {where}")
    print(f"command: python bench/kafka_bench.py --sessions {args.sessions} --turns {args.turns} "
          f"--runs {args.runs} --batch {' '.join(map(str, args.batch))} --rate {args.rate} "
          f"--seconds {args.seconds:g} --lag-runs {args.lag_runs} "
          f"--live-sessions {args.live_sessions}"
          f"{f' --fetch-wait {args.fetch_wait}' if args.fetch_wait is not None else ''}"
          f"{f' --kafka {args.kafka}' if args.kafka else ''}")  # fmt: skip
    print()
    print("| measure | sessionstore | baseline (same run) | ratio |")
    print("|---|---|---|---|")
    found = results.throughput
    raw = statistics.median(found.raw)
    for batch, rates in found.relay.items():
        print(
            f"| relay catch-up, {results.events:,} events, batch {batch} (median of {args.runs}) "
            f"| {spread(rates)} | raw kafka-python producer, same settings and messages "
            f"(pre-encoded), one flush: {spread(found.raw)} "
            f"| {statistics.median(rates) / raw:.2f}x raw |"
        )
    kafka, log = results.over_kafka, results.from_log
    added = (
        f"Kafka adds {kafka.at(0.5) - log.at(0.5):+.1f} ms at p50, "
        f"{kafka.at(0.99) - log.at(0.99):+.1f} ms at p99"
        if kafka.lags_ms and log.lags_ms
        else "-"
    )
    print(
        f"| lag append -> visible, {args.rate}/s for {args.seconds:g} s"
        f"{f' x {args.lag_runs} runs' if args.lag_runs > 1 else ''} over "
        f"{args.live_sessions} sessions, via relay + Kafka-fed worker | {kafka.cell()} "
        f"| log-fed runner (LISTEN/NOTIFY): {log.cell()} | {added} |"
    )
    print()
    print(
        f"(views polled every {kafka.poll_ms:.1f} ms (Kafka run) and {log.poll_ms:.1f} ms "
        f"(log run) on average; {kafka.appended} and {log.appended} appends)"
    )


def main() -> None:
    args = parse()
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if args.kafka:
        results = measure(args, args.kafka)
        report(args, f"broker {args.kafka}", results)
        return
    broker = TansuBroker()
    broker.start()
    try:
        results = measure(args, broker.bootstrap)
    finally:
        broker.stop()
    report(args, "Tansu (memory storage) on loopback", results)


if __name__ == "__main__":
    main()
