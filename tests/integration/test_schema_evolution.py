"""Schema evolution on SQLite and PostgreSQL: MessageAdded rows the code before v2 stored.

The "previous code" is kept frozen in ``tests/legacy.py``: the v1 MessageAdded class (and the
transcript table as it was). Each scenario writes rows with it, straight into a real database,
checks in SQL that they really are v1 rows, then reads them with the current code.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from sessionstore.adapters.bootstrap import open_log, open_queries, open_views
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.serialization import SessionEventMapper
from sessionstore.domain.errors import ProjectionOutdated
from sessionstore.domain.ports import EventLog
from sessionstore.domain.session import SessionStatus
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import (
    Identifier,
    MessageAdded,
    Modality,
    Role,
    SessionCreated,
    SessionEvent,
    ToolCall,
)
from sessionstore.events.codec import CorruptEvent, EventCodec
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore, fingerprint
from sessionstore.projections.runner import ProjectionRunner, rebuild
from sessionstore.projections.transcript import TranscriptProjection
from tests.legacy import (
    TRANSCRIPT_BEFORE_V2,
    MessageAddedV1,
    TranscriptProjectionBeforeV2,
    v1_mapper,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
CALL = ToolCall(id="call-1", name="book_table", arguments={"people": 4})


@dataclass
class Database:
    """One real database, with plain SQL access to check what is really stored."""

    settings: Settings

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.settings.backend == "sqlite":
            with sqlite3.connect(self.settings.sqlite_path) as conn:
                return conn.execute(query.replace("%s", "?"), list(params)).fetchall()
        with psycopg.connect(self.settings.database_url) as conn:
            schema = sql.Identifier(self.settings.database_schema)
            conn.execute(sql.SQL("SET search_path TO {}").format(schema))
            return conn.execute(query.encode(), list(params)).fetchall()

    def stored_messages(self) -> list[tuple[int, int, dict[str, Any]]]:
        """(version, class_version, state as JSON) of every stored MessageAdded, in log order."""
        found = self.rows(
            "SELECT version, class_version, state FROM events "
            "WHERE topic = 'MessageAdded' ORDER BY position"
        )
        return [(version, cv, json.loads(bytes(state))) for version, cv, state in found]

    def columns(self, table: str) -> set[str]:
        """The columns a table or view has, as the database sees it."""
        if self.settings.backend == "sqlite":
            with sqlite3.connect(self.settings.sqlite_path) as conn:
                return {
                    d[0] for d in conn.execute(f"SELECT * FROM {table} WHERE 1 = 0").description
                }
        with psycopg.connect(self.settings.database_url) as conn:
            schema = sql.Identifier(self.settings.database_schema)
            conn.execute(sql.SQL("SET search_path TO {}").format(schema))
            cur = conn.execute(
                sql.SQL("SELECT * FROM {} WHERE 1 = 0").format(sql.Identifier(table))
            )
            return {d.name for d in cur.description or ()}

    def log(self, mapper: SessionEventMapper | None = None) -> EventLog:
        log = open_log(self.settings)
        if mapper is not None:
            log.mapper = mapper  # type: ignore[attr-defined]  # what the old code's log used
        return log


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Database:
    name = "sqlite_settings" if request.param == "sqlite" else "pg_settings"
    return Database(request.getfixturevalue(name))


@pytest.fixture
def views(db: Database) -> Iterator[ViewStore]:
    views = open_views(db.settings)
    yield views
    views.close()


def at(seconds: int, version: int, sid: UUID) -> dict[str, Any]:
    return {
        "session_id": sid,
        "version": version,
        "occurred_at": T0 + timedelta(seconds=seconds),
        "event_id": uuid4(),
    }


def write_with_previous_code(db: Database, sid: UUID) -> None:
    """A session as the code before MessageAdded v2 stored it: created, then three messages."""
    old_log = db.log(v1_mapper())
    try:
        old_log.append(
            [
                SessionCreated(
                    **at(0, 1, sid),
                    tenant_id="acme",
                    user_id="u-1",
                    agent_id="bot",
                    channel="voice",
                ),
                MessageAddedV1(
                    **at(1, 2, sid),
                    message_id="m-1",
                    role="user",
                    content="A table for 4 on Friday?",
                    input_tokens=9,
                ),
                MessageAddedV1(
                    **at(2, 3, sid),
                    message_id="m-2",
                    role="assistant",
                    content="",
                    tool_calls=[CALL],
                ),
                MessageAddedV1(
                    **at(3, 4, sid),
                    message_id="m-3",
                    role="tool",
                    content='{"booked": true}',
                    tool_call_id="call-1",
                    output_tokens=2,
                ),
            ],
            tenant_id="acme",
        )
    finally:
        old_log.close()


V1_PAYLOADS = [
    {
        "message_id": "m-1",
        "role": "user",
        "content": "A table for 4 on Friday?",
        "tool_calls": [],
        "tool_call_id": None,
        "input_tokens": 9,
        "output_tokens": None,
    },
    {
        "message_id": "m-2",
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call-1", "name": "book_table", "arguments": {"people": 4}}],
        "tool_call_id": None,
        "input_tokens": None,
        "output_tokens": None,
    },
    {
        "message_id": "m-3",
        "role": "tool",
        "content": '{"booked": true}',
        "tool_calls": [],
        "tool_call_id": "call-1",
        "input_tokens": None,
        "output_tokens": 2,
    },
]


def test_the_previous_code_stored_v1_rows_without_the_new_fields(db: Database) -> None:
    write_with_previous_code(db, uuid4())

    assert db.stored_messages() == [
        (2, 1, V1_PAYLOADS[0]),
        (3, 1, V1_PAYLOADS[1]),
        (4, 1, V1_PAYLOADS[2]),
    ]


def test_v1_rows_read_as_v2_through_the_store_the_views_and_the_queries(
    db: Database, views: ViewStore
) -> None:
    sid = uuid4()
    write_with_previous_code(db, sid)
    log = db.log()  # the current code
    store = SessionStore(log)
    try:
        # history: every message in the v2 shape, the v1 fields unchanged, the defaults filled in
        messages = [r.event for r in store.history(sid) if r.event.topic == "MessageAdded"]
        assert all(isinstance(m, MessageAdded) for m in messages)
        assert [m.payload() for m in messages] == [
            {**payload, "modality": "text", "language": None} for payload in V1_PAYLOADS
        ]

        # the fold
        state = store.get(sid)
        assert (state.version, state.message_count, state.status) == (4, 3, SessionStatus.ACTIVE)
        assert (state.input_tokens, state.output_tokens) == (9, 2)
        assert (state.open_tool_calls, state.last_message_role) == ((), Role.TOOL)

        # the projections, run by the current code over the v1 rows
        runner = ProjectionRunner(log, views, all_projections())
        assert runner.catch_up() == 4
        queries = open_queries(db.settings, views, log)
        entries = queries.transcript(sid)
        assert [(e.message_id, e.role, e.modality, e.language) for e in entries] == [
            ("m-1", Role.USER, Modality.TEXT, None),
            ("m-2", Role.ASSISTANT, Modality.TEXT, None),
            ("m-3", Role.TOOL, Modality.TEXT, None),
        ]
        assert entries[1].tool_calls == (V1_PAYLOADS[1]["tool_calls"][0],)
        assert (
            db.rows("SELECT modality, language FROM transcript ORDER BY version")
            == [("text", None)] * 3
        )
        assert queries.get_session(sid).state.message_count == 3

        # new appends are stored as v2, next to the v1 rows, and read back with their values
        store.add_message(sid, role="user", content="Merci!", modality="audio", language="fr-CH")
        assert db.stored_messages()[-1] == (
            5,
            2,
            {
                "message_id": db.stored_messages()[-1][2]["message_id"],
                "role": "user",
                "content": "Merci!",
                "tool_calls": [],
                "tool_call_id": None,
                "input_tokens": None,
                "output_tokens": None,
                "modality": "audio",
                "language": "fr-CH",
            },
        )
        assert [cv for _, cv, _ in db.stored_messages()] == [1, 1, 1, 2]
        assert runner.catch_up() == 1
        last_two = queries.last_messages(sid, 2)
        assert [(e.version, e.modality, e.language) for e in last_two] == [
            (4, Modality.TEXT, None),
            (5, Modality.AUDIO, "fr-CH"),
        ]
        assert SessionStore(db.log()).get(sid).message_count == 4  # a cold replay agrees
    finally:
        store.close()


def test_the_frozen_transcript_table_is_the_one_the_previous_code_declared() -> None:
    """The fingerprint the code before MessageAdded v2 registered for its transcript tables."""
    assert fingerprint([TRANSCRIPT_BEFORE_V2]) == "2e1ccfc6e80e0c08"
    assert fingerprint(TranscriptProjection.tables) != fingerprint([TRANSCRIPT_BEFORE_V2])


def test_a_database_the_previous_code_used_is_upgraded_by_rebuilding_the_transcript(
    db: Database, views: ViewStore
) -> None:
    """The procedure of docs/events.md: deploy, rebuild the changed view, start the runners."""
    sid = uuid4()
    write_with_previous_code(db, sid)
    log = db.log()
    try:
        # The previous code built the transcript view with its own table declarations.
        rebuild(log, views, TranscriptProjectionBeforeV2())
        assert not {"modality", "language"} & db.columns("transcript")

        # The new code's runner refuses to write rows of another shape into those tables ...
        with pytest.raises(ProjectionOutdated, match="sessionstore projections rebuild transcript"):
            ProjectionRunner(log, views, [TranscriptProjection()]).catch_up()
        # ... while the queries keep answering from them, with the upcasters' defaults.
        queries = open_queries(db.settings, views, log)
        assert [(e.message_id, e.modality, e.language) for e in queries.transcript(sid)] == [
            ("m-1", Modality.TEXT, None),
            ("m-2", Modality.TEXT, None),
            ("m-3", Modality.TEXT, None),
        ]
        assert [e.message_id for e in queries.last_messages(sid, 1)] == ["m-3"]

        SessionStore(log).add_message(sid, role="user", content="Danke", language="de")
        assert rebuild(log, views, TranscriptProjection()) == 5

        assert {"modality", "language"} <= db.columns("transcript")
        assert [(e.version, e.modality, e.language) for e in queries.transcript(sid)] == [
            (2, Modality.TEXT, None),
            (3, Modality.TEXT, None),
            (4, Modality.TEXT, None),
            (5, Modality.TEXT, "de"),
        ]
        assert ProjectionRunner(log, views, all_projections()).catch_up() == 5  # others: fresh
    finally:
        log.close()


class MessageAddedV1WithoutRole(SessionEvent):
    """A broken writer's v1 MessageAdded: no ``role``, which v1 required."""

    topic: ClassVar[str] = "MessageAdded"

    message_id: Identifier
    content: str


