"""Long-running processes and what they do when something they need fails (docs/decisions.md
§23), beyond the PostgreSQL restart of test_outage.py: a SQLite write lock held past the busy
timeout, a database that is not there yet at start, brokers that go away (the status rows say
so), the Kafka worker's back-off while the database stays down, and the configuration errors
that end a process instead (a schema not migrated, a database that does not exist, a schema
dropped while running)."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from sessionstore.adapters.bootstrap import build_store, migrate
from sessionstore.adapters.kafka.messages import encode
from sessionstore.adapters.kafka.relay import ensure_topic
from sessionstore.adapters.kafka.worker import KafkaProjectionWorker, open_consumer
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.adapters.storage.postgres.log import PostgresEventLog, datastore_from_settings
from sessionstore.adapters.storage.postgres.views import PostgresViewStore
from sessionstore.adapters.storage.processes import (
    KAFKA_WORKER,
    RELAY,
    RUNNER,
    ProcessTable,
    process_table,
)
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.feed import DeliveredFeed
from sessionstore.projections.supervision import ProcessState
from tests.fix_cluster import Cluster, cluster_schema, drop_cluster_schema
from tests.fix_db import drop_schema
from tests.integration.test_kafka import with_kafka
from tests.integration.test_outage import all_applied, append, caught_up
from tests.kafka_broker import TansuBroker, free_port
from tests.processes import SESSIONSTORE, Command, env_of, eventually, reported_once

RESILIENT: dict[str, Any] = {
    "retry_max_seconds": 1.0,
    "heartbeat_seconds": 0.5,
    "connect_timeout": 1.0,
}


# -- SQLite: a write lock held past the busy timeout ---------------------------------------------


@pytest.fixture
def lockable(tmp_path: Path) -> Settings:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'events.db'}",
        sqlite_busy_timeout_seconds=1,
        **RESILIENT,
    )
    migrate(settings)
    return settings


def test_a_live_runner_survives_a_sqlite_write_lock_held_past_the_busy_timeout(
    lockable: Settings, tmp_path: Path
) -> None:
    append(lockable, 1, seed=1)
    runner = Command(["projections", "run"], env_of(lockable), tmp_path / "runner.log")
    holder = sqlite3.connect(lockable.sqlite_path, timeout=30, isolation_level=None)
    try:
        eventually(lambda: caught_up(lockable), 60, "the runner to catch up")
        # New events, then the write lock before the runner applies them. The runner polls
        # every 0.5 s, so it rarely wins the race; when it does, try again.
        for attempt in range(20):
            append(lockable, 1, seed=10 + attempt)
            holder.execute("BEGIN IMMEDIATE")
            if not caught_up(lockable):
                break
            holder.execute("ROLLBACK")
        else:
            pytest.fail("the runner applied every event before the lock could be taken")
        runner.reported("database is locked")
        assert not caught_up(lockable)
        holder.execute("ROLLBACK")
        eventually(lambda: caught_up(lockable), 60, "the runner to catch up after the release")
        assert runner.stop() == 0
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        runner.kill()
    reported_once(runner, "projections run: database unavailable")


# -- PostgreSQL: not there yet at start; a schema dropped while running ---------------------------


def test_a_long_running_command_started_while_the_database_is_down_waits_for_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    settings = cluster_schema(cluster, **RESILIENT)
    try:
        append(settings, 1, seed=3)
        cluster.stop()
        runner = Command(["projections", "run"], env_of(settings), tmp_path / "runner.log")
        try:
            runner.reported("database unavailable")
            assert runner.says("Connection refused"), runner.text()
            cluster.start()
            eventually(lambda: caught_up(settings), 60, "the runner to start and catch up")
            assert runner.stop() == 0
        finally:
            runner.kill()
        reported_once(runner, "projections run: database unavailable")
    finally:
        if not cluster.running:
            cluster.start()
        drop_cluster_schema(settings)


def test_a_schema_dropped_under_a_running_runner_ends_it_with_the_fix(
    pg_settings: Settings, pg_url: str, tmp_path: Path
) -> None:
    settings = pg_settings.model_copy(update=RESILIENT)
    runner = Command(["projections", "run"], env_of(settings), tmp_path / "runner.log")
    try:
        runner.reported("applying new events")
        drop_schema(pg_url, settings.database_schema)
        assert runner.exit_code(timeout=60) == 3, runner.text()
    finally:
        runner.kill()
    errors = runner.lines("error:")
    assert len(errors) == 1, runner.text()
    assert "run `sessionstore db migrate`" in errors[0]
    assert "Traceback" not in runner.text()


# -- configuration errors at start ----------------------------------------------------------------

LONG_RUNNING = (
    ["projections", "run"],
    ["projections", "run", "--source", "kafka"],
    ["relay"],
    ["serve", "--host", "127.0.0.1", "--port", "1"],  # never gets as far as binding
)


def test_configuration_errors_end_the_long_running_commands_with_the_fix(
    pg_bare_settings: Settings, pg_url: str, tmp_path: Path
) -> None:
    missing = f"sessionstore_missing_{uuid.uuid4().hex[:12]}"
    nowhere = load_settings(
        database_url=pg_url.rsplit("/", 1)[0] + f"/{missing}", connect_timeout=1.0
    )
    cases = [
        (pg_bare_settings, "run `sessionstore db migrate`"),
        (nowhere, f'database "{missing}" does not exist'),
    ]
    started = [
        (Command(args, env_of(settings), tmp_path / f"{n}.log"), expected)
        for n, (args, (settings, expected)) in enumerate(
            (args, case) for case in cases for args in LONG_RUNNING
        )
    ]
    try:
        for command, expected in started:
            assert command.exit_code(timeout=90) == 3, (command.args, command.text())
            errors = command.lines("error:")
            assert len(errors) == 1, (command.args, command.text())
            assert expected in errors[0], (command.args, errors[0])
            assert "retrying" not in command.text(), command.text()
            assert "Traceback" not in command.text()
    finally:
        for command, _ in started:
            command.kill()


# -- brokers down: the relay's and the worker's rows say so ---------------------------------------


@pytest.fixture
def brokered(tmp_path: Path, own_broker: TansuBroker, kafka_names: dict[str, str]) -> Settings:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'events.db'}", **RESILIENT)
    migrate(settings)
    return with_kafka(
        settings,
        own_broker.bootstrap,
        kafka_names,
        kafka_timeout_seconds=1.0,
        kafka_session_timeout_seconds=1.0,
    )


def rows_of(settings: Settings, kind: str) -> list[Any]:
    store = build_store(settings)
    try:
        return process_table(settings, store.log).rows([kind])
    finally:
        store.close()


def test_with_the_brokers_down_the_relay_and_worker_rows_say_so_then_recover(
    brokered: Settings, own_broker: TansuBroker, tmp_path: Path
) -> None:
    append(brokered, 2, seed=5)
    env = env_of(brokered)
    relay = Command(["relay"], env, tmp_path / "relay.log")
    worker = Command(["projections", "run", "--source", "kafka"], env, tmp_path / "worker.log")
    try:
        eventually(lambda: all_applied(brokered), 90, "relay and worker to apply")
        own_broker.kill()
        append(brokered, 1, seed=6)  # something to publish

        def says_unavailable(kind: str) -> bool:
            rows = rows_of(brokered, kind)
            return bool(rows) and rows[0].state == "retrying" and "unavailable" in rows[0].detail

        eventually(lambda: says_unavailable(RELAY), 60, "the relay's row to say so")
        eventually(lambda: says_unavailable(KAFKA_WORKER), 60, "the worker's row to say so")
        status = eventually(
            lambda: orjson.loads(cli(env, "relay", "status", "--json")), 60, "relay status"
        )
        (row,) = status["processes"]
        assert (row["command"], row["state"], row["stale"]) == ("relay", "retrying", False)
        assert f"Kafka brokers {brokered.kafka_bootstrap_servers} unavailable" in row["detail"]
        views = orjson.loads(cli(env, "projections", "status", "--json"))
        assert {p["state"] for v in views for p in v["processes"]} == {"retrying"}

        own_broker.start()  # an empty broker: the topic is recreated as a real one would have it
        ensure_topic(brokered, brokered.kafka_topic)
        eventually(lambda: all_applied(brokered), 90, "publishing and applying to resume")
        for kind in (RELAY, KAFKA_WORKER):
            eventually(
                lambda k=kind: [r.state for r in rows_of(brokered, k)] == ["running"],
                60,
                f"the {kind} row to say running",
            )
        assert relay.stop() == 0
        assert worker.stop() == 0
    finally:
        relay.kill()
        worker.kill()
    reported_once(relay, "unavailable")
    reported_once(worker, "unavailable")
    assert rows_of(brokered, RELAY) == rows_of(brokered, KAFKA_WORKER) == []


def cli(env: dict[str, str], *args: str) -> bytes:
    done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [*SESSIONSTORE, *args], env=env, capture_output=True, timeout=60, check=True
    )
    return done.stdout


# -- the Kafka worker's back-off -----------------------------------------------------------------


@pytest.fixture
def unreachable(kafka_bootstrap: str, kafka_names: dict[str, str]) -> Settings:
    """Kafka settings whose database is a port where nothing listens, and a topic that holds
    events (the worker must look each poll's events up in the database)."""
    settings = with_kafka(
        load_settings(
            database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
            connect_timeout=0.2,
        ),
        kafka_bootstrap,
        kafka_names,
        kafka_session_timeout_seconds=1.0,
    )
    store = SessionStore(MemoryEventLog())
    sid = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    store.add_message(sid, role="user", content="hello")
    ensure_topic(settings, settings.kafka_topic)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for recorded in store.log.read_log():
            message = encode(recorded)
            producer.send(
                settings.kafka_topic, key=message.key, value=message.value, headers=message.headers
            ).get(timeout=30)
    finally:
        producer.close()
    return settings


def test_the_kafka_worker_backs_off_further_while_the_database_stays_down(
    unreachable: Settings,
) -> None:
    """The delay grows between attempts; an empty poll (a new consumer joining the group) does
    not reset it. Each failed attempt drops the consumer, so the times new consumers are made
    show the pauses."""
    made: list[float] = []

    def consumer() -> Any:
        made.append(time.monotonic())
        return open_consumer(unreachable)

    log = PostgresEventLog(datastore_from_settings(unreachable), where="unreachable")
    views = PostgresViewStore(datastore_from_settings(unreachable), where="unreachable")
    reports: list[str] = []
    worker = KafkaProjectionWorker(
        DeliveredFeed(log, views, all_projections()), unreachable, consumer_factory=consumer
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"report": reports.append})
    thread.start()
    try:
        eventually(lambda: len(made) >= 6, 90, "six consumers")
    finally:
        stop.set()
        thread.join(timeout=60)
        worker.close()
        views.close()
        log.close()
    gaps = [b - a for a, b in itertools.pairwise(made)]
    # Each gap is the pause plus a group join and a failed lookup. With the delay reset after
    # every empty poll the pauses stay at 0.2 s; backing off they are 0.2, 0.4, 0.8, 1.6, 3.2 s
    # (±20 %), so the last two gaps exceed the first two by 3.1 s or more.
    assert (gaps[3] + gaps[4]) - (gaps[0] + gaps[1]) >= 2.0, gaps
    assert len(reports) == 1, reports  # reported once, not once per attempt
    assert "database unavailable" in reports[0]


# -- status rows: stale ----------------------------------------------------------------------


def test_a_row_not_written_for_three_heartbeats_is_stale(sqlite_settings: Settings) -> None:
    store = build_store(sqlite_settings)
    try:
        table: ProcessTable = process_table(sqlite_settings, store.log)
        now = ProcessState("running", since=datetime.now(UTC))
        table.write(RUNNER, "host:1", now, heartbeat=0.1)
        table.write(RUNNER, "host:2", now, heartbeat=3600)
        eventually(lambda: table.rows([RUNNER])[0].stale, 10, "the first row to go stale")
        fresh, old = table.rows([RUNNER])[1], table.rows([RUNNER])[0]
        assert (old.instance, old.stale, fresh.instance, fresh.stale) == (
            "host:1", True, "host:2", False,
        )  # fmt: skip
        table.write(RUNNER, "host:2", now, heartbeat=3600)
        table.forget_gone(RUNNER, older_than=0.2)
        assert [r.instance for r in table.rows([RUNNER])] == ["host:2"]
        table.delete(RUNNER, "host:2")
        assert table.rows([RUNNER]) == []
    finally:
        store.close()
