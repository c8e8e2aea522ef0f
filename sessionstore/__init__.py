"""sessionstore: an event-sourced session store for conversational AI agents.

This module is the public API: what ``__all__`` lists is supported and documented (README "Using
it from Python"). The sub-packages (``sessionstore.domain``, ``.events``, ``.projections``,
``.adapters``) are the implementation and may change between releases without notice.

    import sessionstore

    sessionstore.migrate()                  # once per deployment; a no-op when up to date
    store = sessionstore.open_store()       # SESSIONSTORE_DATABASE_URL, else ./sessionstore.db
    created = store.create(tenant_id="acme", user_id="u-42", agent_id="support-bot")
    store.add_message(created.session_id, role="user", content="Where is my order?")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sessionstore.adapters import bootstrap
from sessionstore.adapters.settings import Settings, SettingsError, load_settings
from sessionstore.domain.commands import (
    AddMessage,
    Command,
    CreateSession,
    End,
    Interrupt,
    RecordTurn,
    Resume,
    UpdateContext,
)
from sessionstore.domain.contract import Limits
from sessionstore.domain.errors import (
    BeforeCreation,
    BrokerUnavailable,
    ConcurrencyConflict,
    IdempotencyKeyReused,
    ImportRejected,
    InvalidInput,
    InvalidTransition,
    PayloadTooLarge,
    ProjectionConflict,
    ProjectionFedFromKafka,
    ProjectionOutdated,
    ProjectionTimeout,
    SchemaNotReady,
    SessionAlreadyExists,
    SessionNotFound,
    SessionStoreError,
    StorageError,
    StorageRejected,
    StreamVersionTaken,
    TranscriptViolation,
    UndecodableEvent,
    UnknownProjection,
    VersionBeyondStream,
)
from sessionstore.domain.ports import AppendResult, RecordedEvent
from sessionstore.domain.session import Session, SessionStatus
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import (
    Channel,
    ContextUpdated,
    EndStatus,
    InterruptReason,
    MessageAdded,
    Modality,
    Role,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionPolicy,
    SessionResumed,
    ToolCall,
    TurnRecorded,
)
from sessionstore.projections import all_projections
from sessionstore.projections.queries import (
    AgentMetrics,
    CleanupCandidate,
    CleanupCandidates,
    SessionMetrics,
    SessionPage,
    SessionQueries,
    SessionStateView,
    SessionSummary,
    StageTimes,
    TranscriptEntry,
)
from sessionstore.projections.runner import ProjectionRunner

try:
    __version__ = version("sessionstore")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"


def _settings(url: str | None, settings: Settings | None) -> Settings:
    if url is not None and settings is not None:
        msg = "pass either url or settings, not both"
        raise TypeError(msg)
    if settings is not None:
        return settings
    return load_settings() if url is None else load_settings(database_url=url)


def migrate(url: str | None = None, *, settings: Settings | None = None) -> list[str]:
    """Apply pending schema migrations (what ``sessionstore db migrate`` does); return the names
    of those applied. ``url`` defaults to ``SESSIONSTORE_DATABASE_URL``, else
    ``sqlite:///sessionstore.db``; ``settings`` gives every setting at once instead."""
    return bootstrap.migrate(_settings(url, settings))


def open_store(url: str | None = None, *, settings: Settings | None = None) -> SessionStore:
    """The SessionStore agents append through (and read the log from), on ``url``'s backend.

    The schema must be migrated (``migrate``). Thread-safe: open one per process and ``close()``
    it at the end. ``url`` and ``settings`` as for ``migrate``."""
    return bootstrap.build_store(_settings(url, settings))


def open_queries(
    url: str | None = None, *, settings: Settings | None = None, store: SessionStore | None = None
) -> SessionQueries:
    """The query API over the views (state, lists, transcripts, metrics, cleanup candidates).

    Views are as current as a projection runner keeps them (``sessionstore projections run``);
    ``queries.wait_for(result.position)`` waits for an append to reach them. ``store`` shares
    that store's log for those waits. ``close()`` closes what this call opened."""
    return bootstrap.open_queries(
        _settings(url, settings), log=None if store is None else store.log
    )


def catch_up(queries: SessionQueries) -> int:
    """Apply everything the log holds now to every view the queries read, in this process (what
    ``sessionstore projections run --once`` does); return how many events were read.

    For programs that embed the store and have no ``sessionstore projections run`` beside them
    (and for ``memory://``, where nothing outside the process can reach the views)."""
    runner = ProjectionRunner(queries.log, queries.views, all_projections())
    return runner.catch_up()


__all__ = [
    "AddMessage",
    "AgentMetrics",
    "AppendResult",
    "BeforeCreation",
    "BrokerUnavailable",
    "Channel",
    "CleanupCandidate",
    "CleanupCandidates",
    "Command",
    "ConcurrencyConflict",
    "ContextUpdated",
    "CreateSession",
    "End",
    "EndStatus",
    "IdempotencyKeyReused",
    "ImportRejected",
    "Interrupt",
    "InterruptReason",
    "InvalidInput",
    "InvalidTransition",
    "Limits",
    "MessageAdded",
    "Modality",
    "PayloadTooLarge",
    "ProjectionConflict",
    "ProjectionFedFromKafka",
    "ProjectionOutdated",
    "ProjectionTimeout",
    "RecordTurn",
    "RecordedEvent",
    "Resume",
    "Role",
    "SchemaNotReady",
    "Session",
    "SessionAlreadyExists",
    "SessionCreated",
    "SessionEnded",
    "SessionEvent",
    "SessionInterrupted",
    "SessionMetrics",
    "SessionNotFound",
    "SessionPage",
    "SessionPolicy",
    "SessionQueries",
    "SessionResumed",
    "SessionStateView",
    "SessionStatus",
    "SessionStore",
    "SessionStoreError",
    "SessionSummary",
    "Settings",
    "SettingsError",
    "StageTimes",
    "StorageError",
    "StorageRejected",
    "StreamVersionTaken",
    "ToolCall",
    "TranscriptEntry",
    "TranscriptViolation",
    "TurnRecorded",
    "UndecodableEvent",
    "UnknownProjection",
    "UpdateContext",
    "VersionBeyondStream",
    "__version__",
    "catch_up",
    "load_settings",
    "migrate",
    "open_queries",
    "open_store",
]
