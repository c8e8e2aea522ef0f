"""The relay: publishes the event log to a Kafka topic, at least once, in per-session order.

It reads the log in global order after its saved position, produces each event (key = session
id, see ``adapters.kafka.messages``) with ``acks=all`` and the idempotent producer, waits until
the brokers acknowledged the whole batch, and only then moves its position
(``relay_positions``). Nothing in the request path talks to Kafka: appends only write the log,
so there is no dual write. If the relay dies between the acknowledgement and saving its
position it publishes those events again on restart (consumers deduplicate by event id /
session version). If the brokers or the database fail it backs off (exponentially, with jitter,
up to ``max_backoff``) and retries from the saved position, reporting its lag once per outage
(``projections.supervision``); it never skips events.

An event it cannot publish for a reason that is about the event itself (its stored row cannot be
decoded, or it cannot be encoded as a message) goes to the dead-letter topic instead, with the
reason in its headers, and the relay moves past it: one bad row never stops the topic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from sessionstore.adapters.kafka.dead_letters import RelayDeadLetter, dead_letter_of, ids_of
from sessionstore.adapters.kafka.messages import Message, encode
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.sql.log import SQLRunner
from sessionstore.domain.errors import BrokerUnavailable, SessionStoreError, UndecodableEvent
from sessionstore.domain.ports import LOG_START, EventLog, LogCursor, RecordedEvent
from sessionstore.projections.runner import Waiter
from sessionstore.projections.supervision import Backoff, Supervisor

log = logging.getLogger("sessionstore.relay")


@dataclass(frozen=True, slots=True)
class RelayPosition:
    topic: str
    cursor: LogCursor
    published: int
    """Events acknowledged by the brokers since the relay started on this topic (counting
    re-publications after a crash)."""
    updated_at: datetime | None
    dead_lettered: int = 0
    """Events sent to the dead-letter topic instead (rows it could not decode or encode)."""


class RelayPositionMoved(SessionStoreError):
    """Another relay moved this topic's position meanwhile (two relays on one topic)."""

    code = "relay-position-moved"

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"relay position of topic {topic} moved under us: is a second relay running on it?",
            topic=topic,
        )


class RelayPositions:
    """Where each topic's relay has got to, in the store's own database (memory when none)."""

    def __init__(self, db: SQLRunner | None) -> None:
        self._db = db
        self._memory: dict[str, RelayPosition] = {}
        self._lock = threading.Lock()

    def get(self, topic: str) -> RelayPosition:
        if self._db is None:
            with self._lock:
                return self._memory.get(topic, RelayPosition(topic, LOG_START, 0, None))
        p = self._db.placeholder
        rows = self._db._raw(
            "SELECT tx, position, published, updated_at, dead_lettered FROM relay_positions "
            f"WHERE topic = {p}",
            [topic],
        )
        if not rows:
            return RelayPosition(topic, LOG_START, 0, None)
        tx, position, published, updated, dead = rows[0]
        when = datetime.fromisoformat(updated) if isinstance(updated, str) else updated
        cursor = LogCursor(int(tx), int(position))
        return RelayPosition(topic, cursor, int(published), when, int(dead))

    def advance(
        self, old: RelayPosition, cursor: LogCursor, events: int, dead_lettered: int = 0
    ) -> RelayPosition:
        """Move from ``old`` to ``cursor`` (compare-and-set: RelayPositionMoved if another
        relay moved it first), counting ``events`` published and ``dead_lettered``."""
        new = RelayPosition(
            old.topic, cursor, old.published + events, None, old.dead_lettered + dead_lettered
        )
        if self._db is None:
            with self._lock:
                current = self._memory.get(old.topic, RelayPosition(old.topic, LOG_START, 0, None))
                if current.cursor != old.cursor:
                    raise RelayPositionMoved(old.topic)
                self._memory[old.topic] = new
            return new
        p = self._db.placeholder
        if old.updated_at is None and old.cursor == LOG_START:
            self._db._write(
                "INSERT INTO relay_positions (topic, tx, position, published) "
                f"VALUES ({p}, 0, 0, 0) ON CONFLICT (topic) DO NOTHING",
                [old.topic],
            )
        rows = self._db._write_returning(
            f"UPDATE relay_positions SET tx = {p}, position = {p}, published = published + {p}, "
            f"dead_lettered = dead_lettered + {p}, updated_at = {p} "
            f"WHERE topic = {p} AND tx = {p} AND position = {p} RETURNING topic",
            [
                cursor.tx,
                cursor.position,
                events,
                dead_lettered,
                datetime.now(UTC).isoformat(),
                old.topic,
                old.cursor.tx,
                old.cursor.position,
            ],
        )
        if not rows:
            raise RelayPositionMoved(old.topic)
        return self.get(old.topic)


