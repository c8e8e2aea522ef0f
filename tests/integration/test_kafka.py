"""The relay and the Kafka-fed projection workers against a real Kafka-protocol broker (Tansu,
see tests/fix_kafka.py) and real databases: ordering, SIGKILL of the relay, a broker outage,
two workers in one consumer group, dead letters, an unreachable broker."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from sessionstore.adapters.bootstrap import build_store, open_log, open_views, open_waiter
from sessionstore.adapters.kafka.relay import Relay, ensure_topic, relay_positions
from sessionstore.adapters.kafka.worker import DeadLetter, KafkaProjectionWorker
from sessionstore.adapters.settings import Settings
from sessionstore.domain.errors import ProjectionFedFromKafka
from sessionstore.domain.ports import LOG_START, EventLog, RecordedEvent
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.feed import DeliveredFeed
from sessionstore.projections.runner import ProjectionRunner, rebuild
from tests.integration.test_projection_runner import converse, every_event, wait_until
from tests.kafka_broker import TansuBroker, free_port

SESSIONSTORE = [sys.executable, "-m", "sessionstore"]


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request: pytest.FixtureRequest) -> Settings:
    name = "sqlite_settings" if request.param == "sqlite" else "pg_settings"
    value: Settings = request.getfixturevalue(name)
    return value


def with_kafka(settings: Settings, bootstrap: str, names: dict[str, str], **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": bootstrap,
            "kafka_timeout_seconds": 3.0,
            # Tansu completes a group join after about half the session timeout.
            "kafka_session_timeout_seconds": 2.0,
        }
        | names
        | extra
    )


def env_of(settings: Settings) -> dict[str, str]:
    """The settings as SESSIONSTORE_* variables, for a CLI process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
    for name, value in settings.model_dump().items():
        env[f"SESSIONSTORE_{name.upper()}"] = str(value)
    return env


def seed(settings: Settings, sessions: int, turns: int, seed_: int = 6) -> None:
    rng = random.Random(seed_)
    store = build_store(settings)
    try:
        for n in range(sessions):
            add_session(store, n, turns, rng)
    finally:
        store.close()


