"""One settings object, read from ``SESSIONSTORE_*`` environment variables, validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sessionstore.domain.contract import (
    DEFAULT_MAX_CONTENT_BYTES,
    DEFAULT_MAX_JSON_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_JSON_KEYS,
    MAX_JSON_DEPTH_CEILING,
    Limits,
)

DEFAULT_DATABASE_URL = "sqlite:///sessionstore.db"
Backend = Literal["memory", "sqlite", "postgres"]
_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
"""Kafka's rule for topic names."""


class SettingsError(ValueError):
    """Settings are missing or invalid; the message names each offending variable."""


class Settings(BaseSettings):
    """Configuration of a sessionstore process. See README "Configuration" for each variable."""

    model_config = SettingsConfigDict(env_prefix="SESSIONSTORE_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``memory://`` or
    ``postgresql://user:password@host:port/dbname``."""
    database_schema: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "public"
    """PostgreSQL schema holding sessionstore's tables."""
    pool_min_size: Annotated[int, Field(ge=1, le=100)] = 2
    pool_max_size: Annotated[int, Field(ge=1, le=200)] = 10
    connect_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    cache_size: Annotated[int, Field(ge=0)] = 10_000
    max_content_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_CONTENT_BYTES
    max_json_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_JSON_BYTES
    max_json_depth: Annotated[int, Field(ge=1, le=MAX_JSON_DEPTH_CEILING)] = DEFAULT_MAX_JSON_DEPTH
    """Most levels of nested objects and arrays in one JSON value (metadata, context, tool
    call arguments)."""
    max_json_keys: Annotated[int, Field(ge=1, le=1_000_000)] = DEFAULT_MAX_JSON_KEYS
    """Most object keys in one JSON value, counted through every level."""
    http_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    """Address ``sessionstore serve`` listens on (loopback unless you mean to expose it)."""
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    http_max_body_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    """Largest HTTP request body; a larger one is refused with 413 before it is parsed."""
    http_wait_seconds: Annotated[float, Field(ge=0, le=60)] = 5.0
    """Longest a read with ``min_position`` waits for the view before answering 503."""
    kafka_bootstrap_servers: Annotated[str, Field(min_length=1)] = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list of Kafka brokers (relay and Kafka-fed projector)."""
    kafka_topic: Annotated[str, Field(pattern=_TOPIC)] = "sessionstore.events"
    """Topic the relay produces every event to, keyed by session id."""
    kafka_dead_letter_topic: Annotated[str, Field(pattern=_TOPIC)] = (
        "sessionstore.events.dead-letter"
    )
    """Where the Kafka-fed projector puts messages it cannot read (with the reason in headers)."""
    kafka_group_id: Annotated[str, Field(min_length=1, max_length=200)] = "sessionstore-projections"
    """Consumer group of the Kafka-fed projection workers (they share the topic's partitions)."""
    kafka_client_id: Annotated[str, Field(min_length=1, max_length=200)] = "sessionstore"
    kafka_topic_partitions: Annotated[int, Field(ge=1, le=10_000)] = 6
    """Partitions the relay creates the topic with when it does not exist yet."""
    kafka_replication_factor: Annotated[int, Field(ge=1, le=10)] = 1
    """Replication factor the relay creates the topic with (3 on a production cluster)."""
    kafka_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    """How long a Kafka client waits for the brokers (bootstrap, metadata, acknowledgements)
    before the relay or worker reports them unavailable and backs off."""
    kafka_session_timeout_seconds: Annotated[float, Field(ge=1, le=3600)] = 10.0
    """Consumer group session timeout of the Kafka-fed workers: a worker silent this long is
    dropped from the group and its partitions go to the others (heartbeats every third)."""
    kafka_fetch_wait_seconds: Annotated[float, Field(gt=0, le=60)] = 0.02
    """Longest a Kafka-fed worker's fetch waits at the broker for new messages (Apache Kafka
    answers as soon as there is one; some brokers wait this long: it bounds the added lag)."""
    kafka_max_poll_records: Annotated[int, Field(ge=1, le=100_000)] = 2000
    """Most messages a Kafka-fed worker applies in one view transaction."""
    relay_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Events the relay reads from the log and produces per acknowledged batch."""
    retry_max_seconds: Annotated[float, Field(ge=0.2, le=3600)] = 30.0
    """Longest pause between two attempts of a long-running process (runner, Kafka worker,
    relay, the projector in ``serve``) while the database or the brokers fail: the back-off
    starts at 0.2 s and doubles up to this."""
    heartbeat_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 10.0
    """How often a separately running process (runner, Kafka worker, relay) writes its status
    row; a row not written for three of these is shown as stale."""
    sqlite_busy_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 10
    """How long a SQLite connection waits for another one's write lock before failing with
    "database is locked" (which long-running processes then retry)."""

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"sqlite", "memory", "postgres", "postgresql"}:
            msg = (
                f"unsupported scheme {scheme!r}: use sqlite:///path.db, memory:// or "
                "postgresql://user@host:port/dbname"
            )
            raise ValueError(msg)
        if scheme == "sqlite" and not sqlite_path(value):
            msg = "sqlite URL needs a file path, e.g. sqlite:///sessionstore.db"
            raise ValueError(msg)
        return value

    @property
    def backend(self) -> Backend:
        scheme = urlsplit(self.database_url).scheme
        if scheme == "memory":
            return "memory"
        if scheme == "sqlite":
            return "sqlite"
        return "postgres"

    @property
    def limits(self) -> Limits:
        return Limits(
            max_content_bytes=self.max_content_bytes,
            max_json_bytes=self.max_json_bytes,
            max_json_depth=self.max_json_depth,
            max_json_keys=self.max_json_keys,
        )

    @property
    def sqlite_path(self) -> Path:
        return Path(sqlite_path(self.database_url))

    def redacted_url(self) -> str:
        """The database URL without its password, for logs and status output."""
        parts = urlsplit(self.database_url)
        if parts.password is None:
            return self.database_url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()


def sqlite_path(url: str) -> str:
    # sqlite:///relative.db -> "relative.db"; sqlite:////abs/x.db -> "/abs/x.db"
    return unquote(url.split("sqlite://", 1)[1][1:]) if url.startswith("sqlite://") else ""


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (overrides win), or raise SettingsError naming keys."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        problems = "; ".join(
            f"SESSIONSTORE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in e.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
