"""The Kafka-fed projection worker: consumes the relay's topic and applies it to the views.

Workers with the same group id share the topic's partitions (Kafka's consumer group protocol),
so views scale out by partition. Each poll's events go through ``projections.feed`` (per-session
versions make redeliveries harmless) in one view transaction; only then are the offsets
committed, so a crash at any point redelivers at most what was not yet committed, and applying
it again changes nothing.

A message that is not a readable sessionstore event (bad JSON, missing fields, unknown event
type, invalid payload, a class_version newer than this code) is logged with its partition and
offset, copied to the dead-letter topic with the reason in its headers, and skipped: one bad
message never stops the views.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError

from sessionstore.adapters.kafka.messages import MalformedMessage, decode
from sessionstore.adapters.kafka.relay import Producer, ensure_topic, kafka_config, open_producer
from sessionstore.adapters.settings import Settings
from sessionstore.domain.errors import BrokerUnavailable
from sessionstore.domain.ports import RecordedEvent
from sessionstore.events.codec import EventCodec
from sessionstore.projections.feed import DeliveredFeed
from sessionstore.projections.supervision import Backoff, Supervisor

log = logging.getLogger("sessionstore.kafka_worker")


@dataclass
class WorkerStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    healed: int = 0
    dead_lettered: int = 0
    quarantined: int = 0
    """Events the views could not apply (or that wait behind one): quarantined, not retried."""
    partitions: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: int | None
    """The group's committed offset (None: nothing committed yet, it reads from the start)."""
    end: int
    """The partition's end offset (the offset the next message will get)."""

    @property
    def lag(self) -> int:
        # Never negative (Tansu, the test broker, reports a partition's end as the last
        # batch's base offset + 1, which can be below what the group has committed).
        return max(0, self.end - (self.committed or 0))