def add_session(store: SessionStore, n: int, turns: int, rng: random.Random) -> UUID:
    sid = store.create(tenant_id=f"t{n % 3}", user_id=f"u{n}", agent_id=f"a{n % 2}").session_id
    converse(store, sid, turns, rng)
    if n % 4 != 3:
        store.end(sid, status=["completed", "failed", "abandoned"][n % 3])
    return sid


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of the topic, partition by partition, up to the end offsets of now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def versions_by_session(records: list[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[record.key.decode()].append(orjson.loads(record.value)["version"])
    return out


def first_occurrences(versions: list[int]) -> list[int]:
    return list(dict.fromkeys(versions))


def all_rows(views: ViewStore) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {
        (p.name, t.name): views.rows(p.name, t.name)  # type: ignore[attr-defined]
        for p in all_projections()
        for t in p.tables
    }


def assert_views_equal_a_rebuild(log: EventLog, views: ViewStore) -> None:
    """Views as they are == the same views rebuilt from the log (the log-fed reference)."""
    fed = all_rows(views)
    assert any(fed.values()), "the views are empty: nothing was applied"
    rebuild(log, views, all_projections())
    rebuilt = all_rows(views)
    for key, rows in rebuilt.items():
        assert fed[key] == rows, f"{key}: the Kafka-fed view differs from a rebuild"


@pytest.fixture
def opened(db_settings: Settings) -> Iterator[tuple[EventLog, ViewStore]]:
    log, views = open_log(db_settings), open_views(db_settings)
    try:
        yield log, views
    finally:
        views.close()
        log.close()


def test_every_event_reaches_the_topic_in_per_session_order_with_its_headers(
    db_settings: Settings, kafka_bootstrap: str, kafka_names: dict[str, str]
) -> None:
    settings = with_kafka(db_settings, kafka_bootstrap, kafka_names, relay_batch_size=37)
    seed(settings, sessions=12, turns=5)
    log = open_log(settings)
    relay = Relay(log, relay_positions(settings, log), settings)
    try:
        published = relay.catch_up()
        events = every_event(log)
        assert published == len(events)
        assert relay.status().lag_events == 0
        assert relay.status().cursor == log.head()
        records = read_topic(kafka_bootstrap, settings.kafka_topic)
    finally:
        relay.close()
        log.close()

    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(
        str(e.event.event_id) for e in events
    )
    by_session: dict[UUID, list[RecordedEvent]] = defaultdict(list)
    for e in events:
        by_session[e.event.session_id].append(e)
    partitions: dict[str, set[int]] = defaultdict(set)
    for r in records:
        partitions[r.key.decode()].add(r.partition)
    assert all(len(p) == 1 for p in partitions.values()), "a session's events span partitions"
    assert len({p for ps in partitions.values() for p in ps}) > 1, "one partition used"
    published_versions = versions_by_session(records)
    for sid, recorded in by_session.items():
        assert published_versions[str(sid)] == [e.event.version for e in recorded]
    one = next(r for r in records if orjson.loads(r.value)["version"] == 1)
    headers = dict(one.headers)
    value = orjson.loads(one.value)
    assert headers["event_id"].decode() == value["event_id"]
    assert headers["type"] == b"SessionCreated"
    assert headers["tenant"].decode() == value["tenant_id"]
    assert int(headers["position"]) == value["position"]
    assert int(headers["class_version"]) == value["class_version"]


def test_a_relay_killed_mid_stream_resumes_and_kafka_fed_views_are_exact(
    db_settings: Settings,
    kafka_bootstrap: str,
    kafka_names: dict[str, str],
    opened: tuple[EventLog, ViewStore],
) -> None:
    settings = with_kafka(db_settings, kafka_bootstrap, kafka_names, relay_batch_size=20)
    seed(settings, sessions=30, turns=8)
    log, views = opened
    total = log.count_after(LOG_START)
    positions = relay_positions(settings, log)
    env = env_of(settings)
    rng = random.Random(11)
    kills = 0
    for _ in range(3):
        start = positions.get(settings.kafka_topic).cursor.position
        target = start + rng.randint(20, max(21, (total - start) // 3))
        relay = subprocess.Popen([*SESSIONSTORE, "relay"], env=env, stdout=subprocess.DEVNULL)  # noqa: S603
        try:
            wait_until(
                lambda t=target: positions.get(settings.kafka_topic).cursor.position >= t,
                60,
                "the relay to publish",
            )
        finally:
            relay.send_signal(signal.SIGKILL)
            relay.wait(timeout=30)
        kills += relay.returncode == -signal.SIGKILL
        assert positions.get(settings.kafka_topic).cursor.position < log.head().position
    assert kills == 3
    finisher = subprocess.run(  # noqa: S603
        [*SESSIONSTORE, "relay", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finisher.returncode == 0, finisher.stderr
    assert positions.get(settings.kafka_topic).cursor == log.head()

    records = read_topic(kafka_bootstrap, settings.kafka_topic)
    events = every_event(log)
    published = {orjson.loads(r.value)["event_id"] for r in records}
    assert published == {str(e.event.event_id) for e in events}, "an event never reached Kafka"
    last_version: dict[UUID, int] = {}
    for e in events:
        last_version[e.event.session_id] = e.event.version
    for sid, versions in versions_by_session(records).items():
        # Duplicates after a crash are allowed; the first sight of each version is in order.
        assert first_occurrences(versions) == list(range(1, last_version[UUID(sid)] + 1))

    worker = KafkaProjectionWorker(DeliveredFeed(log, views, all_projections()), settings)
    try:
        worker.catch_up()
    finally:
        worker.close()
    assert worker.stats.received == len(records)
    assert worker.stats.applied == len(events)
    assert worker.stats.duplicates == len(records) - len(events)
    assert_views_equal_a_rebuild(log, views)


def test_events_appended_during_a_broker_outage_arrive_once_it_is_back(
    pg_settings: Settings,
    own_broker: TansuBroker,
    kafka_names: dict[str, str],
) -> None:
    settings = with_kafka(pg_settings, own_broker.bootstrap, kafka_names, kafka_timeout_seconds=1.0)
    log = open_log(settings)
    store = build_store(settings)
    positions = relay_positions(settings, log)
    relay = Relay(log, positions, settings, max_backoff=1.0)
    reports: list[str] = []
    stop = threading.Event()
    waiter = open_waiter(settings, stop)
    runner = threading.Thread(
        target=relay.run, args=(stop, waiter), kwargs={"report": reports.append}, daemon=True
    )
    rng = random.Random(3)

    def published_all() -> bool:
        return positions.get(settings.kafka_topic).cursor == log.head()

    try:
        runner.start()
        for n in range(4):
            add_session(store, n, 3, rng)
        wait_until(published_all, 60, "the relay to publish before the outage")

        own_broker.stop()
        before = log.head()
        during = [add_session(store, n, 3, rng) for n in range(4, 10)]
        wait_until(lambda: any("unavailable" in r for r in reports), 60, "the outage report")
        assert not published_all()
        assert any("events waiting" in r for r in reports), reports

        own_broker.start()
        # The test broker keeps topics in memory, so the restart emptied it: recreate the topic
        # as a real deployment's broker would still have it.
        ensure_topic(settings, settings.kafka_topic)
        wait_until(lambda: any("reachable again" in r for r in reports), 90, "publishing to resume")
        assert published_all()
    finally:
        stop.set()
        runner.join(timeout=60)
        waiter.close()
        relay.close()
        store.close()
    try:
        records = read_topic(own_broker.bootstrap, settings.kafka_topic)
        after = [e for e in every_event(log) if e.cursor > before]
        assert {e.event.session_id for e in after} == set(during)
        published = {orjson.loads(r.value)["event_id"] for r in records}
        missing = [e for e in after if str(e.event.event_id) not in published]
        assert not missing, f"{len(missing)} events appended during the outage never arrived"
        versions = versions_by_session(records)
        for sid in during:
            count = len(log.read_session(sid))
            assert first_occurrences(versions[str(sid)]) == list(range(1, count + 1))
    finally:
        log.close()


def test_a_kafka_fed_worker_rides_out_a_broker_restart_and_its_views_end_exact(
    pg_settings: Settings, own_broker: TansuBroker, kafka_names: dict[str, str]
) -> None:
    settings = with_kafka(pg_settings, own_broker.bootstrap, kafka_names, kafka_timeout_seconds=1.0)
    log, views, store = open_log(settings), open_views(settings), build_store(settings)
    relay = Relay(log, relay_positions(settings, log), settings, max_backoff=1.0)
    worker = KafkaProjectionWorker(DeliveredFeed(log, views, all_projections()), settings)
    stop = threading.Event()
    waiter = open_waiter(settings, stop)
    threads = [
        threading.Thread(target=relay.run, args=(stop, waiter), kwargs={"report": print}),
        threading.Thread(target=worker.run, args=(stop,), kwargs={"report": print}),
    ]
    rng = random.Random(4)
    sids: list[UUID] = []

    def all_applied() -> bool:
        versions = views.applied_versions({"session_state": 1}, sids)["session_state"]
        return all(versions.get(sid, 0) == len(log.read_session(sid)) for sid in sids)

    try:
        for thread in threads:
            thread.start()
        sids += [add_session(store, n, 3, rng) for n in range(4)]
        wait_until(all_applied, 60, "the views to show the first sessions")

        own_broker.stop()
        sids += [add_session(store, n, 3, rng) for n in range(4, 8)]
        own_broker.start()  # empty: what was on the topic and the group's offsets are gone
        ensure_topic(settings, settings.kafka_topic)
        sids += [add_session(store, n, 3, rng) for n in range(8, 10)]
        wait_until(all_applied, 90, "the views to show every session after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        waiter.close()
        relay.close()
        worker.close()
        store.close()
    try:
        assert worker.stats.dead_lettered == 0
        assert_views_equal_a_rebuild(log, views)
    finally:
        views.close()
        log.close()


def test_two_workers_in_one_group_share_the_partitions_and_equal_a_log_rebuild(
    db_settings: Settings,
    kafka_bootstrap: str,
    kafka_names: dict[str, str],
    opened: tuple[EventLog, ViewStore],
) -> None:
    settings = with_kafka(db_settings, kafka_bootstrap, kafka_names)
    log, views = opened
    ensure_topic(settings, settings.kafka_topic)
    stop = threading.Event()
    workers = [
        KafkaProjectionWorker(DeliveredFeed(log, open_views(settings), all_projections()), settings)
        for _ in range(2)
    ]
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    try:
        for thread in threads:
            thread.start()
        wait_until(
            lambda: (
                all(w.assigned for w in workers)
                and len(workers[0].assigned | workers[1].assigned)
                == settings.kafka_topic_partitions
                and not workers[0].assigned & workers[1].assigned
            ),
            90,
            "both workers to get their share of the partitions",
        )
        seed(settings, sessions=24, turns=6, seed_=8)
        relay = Relay(log, relay_positions(settings, log), settings)
        try:
            published = relay.catch_up()
        finally:
            relay.close()
        wait_until(
            lambda: sum(w.stats.received for w in workers) >= published, 90, "both to consume"
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        for worker in workers:
            worker.feed.store.close()
            worker.close()
    assert all(w.stats.received > 0 for w in workers), [w.stats for w in workers]
    assert sum(w.stats.applied for w in workers) == published
    with pytest.raises(ProjectionFedFromKafka):
        ProjectionRunner(log, views, all_projections()).catch_up()
    assert_views_equal_a_rebuild(log, views)
    # The rebuilt generation is log-fed again.
    ProjectionRunner(log, views, all_projections()).catch_up()


def test_kafka_fed_worker_processes_killed_anywhere_end_with_views_equal_a_rebuild(
    db_settings: Settings,
    kafka_bootstrap: str,
    kafka_names: dict[str, str],
    opened: tuple[EventLog, ViewStore],
) -> None:
    settings = with_kafka(db_settings, kafka_bootstrap, kafka_names, kafka_max_poll_records=20)
    seed(settings, sessions=20, turns=6, seed_=9)
    log, views = opened
    relay = Relay(log, relay_positions(settings, log), settings)
    try:
        total = relay.catch_up()
    finally:
        relay.close()
    sids = list({e.event.session_id for e in every_event(log)})

    def applied() -> int:
        # Each session's versions are applied in order, so its applied version counts them.
        return sum(views.applied_versions({"session_state": 1}, sids)["session_state"].values())

    env = env_of(settings)
    worker_cmd = [*SESSIONSTORE, "projections", "run", "--source", "kafka"]
    rng = random.Random(5)
    kills = 0
    for _ in range(3):
        target = applied() + rng.randint(20, max(21, (total - applied()) // 3))
        worker = subprocess.Popen(worker_cmd, env=env, stdout=subprocess.DEVNULL)  # noqa: S603
        try:
            wait_until(lambda t=target: applied() >= t, 60, "the worker to apply events")
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
        kills += worker.returncode == -signal.SIGKILL
    assert kills == 3
    assert applied() < total, "the workers finished before the last kill: seed more"

    # Two processes in one group (on SQLite they share the file lock) finish the job.
    finishers = [
        subprocess.Popen(worker_cmd, env=env, stdout=subprocess.DEVNULL)  # noqa: S603
        for _ in range(2)
    ]
    try:
        wait_until(lambda: applied() == total, 90, "the workers to apply every event")
    finally:
        for finisher in finishers:
            finisher.send_signal(signal.SIGTERM)
        codes = [finisher.wait(timeout=60) for finisher in finishers]
    assert codes == [0, 0]
    assert_views_equal_a_rebuild(log, views)


def test_unreadable_messages_go_to_the_dead_letter_topic_and_the_worker_goes_on(
    sqlite_settings: Settings,
    kafka_bootstrap: str,
    kafka_names: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = with_kafka(sqlite_settings, kafka_bootstrap, kafka_names, kafka_topic_partitions=1)
    seed(settings, sessions=3, turns=3)
    log, views = open_log(settings), open_views(settings)
    relay = Relay(log, relay_positions(settings, log), settings)
    good = every_event(log)
    sid = str(good[0].event.session_id)
    bad = [
        (b"not json at all", "value is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (orjson.dumps({"session_id": sid}), "version"),
        (
            orjson.dumps(
                orjson.loads(relay_value(good[0])) | {"type": "NoSuchEvent", "version": 99}
            ),
            "NoSuchEvent",
        ),
        # Well-formed, but not this store's events (another deployment's relay, say).
        (
            orjson.dumps(orjson.loads(relay_value(good[1])) | {"event_id": str(uuid4())}),
            "is not in this store's log",
        ),
        (
            orjson.dumps(orjson.loads(relay_value(good[1])) | {"position": 10_000}),
            f"is session {sid} v2 at position {good[1].position} in this store's log",
        ),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        assert relay.catch_up() == len(good)  # creates the topic too
        for value, _ in bad:
            producer.send(settings.kafka_topic, key=sid.encode(), value=value).get(timeout=30)
    finally:
        producer.close()
        relay.close()
    dead: list[DeadLetter] = []
    worker = KafkaProjectionWorker(
        DeliveredFeed(log, views, all_projections()), settings, on_dead_letter=dead.append
    )
    try:
        with caplog.at_level(logging.ERROR, logger="sessionstore.kafka_worker"):
            worker.catch_up()
    finally:
        worker.close()
    assert len(dead) == len(bad)
    for (_, expected), letter in zip(bad, dead, strict=True):
        assert expected in letter.reason, letter.reason
        assert any(
            f"partition {letter.partition} offset {letter.offset}" in r.getMessage()
            for r in caplog.records
        )
    assert worker.stats.applied == len(good)
    letters = read_topic(kafka_bootstrap, settings.kafka_dead_letter_topic)
    assert [r.value for r in letters] == [value for value, _ in bad]
    for letter, record in zip(dead, letters, strict=True):
        headers = dict(record.headers)
        assert int(headers["dead_letter.offset"]) == letter.offset
        assert int(headers["dead_letter.partition"]) == letter.partition
        assert headers["dead_letter.reason"].decode() == letter.reason
    status = subprocess.run(  # noqa: S603
        [*SESSIONSTORE, "projections", "status", "--kafka", "--json"],
        env=env_of(settings),
        capture_output=True,
        timeout=60,
        check=True,
    )
    reported = orjson.loads(status.stdout)
    assert {p["feed"] for p in reported["projections"]} == {"kafka"}
    assert reported["kafka"]["lag"] == 0
    assert reported["kafka"]["partitions"] == [
        {"partition": 0, "committed": len(good) + len(bad), "end": len(good) + len(bad), "lag": 0}
    ]
    try:
        assert_views_equal_a_rebuild(log, views)
    finally:
        views.close()
        log.close()


def relay_value(recorded: RecordedEvent) -> bytes:
    from sessionstore.adapters.kafka.messages import encode

    return encode(recorded).value


def test_an_unreachable_broker_is_named_and_the_relay_keeps_retrying_until_it_is_there(
    sqlite_settings: Settings, kafka_names: dict[str, str], tmp_path: Any
) -> None:
    port = free_port()
    settings = with_kafka(
        sqlite_settings, f"127.0.0.1:{port}", kafka_names, kafka_timeout_seconds=1.0
    )
    seed(settings, sessions=2, turns=2)
    env = env_of(settings)
    once = subprocess.run(  # noqa: S603
        [*SESSIONSTORE, "relay", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert once.returncode == 3
    assert f"127.0.0.1:{port}" in once.stderr
    assert "unavailable" in once.stderr

    live = subprocess.Popen(  # noqa: S603
        [*SESSIONSTORE, "relay"], env=env, stdout=subprocess.PIPE, text=True
    )
    broker = TansuBroker(port=port, log_path=tmp_path / "late-broker.log")
    try:
        assert live.stdout is not None
        lines = iter(live.stdout.readline, "")
        retrying = next(line for line in lines if "retrying in" in line)
        assert f"127.0.0.1:{port}" in retrying
        assert "events waiting" in retrying
        broker.start()
        log = open_log(settings)
        try:
            positions = relay_positions(settings, log)
            wait_until(
                lambda: positions.get(settings.kafka_topic).cursor == log.head(),
                90,
                "the relay to publish once the broker is up",
            )
        finally:
            log.close()
        live.send_signal(signal.SIGTERM)
        assert live.wait(timeout=60) == 0
    finally:
        if live.poll() is None:
            live.kill()
            live.wait(timeout=30)
        if live.stdout is not None:
            live.stdout.close()
        broker.stop()
