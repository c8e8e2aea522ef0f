"""Export and import of a log that holds rows stored at an older event version: the rows are
upcast on the way out, so their re-encoding differs from the stored bytes; the export carries
no hash for them (and what follows in their session), the import re-chains them, and the
imported store has the same states and verifies."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import orjson

from sessionstore.adapters.audit import export, import_log
from sessionstore.adapters.bootstrap import build_store, migrate
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.chain import verify
from sessionstore.adapters.storage.sqlite.log import SQLiteEventLog
from sessionstore.events.catalogue import SessionCreated
from tests.legacy import MessageAddedV1, v1_mapper


def test_rows_stored_at_an_older_version_round_trip_through_export_and_import(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    sid = uuid4()
    at = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    old_code = SQLiteEventLog.open(sqlite_settings)
    old_code.mapper = v1_mapper()  # the log as the code before MessageAdded v2 wrote it
    try:
        old_code.append(
            [
                SessionCreated(
                    session_id=sid,
                    version=1,
                    occurred_at=at,
                    event_id=uuid4(),
                    tenant_id="acme",
                    user_id="u",
                    agent_id="a",
                    channel="voice",
                ),
                MessageAddedV1(
                    session_id=sid,
                    version=2,
                    occurred_at=at,
                    event_id=uuid4(),
                    message_id="m1",
                    role="user",
                    content="hello from v1",
                ),
            ],
            tenant_id="acme",
        )
    finally:
        old_code.close()
    source = build_store(sqlite_settings)
    try:
        source.add_message(sid, role="assistant", content="and now v2", language="en")
        before = source.get(sid)
        out = io.StringIO()
        export(source.log, out)
    finally:
        source.close()

    lines = out.getvalue().splitlines()
    events = [orjson.loads(line) for line in lines[1:-1]]
    assert [e["version"] for e in events] == [1, 2, 3]
    assert events[0]["hash"] is not None  # stored bytes re-encode identically
    assert [e["hash"] for e in events[1:]] == [None, None]  # upcast row, and what chains on it
    assert events[1]["payload"]["modality"] == "text"  # exported in the current (v2) shape

    target_settings = load_settings(database_url=f"sqlite:///{tmp_path / 'target.db'}")
    migrate(target_settings)
    target = build_store(target_settings)
    try:
        summary = import_log(target.log, lines)
        assert summary is not None
        assert target.get(sid) == before
        assert verify(target.log).ok  # type: ignore[arg-type]
        assert [str(r.event.event_id) for r in target.history(sid)] == [
            e["event_id"] for e in events
        ]
    finally:
        target.close()
