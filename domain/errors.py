"""Typed domain errors. Each names what was wrong and carries the context a caller needs.

``code`` is a stable, machine-readable name (the HTTP layer uses it as the problem type).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from sessionstore.domain.ports import LogCursor, RecordedEvent
from sessionstore.events.codec import CodecError


class SessionStoreError(Exception):
    """Base class of every error sessionstore raises on purpose."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = context


class SessionNotFound(SessionStoreError):
    code = "session-not-found"

    def __init__(self, session_id: UUID) -> None:
        super().__init__(f"session {session_id} not found", session_id=session_id)
        self.session_id = session_id


class SessionAlreadyExists(SessionStoreError):
    code = "session-exists"

    def __init__(self, session_id: UUID) -> None:
        super().__init__(f"session {session_id} already exists", session_id=session_id)
        self.session_id = session_id


class InvalidTransition(SessionStoreError):
    """The command is not allowed in the session's current status."""

    code = "invalid-transition"

    def __init__(self, session_id: UUID, status: str, action: str, detail: str = "") -> None:
        message = f"cannot {action} session {session_id}: it is {status}"
        if detail:
            message += f" ({detail})"
        super().__init__(message, session_id=session_id, status=status, action=action)
        self.session_id, self.status, self.action = session_id, status, action


class TranscriptViolation(SessionStoreError):
    """The message would make the transcript invalid to send to an LLM (tool call pairing)."""

    code = "transcript-violation"

    def __init__(self, session_id: UUID, detail: str, open_tool_calls: tuple[str, ...]) -> None:
        super().__init__(
            f"session {session_id}: {detail}",
            session_id=session_id,
            open_tool_calls=list(open_tool_calls),
        )
        self.session_id, self.open_tool_calls = session_id, open_tool_calls


class ConcurrencyConflict(SessionStoreError):
    """``expected_version`` was stale: someone else appended first. Nothing was written."""

    code = "version-conflict"

    def __init__(
        self, session_id: UUID, expected_version: int, actual_version: int, detail: str = ""
    ) -> None:
        super().__init__(
            f"session {session_id}: expected version {expected_version}, "
            f"but it is at version {actual_version}" + (f" ({detail})" if detail else ""),
            session_id=session_id,
            expected_version=expected_version,
            actual_version=actual_version,
        )
        self.session_id = session_id
        self.expected_version, self.actual_version = expected_version, actual_version


class IdempotencyKeyReused(SessionStoreError):
    """The idempotency key was first used for a different request."""

    code = "idempotency-key-reused"

    def __init__(self, key: str, session_id: UUID) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different request "
            f"(on session {session_id})",
            idempotency_key=key,
            session_id=session_id,
        )
        self.key, self.session_id = key, session_id


class InvalidInput(SessionStoreError):
    """The request is malformed. ``errors`` lists each problem as {field, message}."""

    code = "invalid-input"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid input: {summary}", errors=errors)
        self.errors = errors


class PayloadTooLarge(InvalidInput):
    code = "payload-too-large"

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(
            [{"field": field, "message": f"{size} bytes exceeds the limit of {limit}"}]
        )
        self.context.update(field=field, size=size, limit=limit)
        self.field, self.size, self.limit = field, size, limit


class StorageError(SessionStoreError):
    """The database failed or could not be reached. Driver errors never leak past this."""

    code = "storage-error"


class StorageRejected(StorageError):
    """The database refused a *value* as invalid data (a NUL in text, an integer beyond
    bigint, a value too big): not a transient failure, so writing the same rows again fails
    again. Projections quarantine the event whose rows were refused (docs/quarantine.md)."""

    code = "storage-rejected"


class DatabaseMisconfigured(StorageError):
    """The database refuses us for a reason no retry fixes: the database does not exist, the
    login or role is refused, the file's directory is missing, or its schema is newer than this
    code. Long-running processes stop on it instead of retrying (docs/decisions.md §23); the
    message names the server's own reason."""

    code = "database-misconfigured"


class SchemaNotReady(StorageError):
    code = "schema-not-ready"

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"database schema is not ready ({detail}): run `sessionstore db migrate`",
            detail=detail,
        )


class StreamVersionTaken(SessionStoreError):
    """Raised by an event log when (session_id, version) already exists. The store turns it
    into a retry, a ConcurrencyConflict or SessionAlreadyExists; callers never see it."""

    code = "stream-version-taken"

    def __init__(self, session_id: UUID, version: int) -> None:
        super().__init__(
            f"session {session_id} already has version {version}",
            session_id=session_id,
            version=version,
        )
        self.session_id, self.version = session_id, version


class ProjectionConflict(SessionStoreError):
    """Another runner moved the projection's position first; this batch was not written."""

    code = "projection-conflict"

    def __init__(self, projection: str, generation: int) -> None:
        super().__init__(
            f"projection {projection} (generation {generation}) was advanced by another runner",
            projection=projection,
            generation=generation,
        )
        self.projection, self.generation = projection, generation