def relay_positions(settings: Settings, log: EventLog) -> RelayPositions:
    """Relay positions in the store's database (in this process for ``memory://``)."""
    if settings.backend == "memory":
        return RelayPositions(None)
    return RelayPositions(cast("SQLRunner", log))


class Producer(Protocol):
    """The part of kafka-python's KafkaProducer the relay uses."""

    def send(self, topic: str, *, key: bytes, value: bytes, headers: list[Any]) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


def kafka_config(settings: Settings) -> dict[str, Any]:
    """Client settings every sessionstore Kafka client shares."""
    timeout_ms = int(settings.kafka_timeout_seconds * 1000)
    return {
        "bootstrap_servers": [s.strip() for s in settings.kafka_bootstrap_servers.split(",")],
        "client_id": settings.kafka_client_id,
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
        "reconnect_backoff_max_ms": 2000,
    }


def open_producer(settings: Settings, **overrides: Any) -> Producer:
    """An acks=all, idempotent producer; BrokerUnavailable if no broker answers."""

    timeout_ms = int(settings.kafka_timeout_seconds * 1000)
    config = {
        **kafka_config(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_block_ms": timeout_ms,
        "delivery_timeout_ms": max(timeout_ms * 3, timeout_ms + 1000),
    } | overrides
    try:
        producer: Producer = KafkaProducer(**config)
    except KafkaError as e:
        raise BrokerUnavailable(settings.kafka_bootstrap_servers, str(e)) from e
    return producer


def ensure_topic(settings: Settings, topic: str) -> bool:
    """Create ``topic`` (with the configured partitions and replication) unless it exists;
    returns whether it was created. BrokerUnavailable if no broker answers."""

    try:
        admin = KafkaAdminClient(**kafka_config(settings))
    except KafkaError as e:
        raise BrokerUnavailable(settings.kafka_bootstrap_servers, str(e)) from e
    try:
        if topic in admin.list_topics():
            return False
        admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=settings.kafka_topic_partitions,
                    replication_factor=settings.kafka_replication_factor,
                )
            ]
        )
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as e:
        raise BrokerUnavailable(settings.kafka_bootstrap_servers, str(e)) from e
    finally:
        admin.close()


@dataclass(frozen=True, slots=True)
class RelayStatus:
    topic: str
    cursor: LogCursor
    head: LogCursor
    lag_events: int
    published: int
    updated_at: datetime | None
    dead_lettered: int = 0


