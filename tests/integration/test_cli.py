"""The `sessionstore` command line, on the embedded default backend (a SQLite file).

The demo runs as the real console script in a subprocess, like `make demo` runs it; the other
commands run in-process through typer's CliRunner against the database the demo wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from sessionstore.adapters.bootstrap import build_store
from sessionstore.adapters.cli.common import EXIT_REQUEST, EXIT_SETTINGS, EXIT_STORAGE
from sessionstore.adapters.cli.render_json import session_json
from sessionstore.adapters.cli.root import app
from sessionstore.adapters.demo import SCENARIOS, simulate
from sessionstore.adapters.settings import load_settings
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.session import SessionStatus
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import SessionEnded, SessionInterrupted, SessionResumed

CONSOLE_SCRIPT = Path(sys.executable).with_name("sessionstore")
WIDE = "200"  # so rich tables are not squeezed and rows stay on one line
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any SESSIONSTORE_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
    env.update(COLUMNS=WIDE, **extra)
    return env


def run_script(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    assert CONSOLE_SCRIPT.exists(), f"console script missing: {CONSOLE_SCRIPT} (pip install -e .)"
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def invoke(url: str, *args: str) -> Result:
    """Run a command in-process with SESSIONSTORE_DATABASE_URL set to ``url``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SESSIONSTORE_")}
    env.update(SESSIONSTORE_DATABASE_URL=url, COLUMNS=WIDE)
    return CliRunner().invoke(app, list(args), env=env)


def open_store(url: str) -> Iterator[SessionStore]:
    store = build_store(load_settings(database_url=url))
    try:
        yield store
    finally:
        store.close()


