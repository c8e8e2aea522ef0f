"""The projection runner against real databases: live tailing under concurrent writers, and
crash safety of a real process killed with SIGKILL at random points."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from sessionstore.adapters.bootstrap import (
    build_store,
    open_log,
    open_queries,
    open_views,
    open_waiter,
)
from sessionstore.adapters.settings import Settings
from sessionstore.domain.ports import LOG_START, EventLog, RecordedEvent
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import MessageAdded, SessionCreated
from sessionstore.projections import all_projections
from sessionstore.projections.base import Batch, Column, Key, Projection, Table, ViewStore
from sessionstore.projections.runner import ProjectionRunner, rebuild

WORKER = Path(__file__).with_name("projection_worker.py")

EVENT_IDS = Table(
    name="test_event_ids",
    columns=(
        Column("event_id", "uuid"),
        Column("session_id", "uuid"),
        Column("version", "int"),
        Column("position", "int"),
    ),
    key=("event_id",),
)


class EventIdsProjection:
    """Records every event id it is given (a second copy would violate the primary key)."""

    name = "test_event_ids"
    topics = frozenset(
        {
            "SessionCreated",
            "MessageAdded",
            "TurnRecorded",
            "ContextUpdated",
            "SessionInterrupted",
            "SessionResumed",
            "SessionEnded",
        }
    )
    tables = (EVENT_IDS,)

    def keys(self, event: RecordedEvent) -> Iterable[tuple[str, Key]]:
        return ()

    def apply(self, batch: Batch, recorded: RecordedEvent) -> None:
        event = recorded.event
        batch.insert(
            EVENT_IDS.name,
            {
                "event_id": event.event_id,
                "session_id": event.session_id,
                "version": event.version,
                "position": recorded.position,
            },
        )


def every_event(log: EventLog) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    cursor = LOG_START
    while page := log.read_log(cursor, limit=5000):
        out.extend(page)
        cursor = page[-1].cursor
    return out


def converse(store: SessionStore, sid: UUID, turns: int, rng: random.Random) -> None:
    """A realistic little conversation: messages, a tool call, turns, context, an interruption."""
    for turn in range(turns):
        store.add_message(sid, role="user", content=f"question {turn}")
        if rng.random() < 0.3:
            call = f"c{turn}"
            store.add_message(sid, role="assistant", tool_calls=[{"id": call, "name": "lookup"}])
            if rng.random() < 0.2:
                store.interrupt(sid, reason="barge_in")
                store.resume(sid)
                continue
            store.add_message(sid, role="tool", tool_call_id=call, content="{}")
        store.add_message(sid, role="assistant", content=f"answer {turn}")
        store.record_turn(sid, request_id=f"r{turn}", duration_ms=rng.uniform(50, 3000))
        if rng.random() < 0.2:
            store.update_context(sid, set={"turn": turn})


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest) -> Settings:
    name = "sqlite_settings" if request.param == "sqlite" else "pg_settings"
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    value: Settings = request.getfixturevalue(name)
    return value


@pytest.fixture
def views(settings: Settings) -> Iterator[ViewStore]:
    views = open_views(settings)
    yield views
    views.close()


def test_a_live_runner_sees_every_event_of_concurrent_writers_exactly_once(
    settings: Settings, views: ViewStore
) -> None:
    projections: list[Projection] = [EventIdsProjection(), *all_projections()]
    for projection in projections:
        views.ensure(projection)
    log = open_log(settings)
    stop = threading.Event()
    waiter = open_waiter(settings, stop)
    runner = ProjectionRunner(log, views, projections, batch_size=50)
    live = threading.Thread(target=runner.run, args=(stop, waiter), kwargs={"poll_interval": 0.2})
    writers = [build_store(settings) for _ in range(4)]
    try:
        live.start()

        def write(store: SessionStore, seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(3):
                sid = store.create(tenant_id="acme", user_id=f"u{seed}", agent_id="a").session_id
                converse(store, sid, 8, rng)
                store.end(sid, status="completed")

        threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        head = log.head()
        wait_until(
            lambda: all(
                views.tracking(p.name, views.active_generation(p.name)) >= head for p in projections
            ),
            timeout=30,
            what="the live runner to reach the log head",
        )
    finally:
        stop.set()
        live.join(timeout=10)
        waiter.close()
        for w in writers:
            w.close()

    events = every_event(log)
    recorded = views.rows("test_event_ids", "test_event_ids")  # type: ignore[attr-defined]
    assert sum(isinstance(r.event, SessionCreated) for r in events) == 12
    assert len(recorded) == len(events)
    assert {r["event_id"] for r in recorded} == {r.event.event_id for r in events}
    messages: dict[UUID, int] = {}
    for r in events:
        if isinstance(r.event, MessageAdded):
            messages[r.event.session_id] = messages.get(r.event.session_id, 0) + 1
    state = {r["session_id"]: r for r in views.rows("session_state", "session_state")}  # type: ignore[attr-defined]
    assert {sid: row["message_count"] for sid, row in state.items()} == messages
    assert all(row["status"] == "ended" for row in state.values())
    log.close()


def test_a_runner_killed_anywhere_resumes_to_views_identical_to_a_rebuild(
    settings: Settings, views: ViewStore
) -> None:
    rng = random.Random(20261121)
    store = build_store(settings)
    try:
        for n in range(12):
            sid = store.create(
                tenant_id=f"t{n % 3}", user_id=f"u{n}", agent_id=f"a{n % 2}"
            ).session_id
            converse(store, sid, 12, rng)
            if n % 4 != 3:
                store.end(sid, status=["completed", "failed", "abandoned"][n % 3])
    finally:
        store.close()
    log = open_log(settings)
    total = log.count_after(LOG_START)
    env = {**os.environ, "SESSIONSTORE_DATABASE_URL": settings.database_url,
           "SESSIONSTORE_DATABASE_SCHEMA": settings.database_schema}  # fmt: skip

    def position() -> int:
        return views.tracking("session_state", views.active_generation("session_state")).position

    kills = 0
    for _ in range(4):
        start = position()
        target = start + rng.randint(1, max(1, (total - start) // 2))
        worker = subprocess.Popen([sys.executable, str(WORKER), "7"], env=env)  # noqa: S603
        wait_until(
            lambda t=target, w=worker: position() >= t or w.poll() is not None, 60, "progress"
        )
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            kills += 1
        worker.wait(timeout=30)
    finisher = subprocess.run([sys.executable, str(WORKER), "7"], env=env, timeout=120, check=False)  # noqa: S603
    assert finisher.returncode == 0
    assert kills >= 2, "the runner finished before it could be killed: make the history longer"

    projections = all_projections()
    head = log.head()
    assert all(views.tracking(p.name, views.active_generation(p.name)) == head for p in projections)
    survived = {
        (p.name, t.name): views.rows(p.name, t.name)  # type: ignore[attr-defined]
        for p in projections
        for t in p.tables
    }
    for projection in projections:
        rebuild(log, views, projection)
    rebuilt = {
        (p.name, t.name): views.rows(p.name, t.name)  # type: ignore[attr-defined]
        for p in projections
        for t in p.tables
    }
    assert all(views.active_generation(p.name) == 2 for p in projections)
    for key, rows in rebuilt.items():
        assert survived[key] == rows, f"{key} differs from its rebuild after crashes"
    log.close()


def test_queries_keep_answering_from_the_old_generation_during_a_rebuild(
    settings: Settings, views: ViewStore
) -> None:
    store = build_store(settings)
    try:
        sids = []
        for n in range(6):
            sid = store.create(tenant_id="acme", user_id=f"u{n}", agent_id="a").session_id
            converse(store, sid, 4, random.Random(n))
            sids.append(sid)
    finally:
        store.close()
    log = open_log(settings)
    ProjectionRunner(log, views, all_projections()).catch_up()
    queries = open_queries(settings, views, log)
    before = {sid: queries.get_session(sid) for sid in sids}
    answered_mid_rebuild: list[int] = []

    def query_between_batches(_: int) -> None:
        # Called after each batch of the rebuild, before the switch to the new generation.
        for sid in sids:
            assert queries.get_session(sid) == before[sid]
            assert len(queries.last_messages(sid, 3)) == 3
        answered_mid_rebuild.append(views.active_generation("session_state"))

    rebuild(log, views, all_projections(), batch_size=10, progress=query_between_batches)

    assert len(answered_mid_rebuild) > 3
    assert set(answered_mid_rebuild) == {1}  # every mid-rebuild answer came from generation 1
    assert views.active_generation("session_state") == 2
    assert {sid: queries.get_session(sid) for sid in sids} == before
    queries.close()
    log.close()


def test_rebuilds_while_a_live_runner_and_writers_run_end_identical_to_a_fresh_rebuild(
    settings: Settings, views: ViewStore
) -> None:
    log = open_log(settings)
    stop = threading.Event()
    waiter = open_waiter(settings, stop)
    live_runner = ProjectionRunner(log, views, all_projections(), batch_size=20)
    failures: list[BaseException] = []

    def live() -> None:
        try:
            live_runner.run(stop, waiter, poll_interval=0.05)
        except BaseException as e:
            failures.append(e)
            raise

    store = build_store(settings)
    writing_done = threading.Event()

    def write() -> None:
        try:
            for n in range(6):
                sid = store.create(tenant_id="acme", user_id=f"u{n}", agent_id="a").session_id
                converse(store, sid, 6, random.Random(n))
                store.end(sid, status="completed")
        except BaseException as e:
            failures.append(e)
            raise
        finally:
            writing_done.set()

    live_thread = threading.Thread(target=live)
    writer = threading.Thread(target=write)
    live_thread.start()
    writer.start()
    try:
        rebuilds = 0
        while not writing_done.is_set() or rebuilds < 2:
            rebuild(log, views, all_projections(), batch_size=15)
            rebuilds += 1
        writer.join()
        head = log.head()

        def caught_up() -> bool:
            return all(
                views.tracking(p.name, views.active_generation(p.name)) >= head
                for p in all_projections()
            )

        wait_until(caught_up, timeout=30, what="the live runner to catch up after the rebuilds")
    finally:
        stop.set()
        live_thread.join(timeout=10)
        waiter.close()
        store.close()
    assert failures == []
    projections = all_projections()
    served = {(p.name, t.name): views.rows(p.name, t.name) for p in projections for t in p.tables}  # type: ignore[attr-defined]
    rebuild(log, views, projections)
    fresh = {(p.name, t.name): views.rows(p.name, t.name) for p in projections for t in p.tables}  # type: ignore[attr-defined]
    assert served == fresh
    assert sum(len(rows) for (_, table), rows in fresh.items() if table == "session_state") == 6
    log.close()
