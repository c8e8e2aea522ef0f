"""ViewStore behaviour every backend shares, exercised through a small test projection that
uses every column type, a composite key and an append-only table."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from sessionstore.domain.errors import ProjectionConflict, ProjectionOutdated
from sessionstore.domain.ports import LOG_START, EventLog, LogCursor, RecordedEvent
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import MessageAdded, SessionCreated
from sessionstore.projections.base import (
    Applied,
    Batch,
    Column,
    Key,
    Quarantined,
    Table,
    Tracking,
    ViewStore,
)
from sessionstore.projections.quarantine import retry
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

    # -- quarantine -------------------------------------------------------------------------------

    def quarantined(
        self,
        projection: str,
        session_id: UUID,
        position: int,
        *,
        generation: int = 1,
        held_behind: UUID | None = None,
        event_id: UUID | None = None,
    ) -> Quarantined:
        return Quarantined(
            projection=projection,
            generation=generation,
            event_id=event_id or uuid4(),
            session_id=session_id,
            position=position,
            tx=0,
            version=position + 1,
            topic="MessageAdded",
            error="ValueError: no" if held_behind is None else f"held behind event {held_behind}",
            held_behind=held_behind,
        )

    def test_quarantine_rows_commit_with_the_view_rows_and_are_listed_held_and_counted(
        self, views: ViewStore, projection: CountingProjection
    ) -> None:
        views.ensure(projection)
        a, b = uuid4(), uuid4()
        head = self.quarantined(projection.name, a, 3)
        behind = self.quarantined(projection.name, a, 5, held_behind=head.event_id)
        other = self.quarantined(projection.name, b, 4)
        foreign = self.quarantined("other", b, 1)
        batch = Batch(projection.tables, lambda table, keys: [])
        batch.insert(LINES.name, {"session_id": b, "version": 1, "text": "x", "meta": {}})
        start = views.tracking_of(projection.name, 1)
        assert start == Tracking(projection.name, 1, LOG_START, 0)
        assert not start.holds
        assert not views.positions([projection.name])[projection.name].holds

        views.commit(
            [(projection, 1, batch)],
            [(start, LogCursor(0, 5))],
            quarantined=[behind, head, other, foreign],
        )

        assert views.tracking_of(projection.name, 1) == Tracking(
            projection.name, 1, LogCursor(0, 5), 1
        )
        assert views.tracking(projection.name, 1) == LogCursor(0, 5)
        assert views.tracking_of(projection.name, 1).holds  # runners ask `held` only then
        assert views.positions([projection.name])[projection.name].holds
        assert not views.tracking_of(projection.name, 2).holds
        assert len(self.all_rows(views, projection.name, 1, LINES)) == 1
        listed = views.quarantined(projection.name)
        assert [q.event_id for q in listed] == [head.event_id, other.event_id, behind.event_id]
        assert [dataclasses.replace(q, quarantined_at=None) for q in listed] == [
            head,
            other,
            behind,
        ]
        assert all(q.quarantined_at is not None for q in listed)
        assert [q.event_id for q in views.quarantined()] == [
            foreign.event_id, head.event_id, other.event_id, behind.event_id
        ]  # fmt: skip
        assert [q.event_id for q in views.quarantined(session_id=b)] == [
            foreign.event_id, other.event_id
        ]  # fmt: skip
        assert views.quarantined(projection.name, uuid4()) == []
        # held: each held session with the event it is held behind (the one without held_behind)
        many = [uuid4() for _ in range(700)]
        found = views.held({projection.name: 1, "other": 1, "never": 1}, [*many, a, b, a])
        assert found == {
            projection.name: {a: head.event_id, b: other.event_id},
            "other": {b: foreign.event_id},
            "never": {},
        }
        assert views.held({projection.name: 2}, [a, b]) == {projection.name: {}}
        assert views.held({projection.name: 1}, []) == {projection.name: {}}
        assert views.quarantine_counts([projection.name]) == {projection.name: 3}

        # A row written again (a retry that failed again) replaces the first: new error, new head.
        again = dataclasses.replace(behind, error="TypeError: still", held_behind=None)
        moved = views.tracking_of(projection.name, 1)
        views.commit([], [(moved, moved.cursor)], quarantined=[again], released=[head])
        assert views.held({projection.name: 1}, [a]) == {projection.name: {a: behind.event_id}}
        assert [(q.event_id, q.error) for q in views.quarantined(projection.name, a)] == [
            (behind.event_id, "TypeError: still")
        ]
        assert views.tracking_of(projection.name, 1).seq == 2
        assert views.quarantine_counts([projection.name]) == {projection.name: 2}

    def test_releasing_a_row_that_is_gone_is_a_conflict_and_writes_nothing(
        self, views: ViewStore, projection: CountingProjection
    ) -> None:
        views.ensure(projection)
        sid = uuid4()
        kept = self.quarantined(projection.name, sid, 1)
        views.commit([], [], quarantined=[kept])
        tracking = views.tracking_of(projection.name, 1)
        batch = Batch(projection.tables, lambda table, keys: [])
        batch.insert(LINES.name, {"session_id": sid, "version": 2, "text": "x", "meta": {}})

        with pytest.raises(ProjectionConflict):
            views.commit(
                [(projection, 1, batch)],
                [(tracking, tracking.cursor)],
                released=[kept, self.quarantined(projection.name, sid, 2)],
            )

        assert self.all_rows(views, projection.name, 1, LINES) == []
        assert views.tracking_of(projection.name, 1) == tracking
        assert [q.event_id for q in views.quarantined(projection.name)] == [kept.event_id]

    @pytest.mark.parametrize("first", ["release", "move"])
    def test_a_release_and_a_move_from_the_same_loaded_tracking_conflict(
        self,
        views: ViewStore,
        log: EventLog,
        store: SessionStore,
        projection: CountingProjection,
        first: str,
    ) -> None:
        # A retry re-asserts the cursor (X -> X) while a runner moves it (X -> Y), both from the
        # row they loaded their view rows after: whichever commits second must fail, or the
        # runner would write rows it read before the retry's update (decisions §22).
        views.ensure(projection)
        sid = self.history(store, sessions=1, messages=1)[0]
        ProjectionRunner(log, views, [projection]).catch_up()
        held = self.quarantined(projection.name, sid, 9)
        views.commit([], [], quarantined=[held])
        loaded = views.tracking_of(projection.name, 1)
        release = Batch(projection.tables, lambda table, keys: [])
        release.insert(LINES.name, {"session_id": sid, "version": 90, "text": "r", "meta": {}})
        move = Batch(projection.tables, lambda table, keys: [])
        move.insert(LINES.name, {"session_id": sid, "version": 91, "text": "m", "meta": {}})

        def do_release() -> None:
            views.commit([(projection, 1, release)], [(loaded, loaded.cursor)], released=[held])

        def do_move() -> None:
            views.commit([(projection, 1, move)], [(loaded, LogCursor(0, 99))])

        winner, loser = (do_release, do_move) if first == "release" else (do_move, do_release)
        winner()
        with pytest.raises(ProjectionConflict):
            loser()

        versions = {r["version"] for r in self.all_rows(views, projection.name, 1, LINES)}
        assert versions == {2, 90 if first == "release" else 91}
        assert views.tracking_of(projection.name, 1).seq == loaded.seq + 1

    def test_the_quarantine_of_a_generation_goes_with_it(
        self, views: ViewStore, projection: CountingProjection
    ) -> None:
        views.ensure(projection)
        sid = uuid4()
        old = self.quarantined(projection.name, sid, 1)
        views.commit([], [], quarantined=[old])
        generation = views.start_generation(projection)
        new = self.quarantined(projection.name, sid, 1, generation=generation)
        views.commit([], [], quarantined=[new])
        assert views.quarantine_counts([projection.name]) == {projection.name: 1}
        assert [q.generation for q in views.quarantined(projection.name)] == [1, generation]

        views.activate(projection, generation)

        assert [q.event_id for q in views.quarantined(projection.name)] == [new.event_id]
        assert views.held({projection.name: 1}, [sid]) == {projection.name: {}}
        assert views.quarantine_counts([projection.name]) == {projection.name: 1}

    def test_a_handler_bug_holds_its_session_only_until_a_fixed_projection_retries_it(
        self, views: ViewStore, log: EventLog, store: SessionStore
    ) -> None:
        ids = self.history(store, sessions=3, messages=4)  # v1 created, v2..v5 messages
        bad = ids[1]
        buggy = BuggyCountingProjection({bad}, from_version=3)
        views.ensure(buggy)
        runner = ProjectionRunner(log, views, [buggy], batch_size=4)

        assert runner.catch_up() == 15
        assert views.tracking(buggy.name, 1) == log.head()  # the cursor passed the poison
        counts = {
            r["session_id"]: r["messages"] for r in self.all_rows(views, buggy.name, 1, COUNTS)
        }
        assert counts == {ids[0]: 4, bad: 1, ids[2]: 4}  # bad: v2 only, nothing after v3
        listed = views.quarantined(buggy.name)
        events = {e.event.version: e.event.event_id for e in log.read_session(bad)}
        assert [(q.session_id, q.version, q.held_behind) for q in listed] == [
            (bad, 3, None), (bad, 4, events[3]), (bad, 5, events[3])
        ]  # fmt: skip
        assert listed[0].error == f"RuntimeError: bug on {bad} v3"
        assert runner.contained == 3
        assert runner.status()[0].quarantined == 3

        # Later events: the other sessions flow, the held one waits.
        store.add_message(ids[0], role="user", content="later")
        store.add_message(bad, role="user", content="later")
        assert runner.catch_up() == 2
        counts = {
            r["session_id"]: r["messages"] for r in self.all_rows(views, buggy.name, 1, COUNTS)
        }
        assert counts == {ids[0]: 5, bad: 1, ids[2]: 4}
        assert [q.version for q in views.quarantined(buggy.name)] == [3, 4, 5, 6]

        # A rebuild meets the same poison, quarantines it in the new generation and switches.
        assert rebuild(log, views, buggy, batch_size=3) == 17
        assert views.active_generation(buggy.name) == 2
        assert [(q.generation, q.version) for q in views.quarantined(buggy.name)] == [
            (2, 3), (2, 4), (2, 5), (2, 6)
        ]  # fmt: skip
        assert views.quarantine_counts([buggy.name]) == {buggy.name: 4}

        # Retrying with the bug still there (now another error) releases nothing.
        (still,) = retry(log, views, [BuggyCountingProjection({bad}, 3, error=TypeError)])
        assert (still.released, still.remaining) == (0, 4)
        assert [q.version for q in still.failing] == [3]
        assert still.failing[0].error == f"TypeError: bug on {bad} v3"

        # The fixed code releases the events in order: the views are what a rebuild with it gives.
        fixed = CountingProjection()
        (done,) = retry(log, views, [fixed])
        assert (done.projection, done.generation, done.released, done.remaining) == (
            buggy.name, 2, 4, 0
        )  # fmt: skip
        assert views.quarantined() == []
        retried = {t.name: self.all_rows(views, fixed.name, 2, t) for t in fixed.tables}
        rebuild(log, views, fixed)
        assert {t.name: self.all_rows(views, fixed.name, 3, t) for t in fixed.tables} == retried
        bad_lines = [r["version"] for r in retried[LINES.name] if r["session_id"] == bad]
        assert bad_lines == [2, 3, 4, 5, 6]


class BuggyCountingProjection(CountingProjection):
    """CountingProjection with a bug: it raises on the messages of some sessions from a version
    on (the same tables, so it runs on the same generation)."""

    def __init__(
        self, sessions: set[UUID], from_version: int, error: type[Exception] = RuntimeError
    ) -> None:
        self.sessions, self.from_version, self.error = sessions, from_version, error

    def apply(self, batch: Batch, recorded: RecordedEvent) -> None:
        event = recorded.event
        if event.session_id in self.sessions and event.version >= self.from_version:
            raise self.error(f"bug on {event.session_id} v{event.version}")
        super().apply(batch, recorded)


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
