"""`sessionstore audit ...` on SQLite files, in-process through typer's CliRunner."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from typer.testing import CliRunner, Result

from sessionstore.adapters.bootstrap import build_store, migrate
from sessionstore.adapters.cli.common import EXIT_REQUEST, EXIT_TAMPERED
from sessionstore.adapters.cli.render_json import session_json
from sessionstore.adapters.cli.root import app
from sessionstore.adapters.settings import load_settings
from sessionstore.domain.store import SessionStore


def invoke(url: str, *args: str) -> Result:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SESSIONSTORE_")}
    env.update(SESSIONSTORE_DATABASE_URL=url, COLUMNS="200")
    return CliRunner().invoke(app, list(args), env=env)


def database(path: Path) -> str:
    url = f"sqlite:///{path}"
    migrate(load_settings(database_url=url))
    return url


@pytest.fixture
def source(tmp_path: Path) -> str:
    return database(tmp_path / "source.db")


@pytest.fixture
def store(source: str) -> Iterator[SessionStore]:
    store = build_store(load_settings(database_url=source))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def sid(store: SessionStore) -> UUID:
    sid = store.create(tenant_id="acme", user_id="ann", agent_id="bot", channel="voice").session_id
    store.add_message(sid, role="user", content="hello")
    store.add_message(sid, role="assistant", content="hi, how can I help?")
    store.update_context(sid, set={"mood": "fine"})
    store.interrupt(sid, reason="disconnect")
    return sid


def test_history_pages_as_json_and_as_a_table(source: str, sid: UUID) -> None:
    first = invoke(source, "audit", "history", str(sid), "--limit", "2", "--json")
    assert first.exit_code == 0, first.output
    page = json.loads(first.output)
    assert [e["version"] for e in page["items"]] == [1, 2]
    assert page["next_after_version"] == 2
    rest = json.loads(
        invoke(source, "audit", "history", str(sid), "--after-version", "2", "--json").output
    )
    assert [e["version"] for e in rest["items"]] == [3, 4, 5]
    assert rest["next_after_version"] is None
    typed = invoke(source, "audit", "history", str(sid), "--type", "MessageAdded")
    assert typed.exit_code == 0
    assert typed.output.count("MessageAdded") == 2
    assert "SessionCreated" not in typed.output
    assert "more: add --after-version" not in typed.output
    table = invoke(source, "audit", "history", str(sid), "--limit", "2")
    assert "more: add --after-version 2" in table.output


def test_history_time_range(source: str, sid: UUID, store: SessionStore) -> None:
    events = store.history(sid)
    since = events[1].event.occurred_at.isoformat()
    until = events[2].event.occurred_at.isoformat()
    result = invoke(source, "audit", "history", str(sid), "--from", since, "--to", until, "--json")
    assert [e["version"] for e in json.loads(result.output)["items"]] == [2, 3]
    bad = invoke(source, "audit", "history", str(sid), "--from", until, "--to", since)
    assert bad.exit_code == EXIT_REQUEST
    assert "is after --to" in bad.output


def test_as_of_a_version_and_a_time(source: str, sid: UUID, store: SessionStore) -> None:
    result = invoke(source, "audit", "as-of", str(sid), "--version", "3", "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.output)
    assert (state["version"], state["message_count"], state["status"]) == (3, 2, "active")
    at = store.history(sid)[3].event.occurred_at + timedelta(microseconds=1)
    timed = invoke(source, "audit", "as-of", str(sid), "--at", at.isoformat(), "--json")
    assert json.loads(timed.output)["context"] == {"mood": "fine"}
    now = invoke(source, "audit", "as-of", str(sid), "--version", "5", "--json")
    assert json.loads(now.output) == json.loads(json.dumps(session_json(store.get(sid))))
    table = invoke(source, "audit", "as-of", str(sid), "--version", "5")
    assert "State as of version 5" in table.output
    assert "interrupted" in table.output


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--version", "6"], EXIT_REQUEST, "its stream ends at version 5"),
        (["--at", "2000-01-01T00:00:00Z"], EXIT_REQUEST, "did not exist at 2000-01-01"),
        (["--at", "yesterday"], 2, "not an ISO 8601 time"),
        ([], 2, "exactly one of --version"),
    ],
)
def test_as_of_bad_input(source: str, sid: UUID, args: list[str], code: int, words: str) -> None:
    result = invoke(source, "audit", "as-of", str(sid), *args)
    assert result.exit_code == code
    assert words in " ".join(result.output.split())


def test_unknown_session_is_a_bad_request(source: str) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    for command in (["history"], ["as-of", "--version", "1"], ["verify"], ["diff"]):
        extra = ["1", "2"] if command == ["diff"] else []
        result = invoke(source, "audit", command[0], unknown, *command[1:], *extra)
        assert result.exit_code == EXIT_REQUEST, command
        assert f"session {unknown} not found" in result.output


def test_diff_lists_changed_fields(source: str, sid: UUID) -> None:
    result = invoke(source, "audit", "diff", str(sid), "3", "5", "--json")
    assert result.exit_code == 0, result.output
    changes = {c["field"]: (c["before"], c["after"]) for c in json.loads(result.output)}
    assert changes["status"] == ("active", "interrupted")
    assert changes["context.mood"] == (None, "fine")
    assert changes["interrupt_count"] == (0, 1)
    assert "message_count" not in changes
    beyond = invoke(source, "audit", "diff", str(sid), "3", "9")
    assert beyond.exit_code == EXIT_REQUEST


def test_export_import_verify_and_checkpoint(
    source: str, sid: UUID, store: SessionStore, tmp_path: Path
) -> None:
    other = store.create(tenant_id="globex", user_id="bob", agent_id="a", channel="text")
    out = tmp_path / "all.jsonl"
    exported = invoke(source, "audit", "export", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    assert "exported 6 events of 2 sessions" in exported.output
    assert len(out.read_text().splitlines()) == 8
    assert not (tmp_path / "all.jsonl.partial").exists()
    to_stdout = invoke(source, "audit", "export", "--tenant", "globex")
    lines = to_stdout.output.splitlines()
    assert [json.loads(x)["session_id"] for x in lines[1:-1]] == [str(other.session_id)]

    target = database(tmp_path / "target.db")
    imported = invoke(target, "audit", "import", str(out))
    assert imported.exit_code == 0, imported.output
    assert "imported 6 events of 2 sessions" in imported.output
    assert invoke(target, "audit", "verify").output.splitlines()[-1].startswith("OK")
    again = invoke(target, "audit", "import", str(out))
    assert again.exit_code == EXIT_REQUEST
    assert "line 2:" in again.output
    assert "already exists" in again.output

    checkpoint = invoke(target, "audit", "checkpoint", "--json")
    recorded = json.loads(checkpoint.output)
    assert (recorded["id"], recorded["events"]) == (1, 6)
    assert len(recorded["digest"]) == 64
    verified = json.loads(invoke(target, "audit", "verify", "--json").output)
    assert verified == {
        "ok": True, "sessions": 2, "events": 6, "unsealed_events": 0, "checkpoints": 1,
        "breaks": [],
    }  # fmt: skip
    nothing = invoke(target, "audit", "checkpoint")
    assert "nothing recorded" in nothing.output


def test_import_of_a_bad_file_exits_1_naming_the_line(
    source: str, sid: UUID, tmp_path: Path
) -> None:
    out = tmp_path / "one.jsonl"
    invoke(source, "audit", "export", "--session", str(sid), "-o", str(out))
    lines = out.read_text().splitlines()
    assert '"hello"' in lines[2]
    lines[2] = lines[2].replace('"hello"', '"hallo"')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    target = database(tmp_path / "target.db")
    result = invoke(target, "audit", "import", str(bad))
    assert result.exit_code == EXIT_REQUEST
    assert "error: line 3:" in result.output
    assert "hash does not match" in result.output
    empty = json.loads(invoke(target, "audit", "verify", "--json").output)
    assert empty["events"] == 0


@pytest.mark.parametrize(
    "case",
    [
        (b'"hello"', b'"he\\u0000llo"', "content: contains NUL"),
        (b'"hello"', b'"he\xffllo"', "not valid UTF-8"),
        (b'"input_tokens":null', b'"input_tokens":NaN', "NaN is not a JSON number"),
    ],
    ids=["NUL", "byte 0xFF", "NaN"],
)
def test_import_breaking_the_input_contract_is_one_line_exit_1_and_writes_nothing(
    source: str, sid: UUID, tmp_path: Path, case: tuple[bytes, bytes, str]
) -> None:
    old, new, words = case
    out = tmp_path / "one.jsonl"
    invoke(source, "audit", "export", "--session", str(sid), "-o", str(out))
    lines = out.read_bytes().split(b"\n")
    assert old in lines[2]
    lines[2] = lines[2].replace(old, new)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines))
    target = database(tmp_path / "target.db")

    result = invoke(target, "audit", "import", str(bad))

    assert result.exit_code == EXIT_REQUEST, result.output
    assert "Traceback" not in result.output
    assert "error: line 3:" in result.output
    assert words in result.output
    assert "writing" not in result.output  # the progress never suggests that it wrote
    assert json.loads(invoke(target, "audit", "verify", "--json").output)["events"] == 0


def test_verify_exits_4_at_the_first_break(source: str, sid: UUID, tmp_path: Path) -> None:
    assert invoke(source, "audit", "verify", str(sid)).exit_code == 0
    path = Path(source.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(
            "UPDATE events SET state = "
            "CAST(replace(CAST(state AS TEXT), 'hello', 'HELLO') AS BLOB) "
            "WHERE session_id = ? AND version = 2",
            (str(sid),),
        )
    conn.close()
    result = invoke(source, "audit", "verify")
    assert result.exit_code == EXIT_TAMPERED
    assert f"session {sid} version 2: hash-mismatch" in " ".join(result.output.split())
    as_json = invoke(source, "audit", "verify", str(sid), "--json")
    assert as_json.exit_code == EXIT_TAMPERED
    assert json.loads(as_json.output)["breaks"][0]["version"] == 2
