"""Poison on the Kafka path, against a real Kafka-protocol broker (Tansu) and real databases: the
relay dead-letters the events it cannot publish (a row it cannot decode, an event it cannot
encode) and keeps publishing the rest; a Kafka-fed worker meets those rows when it heals the gap
from the log, quarantines them, and its views and quarantine end as a log rebuild leaves them."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import orjson
from typer.testing import CliRunner

from sessionstore.adapters.bootstrap import build_store
from sessionstore.adapters.cli.root import app
from sessionstore.adapters.kafka.relay import Relay, relay_positions
from sessionstore.adapters.kafka.worker import KafkaProjectionWorker
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.serialization import SessionStoredEvent
from sessionstore.domain.ports import EventLog
from sessionstore.events.catalogue import ContextUpdated
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.feed import DeliveredFeed
from sessionstore.projections.runner import rebuild
from tests.integration.test_kafka import (
    all_rows,
    db_settings,  # noqa: F401 - the fixture
    env_of,
    opened,  # noqa: F401 - the fixture
    read_topic,
    seed,
    with_kafka,
)
from tests.poison import GARBAGE, MAPPER, RawLog, message, stored, undecodable

ENCODABLE_DEPTH = 253
"""Context nested this deep decodes (pydantic allows it) but orjson cannot write the message."""


def too_deep(sid: UUID, version: int) -> SessionStoredEvent:
    """A ContextUpdated row nested deeper than the relay can encode (written by another JSON
    library: orjson refuses to write it, which is the point)."""
    nested: Any = 0
    for _ in range(ENCODABLE_DEPTH):
        nested = {"a": nested}
    row = MAPPER.encode(
        ContextUpdated(
            session_id=sid, version=version, occurred_at=datetime.now(UTC), event_id=uuid4()
        )
    )
    return replace(row, state=json.dumps({"set": {"deep": nested}, "removed": []}).encode())


def quarantine(views: ViewStore) -> list[tuple[str, UUID, UUID | None, str]]:
    return [(q.projection, q.event_id, q.held_behind, q.error) for q in views.quarantined()]


def rebuilt_with_quarantine(log: EventLog, views: ViewStore) -> tuple[Any, Any]:
    """The views and quarantine a log-fed rebuild leaves (the reference)."""
    rebuild(log, views, all_projections())
    return all_rows(views), quarantine(views)


def test_the_relay_dead_letters_what_it_cannot_publish_and_workers_quarantine_it(
    db_settings: Settings,  # noqa: F811
    kafka_bootstrap: str,
    kafka_names: dict[str, str],
    opened: tuple[EventLog, ViewStore],  # noqa: F811
) -> None:
    settings = with_kafka(db_settings, kafka_bootstrap, kafka_names, relay_batch_size=7)
    seed(settings, sessions=4, turns=2)
    log, views = opened
    store = build_store(settings)
    raw = RawLog(settings)
    try:
        p = store.create(tenant_id="acme", user_id="p", agent_id="bot").session_id
        q = store.create(tenant_id="acme", user_id="q", agent_id="bot").session_id
        bad, deep = undecodable(message(p, 2)), too_deep(q, 2)
        raw.insert(bad)
        raw.insert(stored(message(p, 3, "behind the bad row")))
        raw.insert(deep)
        store.add_message(q, role="user", content="after the deep context")
        seed(settings, sessions=2, turns=1, seed_=9)  # more sessions after them
    finally:
        store.close()
    total = len(log.stored_rows(limit=100_000))  # read_log cannot: it stops at the bad row

    relay = Relay(log, relay_positions(settings, log), settings)
    try:
        assert relay.catch_up() == total
        status = relay.status()
    finally:
        relay.close()

    assert (status.cursor, status.lag_events) == (log.head(), 0)
    assert (status.published, status.dead_lettered) == (total - 2, 2)
    published = {
        orjson.loads(r.value)["event_id"] for r in read_topic(kafka_bootstrap, settings.kafka_topic)
    }
    rows = log.stored_rows(limit=100_000)
    assert published == {str(r.event_id) for r in rows} - {str(bad.event_id), str(deep.event_id)}
    letters = {
        dict(r.headers)["event_id"].decode(): r
        for r in read_topic(kafka_bootstrap, settings.kafka_dead_letter_topic)
    }
    assert set(letters) == {str(bad.event_id), str(deep.event_id)}
    undecoded = letters[str(bad.event_id)]
    headers = dict(undecoded.headers)
    assert undecoded.value == GARBAGE
    assert undecoded.key == str(p).encode()
    assert headers["dead_letter.reason"].decode().startswith("the stored row cannot be decoded")
    assert (headers["session_id"], headers["version"]) == (str(p).encode(), b"2")
    assert headers["dead_letter.topic"] == settings.kafka_topic.encode()
    unencoded = letters[str(deep.event_id)]
    assert b"Recursion limit reached" in dict(unencoded.headers)["dead_letter.reason"]
    assert orjson.loads(unencoded.value)["event_id"] == str(deep.event_id)
    shown = CliRunner().invoke(app, ["relay", "status", "--json"], env=env_of(settings))
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["dead_lettered"] == 2

    worker = KafkaProjectionWorker(DeliveredFeed(log, views, all_projections()), settings)
    try:
        worker.catch_up()
    finally:
        worker.close()
    assert worker.stats.received == total - 2
    assert worker.stats.healed == 2  # both from the log, before the next event of their session
    assert worker.stats.quarantined == 2  # the bad row and the message behind it
    held = {(row.projection, row.session_id, row.version) for row in views.quarantined()}
    assert held == {
        (name, p, version)
        for name in ("session_state", "transcript", "metrics", "cleanup")
        for version in (2, 3)
    }
    # The views can hold the deep context (it is the message's envelope that is too deep).
    (state,) = [
        r for r in all_rows(views)[("session_state", "session_state")] if r["session_id"] == q
    ]
    assert (state["version"], state["message_count"]) == (3, 1)
    fed, contained = all_rows(views), quarantine(views)
    assert rebuilt_with_quarantine(log, views) == (fed, contained)