class Relay:
    """Follows the log and publishes it; see the module docstring."""

    def __init__(
        self,
        log: EventLog,
        positions: RelayPositions,
        settings: Settings,
        *,
        producer_factory: Callable[[], Producer] | None = None,
        topic: str | None = None,
        batch_size: int | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.log = log
        self.positions = positions
        self.settings = settings
        self.topic = topic or settings.kafka_topic
        self.batch_size = batch_size or settings.relay_batch_size
        self.max_backoff = max_backoff
        self._factory = producer_factory or (lambda: open_producer(settings))
        self._producer: Producer | None = None
        self._topic_checked = False
        self._dead_letter_topic_checked = False
        self.dead_letters: list[RelayDeadLetter] = []
        """What this relay dead-lettered (since it was made), oldest first."""

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.kafka_bootstrap_servers

    def status(self) -> RelayStatus:
        position = self.positions.get(self.topic)
        return RelayStatus(
            topic=self.topic,
            cursor=position.cursor,
            head=self.log.head(),
            lag_events=self.log.count_after(position.cursor),
            published=position.published,
            updated_at=position.updated_at,
            dead_lettered=position.dead_lettered,
        )

    def connect(self) -> None:
        """Reach the brokers now (create the topic if needed): BrokerUnavailable if none
        answers. Publishing connects by itself; this is for failing early at start."""
        try:
            self._connect()
        except BrokerUnavailable:
            self._drop_producer()
            raise

    def _connect(self) -> Producer:
        if self._producer is None:
            if not self._topic_checked:
                if ensure_topic(self.settings, self.topic):
                    log.info("created topic %s", self.topic)
                self._topic_checked = True
            self._producer = self._factory()
        return self._producer

    def _drop_producer(self) -> None:
        """After a failure: start over with a new producer (and re-check the topic)."""
        producer, self._producer = self._producer, None
        self._topic_checked = False
        self._dead_letter_topic_checked = False
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as e:  # noqa: BLE001 - closing a broken client may fail any way
                log.debug("closing the producer failed: %s", e)

    def step(self) -> int:
        """Publish one batch; returns how many events it moved past (0: nothing new).

        BrokerUnavailable if the brokers did not acknowledge the whole batch (the position
        has not moved; the next step sends the batch again). An event that cannot be published
        because of what it is goes to the dead-letter topic, acknowledged like the others."""
        position = self.positions.get(self.topic)
        items: list[RecordedEvent | UndecodableEvent]
        try:
            items = list(self.log.read_log(position.cursor, limit=self.batch_size))
        except UndecodableEvent as e:
            items = [*e.decoded, e]
        if not items:
            return 0
        messages: list[Message] = []
        dead: list[tuple[RecordedEvent | UndecodableEvent, str]] = []
        for item in items:
            if isinstance(item, UndecodableEvent):
                dead.append((item, f"the stored row cannot be decoded: {item.reason}"))
                continue
            try:
                messages.append(encode(item))
            except Exception as e:  # noqa: BLE001 - anything encode raises is about this event
                dead.append((item, f"the event cannot be encoded as a message: {e!r}"))
        try:
            producer = self._connect()
            futures = [
                producer.send(self.topic, key=m.key, value=m.value, headers=m.headers)
                for m in messages
            ]
            records: list[RelayDeadLetter] = []
            if dead:
                sent, records = self._send_dead_letters(producer, dead)
                futures += sent
            producer.flush(timeout=self.settings.kafka_timeout_seconds * 4)
            for future in futures:
                if not future.is_done:
                    msg = "the brokers did not acknowledge in time"
                    raise BrokerUnavailable(self.bootstrap_servers, msg)
                if future.failed():
                    raise BrokerUnavailable(self.bootstrap_servers, str(future.exception))
        except BrokerUnavailable:
            self._drop_producer()
            raise
        except Exception as e:
            if not isinstance(e, KafkaError):
                raise
            self._drop_producer()
            raise BrokerUnavailable(self.bootstrap_servers, str(e)) from e
        self.positions.advance(position, items[-1].cursor, len(messages), len(dead))
        self.dead_letters.extend(records)
        return len(items)

    def _send_dead_letters(
        self, producer: Producer, dead: list[tuple[RecordedEvent | UndecodableEvent, str]]
    ) -> tuple[list[Any], list[RelayDeadLetter]]:
        topic = self.settings.kafka_dead_letter_topic
        if not self._dead_letter_topic_checked:
            if ensure_topic(self.settings, topic):
                log.info("created topic %s", topic)
            self._dead_letter_topic_checked = True
        futures, records = [], []
        for item, reason in dead:
            message = dead_letter_of(item, reason, self.topic)
            event_id, session_id = ids_of(item)
            log.error(
                "cannot publish event %s (session %s, position %d) to %s; sent to %s: %s",
                event_id,
                session_id,
                item.cursor.position,
                self.topic,
                topic,
                reason,
            )
            futures.append(
                producer.send(topic, key=message.key, value=message.value, headers=message.headers)
            )
            records.append(RelayDeadLetter(event_id, session_id, item.cursor.position, reason))
        return futures, records

    def catch_up(self, stop: threading.Event | None = None) -> int:
        """Publish everything the log has now (BrokerUnavailable stops it)."""
        total = 0
        while stop is None or not stop.is_set():
            n = self.step()
            if n == 0:
                break
            total += n
        return total

    def run(
        self,
        stop: threading.Event,
        waiter: Waiter,
        *,
        poll_interval: float = 0.5,
        report: Callable[[str], None] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        """Live: publish, wait for news, repeat until ``stop``. While the brokers or the
        database fail it backs off and retries (``projections.supervision``: every completed
        step counts as a success, since it read the database and published what it found);
        configuration errors propagate."""
        say = report or log.info
        supervisor = supervisor or Supervisor(
            "relay", policy=Backoff(cap=self.max_backoff), report=report
        )
        published = 0
        last_report = time.monotonic()

        def step() -> bool:
            nonlocal published, last_report
            try:
                self.connect()
                n = self.catch_up(stop)
            except RelayPositionMoved as e:
                say(e.message)
                return True
            published += n
            if published and time.monotonic() - last_report >= 10:
                status = self.status()
                say(
                    f"published {published} events; position {status.cursor.position}, "
                    f"lag {status.lag_events}"
                )
                published, last_report = 0, time.monotonic()
            if n == 0:
                waiter.wait(poll_interval)
            return True

        supervisor.loop(step, stop, context=self._waiting)

    def _waiting(self) -> str:
        """How many events wait to be published (for the report of a failure)."""
        return f"{self.log.count_after(self.positions.get(self.topic).cursor)} events waiting"

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=self.settings.kafka_timeout_seconds)
