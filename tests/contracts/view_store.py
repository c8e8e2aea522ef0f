"""ViewStore behaviour every backend shares, exercised through a small test projection that
uses every column type, a composite key and an append-only table."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from sessionstore.domain.errors import ProjectionConflict, ProjectionOutdated
from sessionstore.domain.ports import LOG_START, EventLog, LogCursor, RecordedEvent
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import MessageAdded, SessionCreated
from sessionstore.projections.base import Applied, Batch, Column, Key, Table, Tracking, ViewStore
from sessionstore.projections.runner import ProjectionRunner, rebuild

T0 = datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)

COUNTS = Table(
    name="test_counts",
    columns=(
        Column("session_id", "uuid"),
        Column("tenant_id", "text"),
        Column("messages", "int"),
        Column("chars", "float"),
        Column("has_tool_calls", "bool"),
        Column("first_at", "timestamp"),
        Column("last_at", "timestamp", nullable=True),
        Column("day", "date"),
        Column("roles", "json"),
        Column("note", "text", nullable=True),
    ),
    key=("session_id",),
    indexes=(("tenant_id", "day"),),
)
LINES = Table(
    name="test_lines",
    columns=(
        Column("session_id", "uuid"),
        Column("version", "int"),
        Column("text", "text"),
        Column("meta", "json"),
    ),
    key=("session_id", "version"),
)


class CountingProjection:
    """Counts messages per session and copies each message into an append-only table."""

    name = "test_counting"
    topics = frozenset({"SessionCreated", "MessageAdded"})
    tables = (COUNTS, LINES)

    def keys(self, event: RecordedEvent) -> Iterable[tuple[str, Key]]:
        return [(COUNTS.name, (event.event.session_id,))]

    def apply(self, batch: Batch, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, SessionCreated):
            batch.put(
                COUNTS.name,
                {
                    "session_id": event.session_id,
                    "tenant_id": recorded.tenant_id,
                    "messages": 0,
                    "chars": 0.0,
                    "has_tool_calls": False,
                    "first_at": event.occurred_at,
                    "last_at": None,
                    "day": event.occurred_at.date(),
                    "roles": {},
                    "note": None,
                },
            )
        elif isinstance(event, MessageAdded):
            row = batch.get(COUNTS.name, (event.session_id,))
            assert row is not None
            row["messages"] += 1
            row["chars"] += len(event.content) + 0.5
            row["has_tool_calls"] = row["has_tool_calls"] or bool(event.tool_calls)
            row["last_at"] = event.occurred_at
            row["roles"] = {
                **row["roles"],
                event.role.value: row["roles"].get(event.role.value, 0) + 1,
            }
            row["note"] = f"ünïcode {event.version}"
            batch.put(COUNTS.name, row)
            batch.insert(
                LINES.name,
                {
                    "session_id": event.session_id,
                    "version": event.version,
                    "text": event.content,
                    "meta": {"nested": [1, 2.5, None, {"ok": True}], "pos": recorded.position},
                },
            )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=7)
        return self.now


class ViewStoreContract:
    """Subclasses provide the fixtures ``log`` and ``views`` (on the same database)."""

    @pytest.fixture
    def projection(self) -> CountingProjection:
        return CountingProjection()

    @pytest.fixture
    def store(self, log: EventLog) -> SessionStore:
        return SessionStore(log, clock=Clock())

    def all_rows(
        self, views: ViewStore, projection: str, generation: int, table: Table
    ) -> list[dict[str, Any]]:
        return views.rows(projection, table.name, generation)  # type: ignore[attr-defined, no-any-return]

    def history(self, store: SessionStore, sessions: int = 3, messages: int = 4) -> list[UUID]:
        ids = []
        for n in range(sessions):
            sid = store.create(tenant_id=f"t{n % 2}", user_id="u", agent_id="a").session_id
            ids.append(sid)
            for m in range(messages):
                store.add_message(sid, role="user" if m % 2 == 0 else "assistant", content=f"m{m}")
        return ids

    def test_ensure_creates_generation_one_once(
        self, views: ViewStore, projection: CountingProjection
    ) -> None:
        assert views.ensure(projection) == 1
        assert views.ensure(projection) == 1
        assert views.active_generation(projection.name) == 1
        assert views.tracking(projection.name, 1) == LOG_START

    def test_runner_applies_every_event_once_with_all_column_types(
        self,
        views: ViewStore,
        log: EventLog,
        store: SessionStore,
        projection: CountingProjection,
    ) -> None:
        views.ensure(projection)
        ids = self.history(store)
        runner = ProjectionRunner(log, views, [projection], batch_size=4)
        assert runner.catch_up() == 15
        assert runner.catch_up() == 0
        assert views.tracking(projection.name, 1) == log.head()

        counts = self.all_rows(views, projection.name, 1, COUNTS)
        assert [r["session_id"] for r in counts] == sorted(ids, key=str)
        first = next(r for r in counts if r["session_id"] == ids[0])
        assert first["messages"] == 4
        assert first["chars"] == pytest.approx(4 * 2.5)
        assert first["has_tool_calls"] is False
        assert first["roles"] == {"user": 2, "assistant": 2}
        assert first["note"] == "ünïcode 5"
        assert first["first_at"] == T0 + timedelta(seconds=7)
        assert first["first_at"].tzinfo is not None
        assert first["day"] == date(2026, 3, 1)
        assert first["last_at"].date() == date(2026, 3, 2)  # crossed midnight UTC
        lines = self.all_rows(views, projection.name, 1, LINES)
        assert len(lines) == 12
        assert lines[0]["meta"]["nested"] == [1, 2.5, None, {"ok": True}]

    def test_a_stale_tracking_move_writes_nothing(
        self,
        views: ViewStore,
        log: EventLog,
        store: SessionStore,
        projection: CountingProjection,
    ) -> None:
        views.ensure(projection)
        self.history(store, sessions=1, messages=1)
        ProjectionRunner(log, views, [projection]).catch_up()
        before = self.all_rows(views, projection.name, 1, COUNTS)

        batch = Batch(projection.tables, lambda table, keys: [])
        batch.insert(LINES.name, {"session_id": uuid4(), "version": 1, "text": "x", "meta": {}})
        stale = Tracking(projection.name, 1, LOG_START)
        with pytest.raises(ProjectionConflict):
            views.commit([(projection, 1, batch)], [(stale, LogCursor(0, 999))])

        assert self.all_rows(views, projection.name, 1, COUNTS) == before
        assert len(self.all_rows(views, projection.name, 1, LINES)) == 1
        assert views.tracking(projection.name, 1) == log.head()

    def test_rebuild_fills_a_new_generation_and_switches_to_it(
        self,
        views: ViewStore,
        log: EventLog,
        store: SessionStore,
        projection: CountingProjection,
    ) -> None:
        views.ensure(projection)
        self.history(store)
        ProjectionRunner(log, views, [projection]).catch_up()
        live = self.all_rows(views, projection.name, 1, COUNTS)

        seen: list[int] = []
        applied = rebuild(log, views, projection, batch_size=5, progress=seen.append)

        assert applied == 15
        assert sum(seen) == 15
        assert views.active_generation(projection.name) == 2
        assert self.all_rows(views, projection.name, 2, COUNTS) == live
        assert views.tracking(projection.name, 2) == log.head()

    def test_loading_many_and_composite_keys(
        self, views: ViewStore, log: EventLog, store: SessionStore, projection: CountingProjection
    ) -> None:
        views.ensure(projection)
        ids = self.history(store, sessions=2, messages=3)
        ProjectionRunner(log, views, [projection]).catch_up()

        wanted: list[Key] = [(sid, v) for sid in ids for v in (2, 4)] + [(uuid4(), 2)] * 600
        loaded = views.load(projection.name, 1, LINES, wanted)
        assert sorted((r["session_id"], r["version"]) for r in loaded) == sorted(
            (sid, v) for sid in ids for v in (2, 4)
        )
        many: list[Key] = [(sid,) for sid in ids] + [(uuid4(),) for _ in range(1200)]
        assert {r["session_id"] for r in views.load(projection.name, 1, COUNTS, many)} == set(ids)

    @pytest.mark.parametrize("lines", [3, 450])
    def test_a_commit_writes_every_row_and_moves_tracking_together(
        self, views: ViewStore, projection: CountingProjection, lines: int
    ) -> None:
        # A few append-only rows go in with the other statements (PostgreSQL: one pipeline),
        # many by bulk copy; both must write every value and roll back together.
        views.ensure(projection)
        sid = uuid4()
        batch = Batch(projection.tables, lambda table, keys: [])
        for v in range(1, lines + 1):
            batch.insert(LINES.name, {"session_id": sid, "version": v, "text": f"l{v}",
                                      "meta": {"v": v, "nested": [v, None]}})  # fmt: skip
        moved = LogCursor(7, 7)
        views.commit([(projection, 1, batch)], [(Tracking(projection.name, 1, LOG_START), moved)])

        stored = self.all_rows(views, projection.name, 1, LINES)
        assert [(r["version"], r["text"], r["meta"]) for r in stored] == [
            (v, f"l{v}", {"v": v, "nested": [v, None]}) for v in range(1, lines + 1)
        ]
        assert views.tracking(projection.name, 1) == moved

        again = Batch(projection.tables, lambda table, keys: [])
        again.insert(LINES.name, {"session_id": uuid4(), "version": 1, "text": "x", "meta": {}})
        with pytest.raises(ProjectionConflict):  # a stale move: the new row is not written
            views.commit(
                [(projection, 1, again)], [(Tracking(projection.name, 1, LOG_START), moved)]
            )
        assert len(self.all_rows(views, projection.name, 1, LINES)) == lines

    def test_applied_versions_are_kept_per_projection_generation_and_session(
        self, views: ViewStore, projection: CountingProjection
    ) -> None:
        views.ensure(projection)
        a, b, c, unknown = uuid4(), uuid4(), uuid4(), uuid4()
        assert not views.fed_from_kafka(projection.name, 1)
        views.commit(
            [],
            [],
            [
                Applied(projection.name, 1, a, 3),
                Applied(projection.name, 1, b, 1),
                Applied(projection.name, 2, a, 9),  # another generation
                Applied("other", 1, c, 5),  # another projection
            ],
        )
        # A later cycle moves a session on (an upsert, not a second row).
        views.commit([], [], [Applied(projection.name, 1, a, 4)])

        assert views.fed_from_kafka(projection.name, 1)
        assert not views.fed_from_kafka(projection.name, 3)
        found = views.applied_versions(
            {projection.name: 1, "other": 1, "never": 1}, [a, b, c, unknown, a]
        )
        assert found == {projection.name: {a: 4, b: 1}, "other": {c: 5}, "never": {}}
        assert views.applied_versions({projection.name: 2}, [a, b]) == {projection.name: {a: 9}}
        assert views.applied_versions({}, [a]) == {}
        # Past the 500-a-query chunking, and with no sessions at all.
        many = [uuid4() for _ in range(700)]
        views.commit([], [], [Applied("other", 1, sid, n + 1) for n, sid in enumerate(many)])
        assert views.applied_versions({"other": 1}, [*many, c])["other"] == {
            **{sid: n + 1 for n, sid in enumerate(many)},
            c: 5,
        }
        assert views.applied_versions({"other": 1}, []) == {"other": {}}

    def test_a_projection_whose_tables_changed_must_be_rebuilt_before_it_runs(
        self, views: ViewStore, log: EventLog, store: SessionStore, projection: CountingProjection
    ) -> None:
        views.ensure(projection)
        self.history(store, sessions=1, messages=2)
        ProjectionRunner(log, views, [projection]).catch_up()

        changed = WiderCountingProjection()
        with pytest.raises(ProjectionOutdated, match="projections rebuild test_counting"):
            ProjectionRunner(log, views, [changed]).catch_up()

        assert rebuild(log, views, changed) == 3
        rows = self.all_rows(views, changed.name, 2, WIDER_COUNTS)
        assert [row["extra"] for row in rows] == ["x"]
        # Now the old code is the outdated one.
        with pytest.raises(ProjectionOutdated):
            ProjectionRunner(log, views, [projection]).catch_up()


WIDER_COUNTS = Table(
    name=COUNTS.name,
    columns=(*COUNTS.columns, Column("extra", "text")),
    key=COUNTS.key,
    indexes=COUNTS.indexes,
)


class WiderCountingProjection(CountingProjection):
    """The same projection after a code change that added a column."""

    tables = (WIDER_COUNTS, LINES)

    def apply(self, batch: Batch, recorded: RecordedEvent) -> None:
        original = batch.put

        def put(name: str, row: dict[str, Any]) -> None:
            original(name, {**row, "extra": "x"} if name == COUNTS.name else row)

        batch.put = put  # type: ignore[method-assign]
        try:
            super().apply(batch, recorded)
        finally:
            batch.put = original  # type: ignore[method-assign]