def group_lag(settings: Settings) -> list[PartitionLag]:
    """How far the Kafka-fed workers' consumer group is behind the topic, per partition. Reads
    the group's committed offsets without joining it."""
    try:
        consumer = KafkaConsumer(
            **kafka_config(settings), group_id=settings.kafka_group_id, enable_auto_commit=False
        )
    except KafkaError as e:
        raise BrokerUnavailable(settings.kafka_bootstrap_servers, str(e)) from e
    try:
        partitions = consumer.partitions_for_topic(settings.kafka_topic) or set()
        tps = [TopicPartition(settings.kafka_topic, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps) if tps else {}
        return [PartitionLag(tp.partition, consumer.committed(tp), int(ends[tp])) for tp in tps]
    except KafkaError as e:
        raise BrokerUnavailable(settings.kafka_bootstrap_servers, str(e)) from e
    finally:
        consumer.close(autocommit=False)


def open_consumer(settings: Settings, **overrides: Any) -> Any:
    """A consumer in the configured group, offsets committed by hand, from the earliest offset
    for a new group. BrokerUnavailable if no broker answers."""
    config = {
        **kafka_config(settings),
        "group_id": settings.kafka_group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.kafka_max_poll_records,
        "fetch_max_wait_ms": int(settings.kafka_fetch_wait_seconds * 1000),
        "session_timeout_ms": int(settings.kafka_session_timeout_seconds * 1000),
        "heartbeat_interval_ms": int(settings.kafka_session_timeout_seconds * 1000 / 3),
    } | overrides
    try:
        return KafkaConsumer(settings.kafka_topic, **config)
    except KafkaError as e:
        raise BrokerUnavailable(settings.kafka_bootstrap_servers, str(e)) from e


def not_in_log(recorded: RecordedEvent, located: dict[UUID, tuple[UUID, int, int]]) -> str | None:
    """Why a well-formed event is not this store's (another deployment's relay on the same
    topic, a stray producer), given ``EventLog.locate_events`` of the batch; None if it is."""
    event = recorded.event
    where = located.get(event.event_id)
    if where is None:
        return f"event {event.event_id} is not in this store's log"
    if where != (event.session_id, event.version, recorded.position):
        sid, version, position = where
        return (
            f"event {event.event_id} is session {sid} v{version} at position {position} in "
            f"this store's log, not session {event.session_id} v{event.version} at position "
            f"{recorded.position}"
        )
    return None


class KafkaProjectionWorker:
    """See the module docstring."""

    def __init__(
        self,
        feed: DeliveredFeed,
        settings: Settings,
        *,
        consumer_factory: Callable[[], Any] | None = None,
        producer_factory: Callable[[], Producer] | None = None,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
    ) -> None:
        self.feed = feed
        self.settings = settings
        self.codec = EventCodec()
        self.limits = settings.limits
        self.stats = WorkerStats()
        self._consumer_factory = consumer_factory or (lambda: open_consumer(settings))
        self._producer_factory = producer_factory or (lambda: open_producer(settings))
        self._consumer: Any = None
        self._dead_letters: Producer | None = None
        self._on_dead_letter = on_dead_letter
        self._dead_letter_sends: list[Any] = []
        self.assigned: frozenset[int] = frozenset()
        """The partitions the group gave this worker (as of its last poll)."""
        self._coordinator_lost: float | None = None

    def _consumer_now(self) -> Any:
        if self._consumer is None:
            self._consumer = self._consumer_factory()
            self._coordinator_lost = time.monotonic()  # unknown until the first poll finds it
        return self._consumer

    def _check_coordinator(self) -> None:
        """A consumer's poll returns nothing, without an error, while the brokers are down: the
        only sign is that the group coordinator is unknown. Longer than the Kafka timeout is an
        outage (kafka-python has no public API for this; it reads the consumer's coordinator)."""
        if self.coordinator_known():
            self._coordinator_lost = None
            return
        now = time.monotonic()
        if self._coordinator_lost is None:
            self._coordinator_lost = now
        elif now - self._coordinator_lost > self.settings.kafka_timeout_seconds:
            raise BrokerUnavailable(
                self.settings.kafka_bootstrap_servers,
                f"no group coordinator answered for {now - self._coordinator_lost:.0f} s",
            )

    def poll_once(self, timeout: float = 0.5) -> int:
        """Poll, apply, commit offsets; returns how many messages were received."""

        consumer = self._consumer_now()
        try:
            polled = consumer.poll(timeout_ms=int(timeout * 1000))
        except KafkaError as e:
            raise BrokerUnavailable(self.settings.kafka_bootstrap_servers, str(e)) from e
        self._check_coordinator()
        self.assigned = frozenset(tp.partition for tp in consumer.assignment())
        if not polled:
            return 0
        decoded: list[tuple[Any, RecordedEvent]] = []
        bad = 0
        received = 0
        for tp, records in sorted(polled.items(), key=lambda item: item[0].partition):
            self.stats.partitions.add(tp.partition)
            for record in records:
                received += 1
                try:
                    decoded.append(
                        (record, decode(record.value, self.codec, record.key, limits=self.limits))
                    )
                except MalformedMessage as e:
                    self._dead_letter(record, e.reason)
                    bad += 1
        # One query for the whole poll: is each event this store's own?
        located = self.feed.log.locate_events([r.event.event_id for _, r in decoded])
        events: list[RecordedEvent] = []
        for record, recorded in decoded:
            problem = not_in_log(recorded, located)
            if problem:
                self._dead_letter(record, problem)
                bad += 1
            else:
                events.append(recorded)
        result = self.feed.apply(events)
        if bad:
            self._flush_dead_letters()
        try:
            consumer.commit()
        except CommitFailedError as e:
            # The group rebalanced: another worker now owns some of these partitions and will
            # be redelivered what we could not commit; the views already deduplicate it.
            log.warning("offset commit failed after a rebalance (redelivery is harmless): %s", e)
        except KafkaError as e:
            raise BrokerUnavailable(self.settings.kafka_bootstrap_servers, str(e)) from e
        self.stats.received += received
        self.stats.applied += result.applied
        self.stats.duplicates += result.duplicates
        self.stats.healed += result.healed
        self.stats.quarantined += result.quarantined
        self.stats.dead_lettered += bad
        return received

    def _dead_letter(self, record: Any, reason: str) -> None:
        log.error(
            "skipping unreadable message at %s partition %d offset %d (to %s): %s",
            record.topic,
            record.partition,
            record.offset,
            self.settings.kafka_dead_letter_topic,
            reason,
        )
        if self._dead_letters is None:
            ensure_topic(self.settings, self.settings.kafka_dead_letter_topic)
            self._dead_letters = self._producer_factory()
        headers = [
            *(record.headers or []),
            ("dead_letter.reason", reason.encode()),
            ("dead_letter.topic", record.topic.encode()),
            ("dead_letter.partition", str(record.partition).encode()),
            ("dead_letter.offset", str(record.offset).encode()),
        ]
        try:
            sent = self._dead_letters.send(
                self.settings.kafka_dead_letter_topic,
                key=record.key or b"",
                value=record.value or b"",
                headers=headers,
            )
        except KafkaError as e:
            raise BrokerUnavailable(self.settings.kafka_bootstrap_servers, str(e)) from e
        self._dead_letter_sends.append(sent)
        if self._on_dead_letter is not None:
            self._on_dead_letter(DeadLetter(record.partition, record.offset, reason))

    def _flush_dead_letters(self) -> None:
        """Dead letters must be acknowledged before the offsets that skip them are committed."""
        sends, self._dead_letter_sends = self._dead_letter_sends, []
        if self._dead_letters is None or not sends:
            return
        try:
            self._dead_letters.flush(timeout=self.settings.kafka_timeout_seconds * 4)
        except KafkaError as e:
            raise BrokerUnavailable(self.settings.kafka_bootstrap_servers, str(e)) from e
        for sent in sends:
            if not sent.is_done or sent.failed():
                detail = "dead letters not acknowledged" if not sent.is_done else sent.exception
                raise BrokerUnavailable(self.settings.kafka_bootstrap_servers, str(detail))

    def catch_up(self, stop: threading.Event | None = None, *, timeout: float = 120.0) -> int:
        """Consume until this worker's partitions are read up to their end offsets as of the
        moment it got them (joining the group first); returns the messages received.
        BrokerUnavailable if that does not happen within ``timeout`` seconds."""
        consumer = self._consumer_now()
        deadline = time.monotonic() + timeout
        ends: dict[Any, int] | None = None
        received = 0
        while stop is None or not stop.is_set():
            got = self.poll_once(timeout=0.2)
            received += got
            assigned = consumer.assignment()
            if assigned and ends is None:
                ends = consumer.end_offsets(list(assigned))
            if ends is not None:
                if set(ends) != set(assigned):  # rebalanced: new partitions, new targets
                    ends = consumer.end_offsets(list(assigned))
                # ... and one empty poll more: some brokers (Tansu) report a partition's end as
                # its last batch's first offset + 1, which a split batch can pass too early.
                if got == 0 and all(consumer.position(tp) >= end for tp, end in ends.items()):
                    break
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    self.settings.kafka_bootstrap_servers,
                    f"not caught up with {self.settings.kafka_topic} within {timeout:.0f} s",
                )
        return received

    def run(
        self,
        stop: threading.Event,
        *,
        report: Callable[[str], None] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        """Consume until ``stop``; back off while the brokers or the database fail.

        What resets the back-off (``projections.supervision``): a poll whose messages were
        applied and committed, or an empty poll once the consumer has joined its group (the
        brokers answer), provided that, after a failure (or at start), the database answers a
        probe too. An empty poll alone proves nothing: it touches no database, and a consumer
        polls "successfully" while the brokers are down. On a failure the consumer is dropped
        (it has joined by then: one that left mid-join could hold up a broker's rebalance).
        Configuration errors (outdated views) propagate."""
        supervisor = supervisor or Supervisor(
            "projections run --source kafka",
            policy=Backoff(cap=self.settings.retry_max_seconds),
            report=report,
        )

        def attempt() -> bool:
            if self.poll_once():
                return True
            if not self.in_group():
                return False  # no verdict yet: poll_once gives up after the Kafka timeout
            if supervisor.state.state != "running":
                self.probe_database()
            return True

        def step() -> bool:
            try:
                return attempt()
            except Exception:
                # Offsets were not committed: a new consumer resumes from the last commit, so
                # the failed poll's messages come again (and one that is not in the group
                # while we wait holds no partitions).
                self._close_consumer()
                raise

        supervisor.loop(step, stop)

    def coordinator_known(self) -> bool:
        """Whether the consumer knows its group's coordinator (a broker that answers): kafka-
        python forgets it when the connection fails. True for a consumer that cannot tell (a
        test double). Reads the consumer's state only: kafka-python has no public API for it."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        return coordinator is None or getattr(coordinator, "coordinator_id", 0) is not None

    def in_group(self) -> bool:
        """Whether the consumer has joined its group (a stable member, with or without
        partitions) and knows the coordinator. A consumer is not dropped before that: one that
        leaves in the middle of a join can leave some brokers' group waiting for it."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        stable = getattr(coordinator, "stable", None)
        return self.coordinator_known() and (stable is None or bool(stable()))

    def probe_database(self) -> None:
        """One cheap read of the views' tracking rows (and the tables' fingerprints): raises
        what the database raises (StorageError, or ProjectionOutdated)."""
        positions = self.feed.store.positions([p.name for p in self.feed.projections])
        self.feed.check_tables({name: t.generation for name, t in positions.items()})

    def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close(autocommit=False)
            except Exception as e:  # noqa: BLE001 - closing a broken client may fail any way
                log.debug("closing the consumer failed: %s", e)

    def close(self) -> None:
        self._close_consumer()
        producer, self._dead_letters = self._dead_letters, None
        if producer is not None:
            producer.close(timeout=self.settings.kafka_timeout_seconds)