@dataclass(frozen=True)
class DemoRun:
    url: str
    cwd: Path
    result: subprocess.CompletedProcess[str]
    highlight_id: str


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`sessionstore demo` once, as a subprocess, on a fresh SQLite file."""
    cwd = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{cwd / 'x.db'}"
    result = run_script("demo", "--seed", "2024", cwd=cwd, SESSIONSTORE_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    match = re.search(rf"sessionstore session show ({UUID_RE})", result.stdout)
    assert match, result.stdout
    return DemoRun(url, cwd, result, match[1])


@pytest.fixture
def store(demo_run: DemoRun) -> Iterator[SessionStore]:
    yield from open_store(demo_run.url)


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


# ---------------------------------------------------------------------------------------------
# demo


def test_demo_migrates_simulates_and_prints_table_and_history(demo_run: DemoRun) -> None:
    out = demo_run.result.stdout
    assert demo_run.result.stderr == ""
    assert "applied migration 0001_event_log" in out
    assert "simulated 6 sessions of 3 agents (seed 2024)" in out
    assert "Demo sessions: current state" in out
    table = out.split("Demo sessions: current state", 1)[1].split("What the agent runtimes", 1)[0]
    for status in ("completed", "failed", "expired", "abandoned", "active"):
        assert re.search(rf"^\s+[0-9a-f]{{8}}\s.*\s{status}\s", table, re.MULTILINE), status
    for agent in ("phone-booking", "chat-support", "voice-receptionist"):
        assert agent in table
    assert "replayed=True" in out
    assert "was rejected" in out  # the watchdog's stale expected_version
    assert f"History of session {demo_run.highlight_id}" in out


def test_demo_history_shows_every_event_of_the_interrupted_session(
    demo_run: DemoRun, store: SessionStore
) -> None:
    history_text = demo_run.result.stdout.split("History of session", 1)[1]
    history = store.history(demo_run.highlight_id)
    for recorded in history:
        event = recorded.event
        row = rf"^\s+{event.version}\s+{recorded.position}\s+\S+ \S+\s+{event.topic}\s"
        assert re.search(row, history_text, re.MULTILINE), (event.version, event.topic)
    interrupted = [r.event for r in history if isinstance(r.event, SessionInterrupted)]
    assert len(interrupted) == 1
    assert interrupted[0].aborted_tool_calls, "the interruption must abort the open tool call"
    assert interrupted[0].aborted_tool_calls[0] in history_text
    resumed = [r.event for r in history if isinstance(r.event, SessionResumed)]
    assert len(resumed) == 1
    assert resumed[0].version > interrupted[0].version
    assert f"resume #1 after {resumed[0].seconds_interrupted:.1f} s" in history_text


def test_demo_sessions_in_the_database_cover_every_end_status(store: SessionStore) -> None:
    ids = {r.event.session_id for r in store.log.read_log(limit=10_000)}
    states = [store.get(sid) for sid in ids]
    assert len(states) == len(SCENARIOS)
    ended = {s.end_status.value for s in states if s.end_status is not None}
    assert ended == {"completed", "failed", "expired", "abandoned"}
    assert any(s.status is SessionStatus.ACTIVE for s in states)
    assert {s.channel.value for s in states} == {"text", "voice", "phone"}
    assert sum(s.error_turn_count for s in states) >= 2
    assert all(s.turn_count > 0 and s.message_count > 0 for s in states)
    failed = next(s for s in states if s.end_status and s.end_status.value == "failed")
    end = store.history(failed.session_id)[-1].event
    assert isinstance(end, SessionEnded)
    assert end.aborted_tool_calls, "the failed session ends with its hanging tool call aborted"


def test_demo_on_the_embedded_default_writes_sessionstore_db_in_the_working_directory(
    tmp_path: Path,
) -> None:
    result = run_script("demo", "--sessions", "4", "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sqlite:///sessionstore.db" in result.stdout
    assert (tmp_path / "sessionstore.db").is_file()
    for status in ("completed", "failed", "expired", "abandoned"):
        assert status in result.stdout
    for store in open_store(f"sqlite:///{tmp_path / 'sessionstore.db'}"):
        sessions = {r.event.session_id for r in store.log.read_log(limit=10_000)}
        assert len(sessions) == 4


def test_demo_twice_on_one_database_adds_sessions_and_skips_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert invoke(url, "demo", "-n", "2", "--seed", "3").exit_code == 0
    again = invoke(url, "demo", "-n", "2", "--seed", "3")
    assert again.exit_code == 0, again.output
    assert "database schema of" in again.stdout
    assert "up to date" in again.stdout
    assert "applied migration" not in again.stdout
    for store in open_store(url):
        assert len({r.event.session_id for r in store.log.read_log(limit=10_000)}) == 4


def test_demo_is_deterministic_for_a_seed() -> None:
    now = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)

    def fingerprint(seed: int) -> list[Any]:
        summary = simulate(
            lambda clock: SessionStore(MemoryEventLog(), clock=clock), seed=seed, now=now
        )
        states = [
            {k: v for k, v in session_json(s.state).items() if k != "session_id"}
            for s in summary.sessions
        ]
        events = [
            r.event.model_dump(mode="json", exclude={"session_id", "event_id"})
            for r in summary.history
        ]
        notes = [re.sub(r"^[0-9a-f]{8} ", "", note) for note in summary.notes]
        return [states, events, notes, summary.started_at.isoformat()]

    assert fingerprint(42) == fingerprint(42)
    assert fingerprint(42) != fingerprint(43)


def test_demo_rejects_a_session_count_out_of_range(tmp_path: Path) -> None:
    result = invoke(f"sqlite:///{tmp_path / 'x.db'}", "demo", "--sessions", "0")
    assert result.exit_code == 2
    assert "--sessions" in result.output


# ---------------------------------------------------------------------------------------------
# session show / session events


def test_session_show_prints_the_current_state(demo_run: DemoRun, store: SessionStore) -> None:
    state = store.get(demo_run.highlight_id)
    result = invoke(demo_run.url, "session", "show", demo_run.highlight_id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Session {demo_run.highlight_id}" in out
    assert re.search(r"status\s+ended: completed", out)
    assert re.search(rf"agent\s+{state.agent_id}\s", out)
    assert re.search(rf"tenant\s+{state.tenant_id}\s", out)
    assert re.search(rf"version\s+{state.version}\s", out)
    assert re.search(rf"messages\s+{state.message_count}\s", out)
    assert re.search(r"interrupts\s+1\s", out)
    assert re.search(r"resumes\s+1\s", out)
    assert f'"reservation_id":"{state.context["reservation_id"]}"' in out


def test_session_show_json_is_the_folded_state(demo_run: DemoRun, store: SessionStore) -> None:
    result = invoke(demo_run.url, "session", "show", demo_run.highlight_id, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown == session_json(store.get(demo_run.highlight_id))
    assert shown["status"] == "ended"
    assert shown["end_status"] == "completed"
    assert shown["resume_count"] == 1


def test_session_events_lists_versions_positions_types_and_summaries(
    demo_run: DemoRun, store: SessionStore
) -> None:
    result = invoke(demo_run.url, "session", "events", demo_run.highlight_id)
    assert result.exit_code == 0, result.output
    history = store.history(demo_run.highlight_id)
    lines = result.stdout.splitlines()
    for recorded in history:
        event = recorded.event
        time = event.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        expected = rf"^\s+{event.version}\s+{recorded.position}\s+{time}\s+{event.topic}\s+\S"
        assert any(re.search(expected, line) for line in lines), expected
    assert "SessionCreated" in result.stdout
    assert "phone session of phone-booking" in result.stdout
    assert re.search(r"req-\d{3} \d+ ms \(stt \d+, llm \d+, tts \d+", result.stdout)
    assert "completed: reservation R-" in result.stdout


def test_session_events_json_after_and_limit(demo_run: DemoRun, store: SessionStore) -> None:
    result = invoke(
        demo_run.url, "session", "events", demo_run.highlight_id, "--after", "10", "--limit", "3"
    )
    assert result.exit_code == 0, result.output
    as_json = invoke(
        demo_run.url, "session", "events", demo_run.highlight_id, "--json", "--after", "10",
        "--limit", "3",
    )  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    events = json.loads(as_json.stdout)
    expected = store.history(demo_run.highlight_id, after_version=10, limit=3)
    assert [e["version"] for e in events] == [11, 12, 13]
    assert [e["type"] for e in events] == [r.event.topic for r in expected]
    assert [e["position"] for e in events] == [r.position for r in expected]
    assert [e["event_id"] for e in events] == [str(r.event.event_id) for r in expected]


# ---------------------------------------------------------------------------------------------
# errors: one red line on stderr, an exit code, no traceback


def test_unknown_session_exits_1_naming_the_id(demo_run: DemoRun) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for command in ("show", "events"):
        result = invoke(demo_run.url, "session", command, missing)
        assert result.exit_code == EXIT_REQUEST == 1
        assert one_line_error(result) == f"error: session {missing} not found"
        assert result.stdout == ""


def test_malformed_session_id_exits_1_with_a_clear_error(demo_run: DemoRun) -> None:
    result = invoke(demo_run.url, "session", "show", "3f2a9c1b")
    assert result.exit_code == EXIT_REQUEST
    assert "session_id: not a UUID: '3f2a9c1b'" in one_line_error(result)


def test_bad_database_url_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = run_script(
        "session", "show", "00000000-0000-4000-8000-000000000000",
        cwd=tmp_path, SESSIONSTORE_DATABASE_URL="mysql://db.example/sessions",
    )  # fmt: skip
    assert result.returncode == EXIT_SETTINGS == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SESSIONSTORE_DATABASE_URL" in lines[0]
    assert "unsupported scheme 'mysql'" in lines[0]
    assert "Traceback" not in result.stderr
    for command in (["db", "migrate"], ["demo"]):
        in_process = invoke("sqlite://", *command)  # no file path
        assert in_process.exit_code == EXIT_SETTINGS
        assert "SESSIONSTORE_DATABASE_URL" in one_line_error(in_process)


def test_invalid_numeric_setting_exits_2_naming_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["db", "migrate"],
        env={
            "SESSIONSTORE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "SESSIONSTORE_POOL_MAX_SIZE": "lots",
        },
    )
    assert result.exit_code == EXIT_SETTINGS
    assert "SESSIONSTORE_POOL_MAX_SIZE" in one_line_error(result)


def test_unmigrated_database_exits_3_and_says_to_migrate(tmp_path: Path) -> None:
    result = invoke(
        f"sqlite:///{tmp_path / 'new.db'}", "session", "show",
        "00000000-0000-4000-8000-000000000000",
    )  # fmt: skip
    assert result.exit_code == EXIT_STORAGE == 3
    assert "run `sessionstore db migrate`" in one_line_error(result)


def test_unreachable_storage_exits_3(tmp_path: Path) -> None:
    result = invoke(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}", "db", "migrate")
    assert result.exit_code == EXIT_STORAGE
    assert "does not exist" in one_line_error(result)


# ---------------------------------------------------------------------------------------------
# db migrate / db init


def test_db_migrate_twice_second_is_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first = invoke(url, "db", "migrate")
    assert first.exit_code == 0, first.output
    assert "applied migration 0001_event_log" in first.stdout
    second = invoke(url, "db", "migrate")
    assert second.exit_code == 0, second.output
    assert "applied migration" not in second.stdout
    assert f"database schema of {url} is up to date" in second.stdout
    empty = invoke(url, "session", "events", "00000000-0000-4000-8000-000000000000")
    assert empty.exit_code == EXIT_REQUEST  # the schema exists now: not found, not "migrate"


def test_db_init_is_migrate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first = invoke(url, "db", "init")
    assert first.exit_code == 0, first.output
    assert "applied migration 0001_event_log" in first.stdout
    assert "up to date" in invoke(url, "db", "migrate").stdout
    assert "up to date" in invoke(url, "db", "init").stdout


def test_memory_backend_needs_no_migration() -> None:
    result = invoke("memory://", "db", "migrate")
    assert result.exit_code == 0
    assert "up to date (memory:// needs no schema)" in result.stdout


def test_help_and_version_need_no_database(tmp_path: Path) -> None:
    result = run_script("--help", cwd=tmp_path, SESSIONSTORE_DATABASE_URL="mysql://nope")
    assert result.returncode == 0, result.stderr
    for command in ("demo", "session", "db"):
        assert command in result.stdout
    version = invoke("mysql://nope", "--version")
    assert version.exit_code == 0
    assert version.stdout.startswith("sessionstore ")
    assert list(tmp_path.iterdir()) == []  # nothing connected, nothing created
