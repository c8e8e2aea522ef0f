"""Audit on SQLite and PostgreSQL: paged history, export → import round trips, bad files.

Each scenario runs against a fresh source database and a fresh, empty target (a second SQLite
file, or a second PostgreSQL schema).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest

from sessionstore.adapters.audit import export, history, import_log
from sessionstore.adapters.bootstrap import build_store, migrate, open_log
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.chain import Auditable, verify
from sessionstore.domain.errors import ImportRejected
from sessionstore.domain.ports import EventLog, StoredRow
from sessionstore.domain.store import SessionStore
from tests.fix_db import drop_schema


def conversation(store: SessionStore, *, tenant: str, user: str, turns: int = 2) -> UUID:
    sid = store.create(tenant_id=tenant, user_id=user, agent_id="bot", channel="text").session_id
    for n in range(turns):
        store.add_message(sid, role="user", content=f"question {n} ünïcode")
        store.add_message(
            sid,
            role="assistant",
            tool_calls=[{"id": f"c{n}", "name": "lookup", "arguments": {"n": n}}],
        )
        store.add_message(sid, role="tool", tool_call_id=f"c{n}", content=f"result {n}")
        store.record_turn(sid, request_id=f"r{n}", duration_ms=120.5, error=n == 1)
    store.update_context(sid, set={"topic": "orders", "n": turns})
    store.interrupt(sid, reason="barge_in", detail="caller spoke")
    store.resume(sid)
    return sid


def export_lines(log: EventLog, **filters: Any) -> list[str]:
    out = io.StringIO()
    export(log, out, **filters)
    return out.getvalue().splitlines()


def retrailer(lines: list[str]) -> list[str]:
    """Fix the trailer's counts after a test edited the event lines (so the edit is what fails)."""
    events = [json.loads(line) for line in lines[1:-1]]
    trailer = {
        "end": "sessionstore-export",
        "sessions": len({e["session_id"] for e in events}),
        "events": len(events),
    }
    return [*lines[:-1], json.dumps(trailer)]


def edit(lines: list[str], index: int, **changes: Any) -> list[str]:
    record = json.loads(lines[index])
    for key, value in changes.items():
        if key.startswith("payload."):
            record["payload"][key.removeprefix("payload.")] = value
        else:
            record[key] = value
    return [*lines[:index], json.dumps(record), *lines[index + 1 :]]


def snapshot(log: EventLog) -> list[StoredRow]:
    return log.stored_rows(limit=100_000)


