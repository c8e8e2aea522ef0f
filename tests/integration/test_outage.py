"""Long-running processes ride out a PostgreSQL restart (docs/decisions.md §23).

One restart of a throwaway cluster (tests/fix_cluster.py; the shared server is never stopped)
under four real processes at once, each on its own schema: ``projections run``; ``relay`` and
``projections run --source kafka`` (one schema and topic, on the suite's Tansu broker); and
``serve`` with its embedded projector. While the cluster is down each must keep running and
report the outage (``/readyz`` says the projector retries); after it is back each must apply or
publish what is appended after the restart by itself, and log exactly one line when it started
failing and one when it recovered, without a traceback. The scenario runs once for the module
(a restart and four processes take seconds); each test checks one process.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from kafka import KafkaProducer

from sessionstore.adapters.bootstrap import build_store, open_log, open_views
from sessionstore.adapters.kafka.messages import Message, encode
from sessionstore.adapters.kafka.relay import relay_positions
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.processes import RUNNER, process_table
from sessionstore.projections import all_projections
from sessionstore.projections.runner import ProjectionRunner
from tests.fix_cluster import Cluster, cluster_schema, drop_cluster_schema
from tests.integration.test_kafka import add_session, with_kafka
from tests.integration.test_projection_runner import every_event
from tests.kafka_broker import free_port
from tests.processes import Command, env_of, eventually, reported_once

pytestmark = pytest.mark.postgres

RESILIENT: dict[str, Any] = {
    "retry_max_seconds": 1.0,  # back at work within a second of the database's return
    "heartbeat_seconds": 1.0,
    "connect_timeout": 1.0,  # an attempt against a stopped server fails within a second or two
}


@dataclass
class Outage:
    runner: Command
    relay: Command
    worker: Command
    server: Command
    fed: Settings
    """The schema ``projections run`` feeds."""
    published: Settings
    """The schema the relay publishes and the Kafka worker applies (one topic)."""
    served: Settings
    """The schema ``serve`` and its embedded projector use."""
    url: str
    readyz_during: dict[str, Any]
    after: dict[str, list[UUID]] = field(default_factory=dict)
    """Sessions appended after the restart, per schema."""


def caught_up(settings: Settings) -> bool:
    """Every view of the schema has applied the whole log (fresh connections: after a restart
    a pooled one may be dead)."""
    log, views = open_log(settings), open_views(settings)
    try:
        statuses = ProjectionRunner(log, views, all_projections()).status()
        return all(s.lag_events == 0 and s.cursor == s.head for s in statuses)
    finally:
        views.close()
        log.close()


def all_applied(settings: Settings) -> bool:
    """Kafka-fed views: each session's applied version is its last one."""
    log, views = open_log(settings), open_views(settings)
    try:
        last: dict[UUID, int] = {}
        for e in every_event(log):
            last[e.event.session_id] = e.event.version
        applied = views.applied_versions({"session_state": 1}, list(last))["session_state"]
        return bool(last) and all(applied.get(s) == v for s, v in last.items())
    finally:
        views.close()
        log.close()


def published_all(settings: Settings) -> bool:
    log = open_log(settings)
    try:
        return relay_positions(settings, log).get(settings.kafka_topic).cursor == log.head()
    finally:
        log.close()


def append(settings: Settings, sessions: int, seed: int) -> list[UUID]:
    rng = random.Random(seed)
    store = build_store(settings)
    try:
        return [add_session(store, n, 2, rng) for n in range(sessions)]
    finally:
        store.close()


def first_message(settings: Settings) -> Message:
    log = open_log(settings)
    try:
        return encode(every_event(log)[0])
    finally:
        log.close()