class UnknownProjection(SessionStoreError):
    code = "unknown-projection"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"no projection named {name!r}; known: {', '.join(known)}", projection=name, known=known
        )
        self.name = name


class ProjectionTimeout(SessionStoreError):
    """A read-your-writes wait ran out: the view had not reached the position in time."""

    code = "projection-timeout"

    def __init__(self, projection: str, position: int, reached: int, timeout: float) -> None:
        super().__init__(
            f"view {projection} did not reach position {position} within {timeout:g}s "
            f"(it is at {reached}); is `sessionstore projections run` running?",
            projection=projection,
            position=position,
            reached=reached,
            timeout=timeout,
        )
        self.projection, self.position, self.reached = projection, position, reached


class ProjectionOutdated(SessionStoreError):
    """The code declares different tables than the projection's active generation was built
    with; writing into them would fail or be wrong. A rebuild builds new ones."""

    code = "projection-outdated"

    def __init__(self, projection: str) -> None:
        super().__init__(
            f"projection {projection}: its tables changed since they were built; run "
            f"`sessionstore projections rebuild {projection}`",
            projection=projection,
        )
        self.projection = projection


class VersionBeyondStream(SessionStoreError):
    """An audit asked for a version the session's stream does not have (yet)."""

    code = "version-beyond-stream"

    def __init__(self, session_id: UUID, version: int, last_version: int) -> None:
        super().__init__(
            f"session {session_id} has no version {version}: its stream ends at version "
            f"{last_version}",
            session_id=session_id,
            version=version,
            last_version=last_version,
        )
        self.session_id, self.version, self.last_version = session_id, version, last_version


class BeforeCreation(SessionStoreError):
    """An audit asked for a session's state at a time before the session was created."""

    code = "before-creation"

    def __init__(self, session_id: UUID, at: datetime, created_at: datetime) -> None:
        super().__init__(
            f"session {session_id} did not exist at {at.isoformat()}: it was created at "
            f"{created_at.isoformat()}",
            session_id=session_id,
            at=at,
            created_at=created_at,
        )
        self.session_id, self.at, self.created_at = session_id, at, created_at


class ImportRejected(SessionStoreError):
    """A line of an export file cannot be imported. Nothing of the file was written (or, if the
    store failed half way, nothing of the session that line belongs to)."""

    code = "import-rejected"

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}", line=line, reason=reason)
        self.line, self.reason = line, reason


class ProjectionFedFromKafka(SessionStoreError):
    """A log-fed runner was started on views that Kafka-fed workers write: both applying the
    same events would count them twice. Run one kind of feed (or rebuild to switch)."""

    code = "projection-fed-from-kafka"

    def __init__(self, projection: str, generation: int) -> None:
        super().__init__(
            f"projection {projection} (generation {generation}) is fed from Kafka "
            "(`sessionstore projections run --source kafka`); a log-fed runner would apply events "
            "twice. Stop the Kafka-fed workers and run `sessionstore projections rebuild` to "
            "switch back to the log",
            projection=projection,
            generation=generation,
        )
        self.projection, self.generation = projection, generation


class BrokerUnavailable(SessionStoreError):
    """The Kafka brokers cannot be reached (or did not acknowledge in time)."""

    code = "broker-unavailable"

    def __init__(self, bootstrap_servers: str, detail: str) -> None:
        super().__init__(
            f"Kafka brokers {bootstrap_servers} unavailable: {detail}",
            bootstrap_servers=bootstrap_servers,
        )
        self.bootstrap_servers = bootstrap_servers


@dataclass(eq=False)
class UndecodableEvent(CodecError):
    """A row of the log cannot be turned back into an event (corrupt state, an unknown topic, a
    newer ``class_version``, an upcaster that fails). Raised by ``EventLog.read_log`` and
    ``read_session`` with the rows of the same read before it that decoded fine, in order
    (``decoded``), so a reader can go on up to the bad row and then deal with it by itself.

    ``session_id`` is the nil UUID if even the row's session id cannot be read (only possible
    on SQLite, whose columns are text). ``state`` is the stored bytes, as far as they are known.
    """

    decoded: list[RecordedEvent]
    cursor: LogCursor
    session_id: UUID
    version: int
    event_id: UUID
    topic: str
    reason: str
    tenant_id: str = ""
    class_version: int = 0
    state: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        super().__init__(
            f"stored event {self.event_id} (session {self.session_id} v{self.version}, "
            f"position {self.cursor.position}, {self.topic}) cannot be decoded: {self.reason}"
        )

    @property
    def position(self) -> int:
        return self.cursor.position

    @property
    def tx(self) -> int:
        return self.cursor.tx