class AuditScenarios:
    """Backend-neutral scenarios; subclasses provide ``source`` and ``target`` settings."""

    @pytest.fixture
    def source(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def target(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def store(self, source: Settings) -> Iterator[SessionStore]:
        store = build_store(source)
        try:
            yield store
        finally:
            store.close()

    @pytest.fixture
    def target_log(self, target: Settings) -> Iterator[EventLog]:
        log = open_log(target)
        try:
            yield log
        finally:
            log.close()

    @pytest.fixture
    def sessions(self, store: SessionStore) -> dict[str, UUID]:
        """Three sessions of two tenants and three users, appended interleaved."""
        a = conversation(store, tenant="acme", user="ann", turns=3)
        b = conversation(store, tenant="acme", user="bob")
        store.add_message(a, role="user", content="one more")  # a's last event after b's
        c = conversation(store, tenant="globex", user="ann")
        store.end(b, status="completed")
        return {"a": a, "b": b, "c": c}

    # -- history ---------------------------------------------------------------------------

    def test_history_pages_hold_every_event_exactly_once(
        self, store: SessionStore, sessions: dict[str, UUID]
    ) -> None:
        sid = sessions["a"]
        everything = [r.event.event_id for r in store.history(sid)]
        for size in (1, 4, 7, len(everything), len(everything) + 1):
            seen, after = [], 0
            while True:
                page = history(store.log, sid, after_version=after, limit=size)
                assert len(page.events) <= size
                seen += [r.event.event_id for r in page.events]
                if page.next_after_version is None:
                    break
                after = page.next_after_version
            assert seen == everything, size

    def test_history_filters_by_type_and_time(
        self, store: SessionStore, sessions: dict[str, UUID]
    ) -> None:
        sid = sessions["a"]
        full = store.history(sid)
        turns = history(store.log, sid, types=["TurnRecorded", "SessionResumed"], limit=1000)
        assert [r.event.topic for r in turns.events] == ["TurnRecorded"] * 3 + ["SessionResumed"]
        lo, hi = full[3].event.occurred_at, full[6].event.occurred_at
        window = history(store.log, sid, since=lo, until=hi)
        assert [r.event.version for r in window.events] == [4, 5, 6, 7]
        assert all(r.position == f.position for r, f in zip(window.events, full[3:7], strict=True))

    # -- export / import -------------------------------------------------------------------

    def test_round_trip_gives_identical_states_ids_and_hashes(
        self,
        store: SessionStore,
        sessions: dict[str, UUID],
        target: Settings,
        target_log: EventLog,
    ) -> None:
        lines = export_lines(store.log)
        header, trailer = json.loads(lines[0]), json.loads(lines[-1])
        assert header["format"] == "sessionstore-export"
        assert trailer == {"end": "sessionstore-export", "sessions": 3, "events": len(lines) - 2}
        imported = import_log(target_log, lines)
        assert (imported.sessions, imported.events) == (3, len(lines) - 2)
        copy = build_store(target)
        try:
            for sid in sessions.values():
                assert copy.get(sid) == store.get(sid)
                source_rows, target_rows = store.log.stored_rows(sid), copy.log.stored_rows(sid)
                assert [r.event_id for r in target_rows] == [r.event_id for r in source_rows]
                assert [r.hash for r in target_rows] == [r.hash for r in source_rows]
                assert [r.state for r in target_rows] == [r.state for r in source_rows]
                assert None not in [r.hash for r in target_rows]
            report = verify(cast("Auditable", copy.log))
            assert report.ok, report.breaks
            assert report.events == len(lines) - 2

            # Exporting the copy gives the same events; the import wrote one session at a
            # time, so log order (and positions) differ from the source's interleaving.
            def comparable(export: list[str]) -> list[dict[str, Any]]:
                records = [json.loads(x) for x in export[1:-1]]
                for r in records:
                    del r["position"], r["recorded_at"]
                return sorted(records, key=lambda r: (r["session_id"], r["version"]))

            assert comparable(export_lines(copy.log)) == comparable(lines)
        finally:
            copy.close()

    def test_export_lines_are_in_log_order_with_every_field(
        self, store: SessionStore, sessions: dict[str, UUID]
    ) -> None:
        lines = export_lines(store.log)
        records = [json.loads(x) for x in lines[1:-1]]
        assert [r["position"] for r in records] == [r.position for r in snapshot(store.log)]
        first = records[0]
        assert set(first) == {
            "session_id", "version", "position", "event_id", "type", "class_version",
            "occurred_at", "recorded_at", "tenant_id", "hash", "payload",
        }  # fmt: skip
        assert first["type"] == "SessionCreated"
        assert first["payload"]["user_id"] == "ann"
        assert first["hash"] == store.log.stored_rows(sessions["a"])[0].hash.hex()  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"tenant_id": "acme"}, {"a", "b"}),
            ({"user_id": "ann"}, {"a", "c"}),
            ({"tenant_id": "acme", "user_id": "ann"}, {"a"}),
            ({"tenant_id": "nobody"}, set()),
        ],
    )
    def test_export_filters_include_exactly_those_sessions(
        self,
        store: SessionStore,
        sessions: dict[str, UUID],
        filters: dict[str, str],
        expected: set[str],
    ) -> None:
        records = [json.loads(x) for x in export_lines(store.log, **filters)[1:-1]]
        wanted = {str(sessions[name]) for name in expected}
        assert {r["session_id"] for r in records} == wanted
        assert len(records) == sum(len(store.history(sessions[n])) for n in expected)

    def test_export_of_one_session_imports_alone(
        self, store: SessionStore, sessions: dict[str, UUID], target_log: EventLog
    ) -> None:
        lines = export_lines(store.log, session_id=sessions["b"])
        assert {json.loads(x)["session_id"] for x in lines[1:-1]} == {str(sessions["b"])}
        import_log(target_log, lines)
        assert {r.session_id for r in snapshot(target_log)} == {sessions["b"]}
        assert target_log.stored_rows(sessions["b"])[-1].hash == (
            store.log.stored_rows(sessions["b"])[-1].hash
        )

    def test_import_continues_a_stream_the_store_has_up_to_the_line_before(
        self, store: SessionStore, sessions: dict[str, UUID], target_log: EventLog
    ) -> None:
        lines = export_lines(store.log, session_id=sessions["c"])
        head, body, tail = lines[0], lines[1:-1], lines[-1]
        import_log(target_log, retrailer([head, *body[:5], tail]))
        import_log(target_log, retrailer([head, *body[5:], tail]))
        assert [r.hash for r in target_log.stored_rows(sessions["c"])] == [
            r.hash for r in store.log.stored_rows(sessions["c"])
        ]
        # A third time: the store already has the whole session.
        with pytest.raises(ImportRejected, match="already exists") as caught:
            import_log(target_log, lines)
        assert caught.value.line == 2

    # -- bad files -------------------------------------------------------------------------

    def corruptions(self, lines: list[str], sessions: dict[str, UUID]) -> dict[str, Any]:
        """Each bad file with the line number and words its error must give. Every bad line
        is in the LAST session of the file, after other sessions' valid lines."""
        records = [json.loads(x) for x in lines]
        c = str(sessions["c"])
        idx = [i for i, r in enumerate(records) if r.get("session_id") == c]
        third, fifth = idx[2], idx[4]  # versions 3 and 5 of session c
        swapped = [*lines]
        swapped[third], swapped[fifth] = swapped[fifth], swapped[third]
        return {
            "bad json": (
                [*lines[:fifth], lines[fifth][:-2], *lines[fifth + 1 :]],
                fifth + 1,
                "not valid JSON",
            ),
            "out of order": (swapped, third + 1, "version 5 out of order (expected 3)"),
            "unknown type": (
                retrailer(edit(lines, fifth, type="MessageSent")),
                fifth + 1,
                "unknown event topic 'MessageSent'",
            ),
            "invalid payload": (
                edit(lines, third, **{"payload.role": "robot"}),
                third + 1,
                "role",
            ),
            "tampered content": (
                edit(lines, third, **{"payload.content": "altered"}),
                third + 1,
                "hash does not match",
            ),
            "tampered hash": (
                edit(lines, fifth, hash="00" * 32),
                fifth + 1,
                "hash does not match",
            ),
            "missing line": (
                [*lines[:fifth], *lines[fifth + 1 :]],
                fifth + 1,
                "version 6 out of order (expected 5)",
            ),
            "cut short": (lines[:-1], len(lines), "without its trailer"),
            "not an export": (lines[1:], 1, "not a sessionstore-export file"),
        }

    @pytest.mark.parametrize(
        "case",
        [
            "bad json",
            "out of order",
            "unknown type",
            "invalid payload",
            "tampered content",
            "tampered hash",
            "missing line",
            "cut short",
            "not an export",
        ],
    )
    def test_a_bad_file_stops_at_its_first_bad_line_and_changes_nothing(
        self,
        store: SessionStore,
        sessions: dict[str, UUID],
        target_log: EventLog,
        case: str,
    ) -> None:
        # The target already holds a session of its own, which must stay as it is.
        other = export_lines(store.log, session_id=sessions["b"])
        import_log(target_log, other)
        before = snapshot(target_log)
        lines = export_lines(store.log, tenant_id="globex")
        lines = [
            lines[0],
            *export_lines(store.log, tenant_id="acme", user_id="ann")[1:-1],
            *lines[1:],
        ]
        lines = retrailer(lines)
        import_log_ok = [*lines]  # the unedited file imports (checked last)
        bad, line, words = self.corruptions(lines, sessions)[case]
        with pytest.raises(ImportRejected) as caught:
            import_log(target_log, bad)
        assert caught.value.line == line, caught.value.message
        assert words in caught.value.reason
        assert f"line {line}:" in str(caught.value)
        assert snapshot(target_log) == before
        import_log(target_log, import_log_ok)
        assert {r.session_id for r in snapshot(target_log)} == set(sessions.values())


class TestAuditSQLite(AuditScenarios):
    @pytest.fixture
    def source(self, sqlite_settings: Settings) -> Settings:
        return sqlite_settings

    @pytest.fixture
    def target(self, tmp_path: Path) -> Settings:
        settings = load_settings(database_url=f"sqlite:///{tmp_path / 'target.db'}")
        migrate(settings)
        return settings


@pytest.mark.postgres
class TestAuditPostgres(AuditScenarios):
    @pytest.fixture
    def source(self, pg_settings: Settings) -> Settings:
        return pg_settings

    @pytest.fixture
    def target(self, pg_url: str) -> Iterator[Settings]:
        schema = f"t_{uuid.uuid4().hex[:16]}"
        settings = load_settings(database_url=pg_url, database_schema=schema, pool_max_size=4)
        migrate(settings)
        try:
            yield settings
        finally:
            drop_schema(pg_url, schema)