def republish(settings: Settings, message: Message) -> None:
    """Produce an already-published event again (a redelivery): the Kafka worker must look it
    up in the database, which is down."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        producer.send(
            settings.kafka_topic, key=message.key, value=message.value, headers=message.headers
        ).get(timeout=30)
    finally:
        producer.close()


def readyz(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=30)


@pytest.fixture(scope="module")
def outage(
    pg_cluster: Cluster, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    tmp: Path = tmp_path_factory.mktemp("outage")
    tag = tmp.name[-8:].replace("-", "")
    names = {
        "kafka_topic": f"outage-{tag}",
        "kafka_dead_letter_topic": f"outage-dead-{tag}",
        "kafka_group_id": f"outage-{tag}",
    }
    fed = cluster_schema(pg_cluster, **RESILIENT)
    published = with_kafka(cluster_schema(pg_cluster, **RESILIENT), kafka_bootstrap, names)
    served = cluster_schema(pg_cluster, **RESILIENT)
    for n, settings in enumerate((fed, published, served)):
        append(settings, 2, seed=n)
    port = free_port()
    commands: list[Command] = []
    try:
        runner = Command(["projections", "run"], env_of(fed), tmp / "runner.log")
        commands.append(runner)
        relay = Command(["relay"], env_of(published), tmp / "relay.log")
        commands.append(relay)
        worker = Command(
            ["projections", "run", "--source", "kafka"], env_of(published), tmp / "worker.log"
        )
        commands.append(worker)
        server = Command(
            ["serve", "--host", "127.0.0.1", "--port", str(port), "--projector"],
            env_of(served),
            tmp / "server.log",
        )
        commands.append(server)
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: caught_up(fed), 60, "projections run to catch up")
        eventually(lambda: all_applied(published), 90, "relay and Kafka worker to apply")
        eventually(lambda: readyz(url).json()["status"] == "ready", 60, "serve to be ready")
        eventually(lambda: caught_up(served), 60, "the embedded projector to catch up")

        redelivered = first_message(published)
        pg_cluster.stop()
        republish(published, redelivered)
        for command in (runner, relay, worker):
            command.reported("database unavailable")
        during = eventually(
            lambda: (
                (r := readyz(url)).status_code == 503
                and "retrying" in r.json()["context"]["checks"].get("projector", "")
                and r.json()
            ),
            60,
            "/readyz to report the projector retrying",
        )
        for command in commands:
            assert command.alive, f"{command.args} exited during the outage:\n{command.text()}"
        pg_cluster.start()

        outage = Outage(runner, relay, worker, server, fed, published, served, url, during)
        for n, settings in enumerate((fed, published, served)):
            outage.after[settings.database_schema] = append(settings, 2, seed=10 + n)
        yield outage
    finally:
        for command in commands:
            command.kill()
        if not pg_cluster.running:
            pg_cluster.start()
        for settings in (fed, published, served):
            drop_cluster_schema(settings)


def test_projections_run_rides_out_a_restart_and_applies_what_came_after(outage: Outage) -> None:
    eventually(lambda: caught_up(outage.fed), 60, "the runner to apply the new events")
    log = open_log(outage.fed)
    try:
        table = process_table(outage.fed, log)
        rows = eventually(lambda: table.rows([RUNNER]), 30, "the runner's status row")
        assert [(r.kind, r.state, r.stale) for r in rows] == [(RUNNER, "running", False)]
        assert outage.runner.stop() == 0
        assert table.rows([RUNNER]) == []  # a clean exit deletes its row
    finally:
        log.close()
    reported_once(outage.runner, "projections run: database unavailable")


def test_the_relay_rides_out_a_restart_and_publishes_what_came_after(outage: Outage) -> None:
    eventually(lambda: published_all(outage.published), 60, "the relay to publish")
    assert outage.relay.stop() == 0
    reported_once(outage.relay, "relay: database unavailable")


def test_a_kafka_fed_worker_rides_out_a_restart_and_applies_what_came_after(
    outage: Outage,
) -> None:
    eventually(lambda: all_applied(outage.published), 90, "the worker to apply the new events")
    assert outage.worker.stop() == 0
    reported_once(outage.worker, "projections run --source kafka: database unavailable")


def test_serve_reports_its_projector_retrying_and_catches_up_by_itself(outage: Outage) -> None:
    checks = outage.readyz_during["context"]["checks"]
    assert checks["database"].startswith("failing: ")
    assert checks["projector"].startswith("retrying since ")
    assert "attempts)" in checks["projector"]
    eventually(lambda: caught_up(outage.served), 60, "the embedded projector to catch up")
    ready = eventually(
        lambda: (r := readyz(outage.url)).status_code == 200 and r.json(), 30, "/readyz"
    )
    assert ready["status"] == "ready", ready
    metrics = httpx.get(f"{outage.url}/metrics", timeout=30).text
    assert 'sessionstore_process_up{process="projector"} 1.0' in metrics
    retries = next(
        line
        for line in metrics.splitlines()
        if line.startswith("sessionstore_process_retries_total")
    )
    assert float(retries.split()[-1]) >= 1
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it (its own convention).
    assert outage.server.stop() in (0, -signal.SIGTERM)
    assert outage.server.says("Application shutdown complete")
    reported_once(outage.server, "embedded projector: database unavailable")