class MessageAddedV1WithModality(SessionEvent):
    """A v1 row that already carries a v2 field: v1 code never wrote one."""

    topic: ClassVar[str] = "MessageAdded"

    message_id: Identifier
    role: Role
    content: str
    modality: str


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (MessageAddedV1WithoutRole(**at(1, 2, UUID(int=1)), message_id="m", content="hi"), "role"),
        (
            MessageAddedV1WithModality(
                **at(1, 2, UUID(int=1)), message_id="m", role="user", content="hi", modality="audio"
            ),
            "upcast_v1_v2 failed",
        ),
    ],
    ids=["missing a v1 field", "v2 field in a v1 row"],
)
def test_a_v1_row_that_cannot_be_upcast_is_a_corrupt_event_naming_session_and_version(
    db: Database, broken: SessionEvent, problem: str
) -> None:
    sid = broken.session_id
    write = db.log(SessionEventMapper(EventCodec([SessionCreated, type(broken)])))
    try:
        created = SessionCreated(
            **at(0, 1, sid), tenant_id="acme", user_id="u", agent_id="a", channel="text"
        )
        write.append([created, broken], tenant_id="acme")
    finally:
        write.close()
    assert [cv for _, cv, _ in db.stored_messages()] == [1]

    store = SessionStore(db.log())
    try:
        for read in (store.get, store.history):
            with pytest.raises(CorruptEvent) as info:
                read(sid)
            assert (info.value.topic, info.value.session_id, info.value.version) == (
                "MessageAdded",
                sid,
                2,
            )
            assert f"stored MessageAdded of session {sid} v2 is invalid" in str(info.value)
            assert problem in str(info.value)
    finally:
        store.close()
