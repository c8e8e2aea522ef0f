"""The CLI for views and operations on SQLite: projections status/run/rebuild, sessions list,
session messages, metrics and cleanup.

Most commands run in-process through typer's CliRunner on a database the demo filled; the live
`projections run` runs as the real console script, stopped with SIGINT like Ctrl-C.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import typer
from typer.testing import Result

from sessionstore.adapters.bootstrap import open_log, open_queries, open_views
from sessionstore.adapters.cli.common import (
    EXIT_REQUEST,
    EXIT_SETTINGS,
    EXIT_STORAGE,
    _reported_errors,
    parse_duration,
)
from sessionstore.adapters.cli.session import StatusChoice
from sessionstore.adapters.demo import run_demo
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.domain.errors import ProjectionTimeout
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import SessionEnded
from sessionstore.projections.query_rules import (
    STATUS_CHOICES,
)
from tests.integration.test_cli import CONSOLE_SCRIPT, clean_env, invoke, one_line_error

PROJECTIONS = ("session_state", "transcript", "metrics", "cleanup")


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite file the demo's simulation filled (6 sessions); the views have not been run
    (the `demo` command itself would catch them up)."""
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    result = invoke(url, "db", "migrate")
    assert result.exit_code == 0, result.output
    run_demo(settings_of(url), seed=11)
    return url


def test_the_demo_catches_the_views_up_and_shows_agent_metrics(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    shown = ok(url, "demo", "--seed", "11").stdout
    assert "Per-agent metrics from the views" in shown
    for agent in ("phone-booking", "voice-receptionist", "chat-support"):
        assert re.search(rf"^\s+{agent}\s+\d+\s+\d+/\d+/\d+/\d+\s", shown, re.MULTILINE), agent
    status = json_of(url, "projections", "status")
    assert {s["lag"] for s in status} == {0}


def settings_of(url: str) -> Settings:
    return load_settings(database_url=url)


def ok(url: str, *args: str) -> Result:
    result = invoke(url, *args)
    assert result.exit_code == 0, (result.output, result.stderr)
    return result


def json_of(url: str, *args: str) -> Any:
    return json.loads(ok(url, *args, "--json").stdout)


def head_of(url: str) -> int:
    log = open_log(settings_of(url))
    try:
        return log.head().position
    finally:
        log.close()


@pytest.fixture
def projected(url: str) -> str:
    ok(url, "projections", "run", "--once")
    return url


def demo_session(url: str, agent: str) -> dict[str, Any]:
    listed = json_of(url, "sessions", "list", "--agent", agent)["items"]
    assert listed, agent
    first: dict[str, Any] = listed[0]
    return first


# -- projections status / run ---------------------------------------------------------------------


def test_status_after_the_demo_shows_the_lag_then_zero_after_run_once(url: str) -> None:
    head = head_of(url)
    assert head > 50

    before = ok(url, "projections", "status").stdout
    for name in PROJECTIONS:
        assert re.search(rf"^\s+{name}\s+1\s+0\s+{head}\s+{head}\s*$", before, re.MULTILINE), name

    run = ok(url, "projections", "run", "--once").stdout
    assert "catching up" in run
    assert f"{head}/{head}" in run
    assert f"caught up: {head} events read; every view at position {head} (log head {head})" in run

    after = json_of(url, "projections", "status")
    assert [s["name"] for s in after] == list(PROJECTIONS)
    for s in after:
        assert (s["generation"], s["position"], s["head"], s["lag"]) == (1, head, head, 0)
    again = ok(url, "projections", "run", "--once").stdout
    assert "caught up: 0 events read" in again


def test_projections_run_live_applies_new_events_until_interrupted(url: str) -> None:
    settings = settings_of(url)
    process = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
        [str(CONSOLE_SCRIPT), "projections", "run"],
        env=clean_env(SESSIONSTORE_DATABASE_URL=url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    views = open_views(settings)
    log = open_log(settings)
    queries = open_queries(settings, views, log)
    store = SessionStore(log)
    try:
        queries.wait_for(log.head().position, timeout=60)  # the catch-up
        created = store.create(tenant_id="live", user_id="u", agent_id="a")
        written = store.add_message(created.session_id, role="user", content="while running")
        queries.wait_for(written.position, timeout=60)  # applied live, by the subprocess
        assert queries.last_messages(created.session_id, 1)[0].content == "while running"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        views.close()
        log.close()
    assert process.returncode == 0, err
    assert "applying new events as they arrive (Ctrl-C to stop)" in out
    assert f"stopped: every view at position {written.position}" in out


# -- projections rebuild --------------------------------------------------------------------------


def test_rebuild_all_shows_progress_and_switches_to_generation_two(projected: str) -> None:
    url = projected
    head = head_of(url)
    listed = json_of(url, "sessions", "list")

    out = ok(url, "projections", "rebuild").stdout

    # One pass over the log feeds all four new generations.
    names = ", ".join(PROJECTIONS)
    assert re.search(rf"rebuilding {names} .* {head}/{head} 100%", out), out
    for name in PROJECTIONS:
        assert f"rebuilt {name}: generation 2\n" in out
    assert f"{head} events read; every view at position {head} (log head {head})" in out
    status = json_of(url, "projections", "status")
    assert {(s["name"], s["generation"], s["lag"]) for s in status} == {
        (name, 2, 0) for name in PROJECTIONS
    }
    assert json_of(url, "sessions", "list") == listed


def test_rebuild_one_projection_leaves_the_others_alone(projected: str) -> None:
    out = ok(projected, "projections", "rebuild", "transcript").stdout
    assert "rebuilt transcript: generation 2" in out
    assert "session_state" not in out
    generations = {s["name"]: s["generation"] for s in json_of(projected, "projections", "status")}
    assert generations == {"session_state": 1, "transcript": 2, "metrics": 1, "cleanup": 1}


def test_rebuild_of_an_unknown_projection_is_a_bad_request(url: str) -> None:
    result = invoke(url, "projections", "rebuild", "sessions")
    assert result.exit_code == EXIT_REQUEST
    assert one_line_error(result) == (
        "error: no projection named 'sessions'; known: cleanup, metrics, session_state, transcript"
    )


# -- sessions list --------------------------------------------------------------------------------


def test_sessions_list_filters_and_pages(projected: str) -> None:
    url = projected
    everything = json_of(url, "sessions", "list")
    assert everything["next_cursor"] is None
    items = everything["items"]
    assert len(items) == 6
    assert [i["created_at"] for i in items] == sorted(i["created_at"] for i in items)

    table = ok(url, "sessions", "list").stdout
    for item in items:
        assert item["session_id"] in table

    expired = json_of(url, "sessions", "list", "--status", "expired")["items"]
    assert [(i["status"], i["end_status"]) for i in expired] == [("ended", "expired")]
    chat = json_of(url, "sessions", "list", "--agent", "chat-support", "--tenant", "acme-shop")
    assert len(chat["items"]) == 3
    assert {i["agent_id"] for i in chat["items"]} == {"chat-support"}
    assert json_of(url, "sessions", "list", "--tenant", "nobody")["items"] == []
    assert json_of(url, "sessions", "list", "--idle-for", "1d")["items"] == []
    assert len(json_of(url, "sessions", "list", "--idle-for", "0s")["items"]) == 6
    user = items[0]["user_id"]
    assert [i["user_id"] for i in json_of(url, "sessions", "list", "--user", user)["items"]] == [
        user
    ]

    first = ok(url, "sessions", "list", "--limit", "4").stdout
    match = re.search(r"more: add --cursor (\S+)", first)
    assert match, first
    rest = json_of(url, "sessions", "list", "--limit", "4", "--cursor", match[1])
    page_one = json_of(url, "sessions", "list", "--limit", "4")["items"]
    assert [i["session_id"] for i in page_one + rest["items"]] == [i["session_id"] for i in items]
    assert rest["next_cursor"] is None


def test_sessions_list_bad_options(projected: str) -> None:
    assert invoke(projected, "sessions", "list", "--idle-for", "soon").exit_code == EXIT_SETTINGS
    assert invoke(projected, "sessions", "list", "--status", "asleep").exit_code == EXIT_SETTINGS
    assert invoke(projected, "sessions", "list", "--limit", "501").exit_code == EXIT_SETTINGS
    bad = invoke(projected, "sessions", "list", "--cursor", "nonsense")
    assert bad.exit_code == EXIT_REQUEST
    assert one_line_error(bad) == (
        "error: invalid input: cursor: not a cursor returned by a previous page"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("0s", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "m", "30", "1m1h", "-5m", "3 days"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_the_status_choices_are_the_query_layers() -> None:
    assert tuple(choice.value for choice in StatusChoice) == STATUS_CHOICES


# -- session messages -----------------------------------------------------------------------------


def test_session_messages_full_and_last(projected: str) -> None:
    url = projected
    booking = demo_session(url, "phone-booking")  # interrupted mid tool call, then resumed
    sid = booking["session_id"]

    entries = json_of(url, "session", "messages", sid)
    assert len(entries) == booking["message_count"] + 1  # + the aborted tool call's result
    assert [(e["version"], e["seq"]) for e in entries] == sorted(
        (e["version"], e["seq"]) for e in entries
    )
    aborted = [e for e in entries if e["aborted"]]
    assert len(aborted) == 1
    assert aborted[0]["role"] == "tool"

    table = ok(url, "session", "messages", sid).stdout
    assert f"Session {sid}: messages" in table
    assert f"{aborted[0]['version']}.1" in table
    assert f"[{aborted[0]['tool_call_id']}] [tool call aborted" in table
    assert re.search(r"assistant\s+calls \w+\(", table)

    last = ok(url, "session", "messages", sid, "--last", "3").stdout
    assert f"Session {sid}: last 3 messages" in last
    assert entries[-1]["content"][:30] in last
    assert entries[-4]["content"][:30] not in last
    assert json_of(url, "session", "messages", sid, "--last", "3") == entries[-3:]

    missing = invoke(url, "session", "messages", "00000000-0000-4000-8000-000000000000")
    assert missing.exit_code == EXIT_REQUEST
    assert "not found" in one_line_error(missing)


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_of_a_session_and_of_an_agent(projected: str) -> None:
    url = projected
    support = json_of(url, "sessions", "list", "--agent", "chat-support")["items"]
    sid = support[0]["session_id"]
    state = json.loads(ok(url, "session", "show", sid, "--json").stdout)

    session = json_of(url, "metrics", "session", sid)
    assert (session["requests"], session["errors"]) == (
        state["turn_count"],
        state["error_turn_count"],
    )
    assert session["agent_id"] == "chat-support"
    table = ok(url, "metrics", "session", sid).stdout
    assert f"Metrics of session {sid}" in table
    assert re.search(rf"requests\s+{state['turn_count']}\b", table)

    agent = json_of(url, "metrics", "agent", "chat-support")
    assert agent["sessions_started"] == len(support) == 3
    assert agent["turns"] == sum(
        json.loads(ok(url, "session", "show", s["session_id"], "--json").stdout)["turn_count"]
        for s in support
    )
    assert agent["p50_ms"] is not None
    assert agent["p50_ms"] <= agent["p95_ms"] <= agent["p99_ms"]
    today = datetime.now(UTC).date()
    ranged = json_of(
        url,
        "metrics",
        "agent",
        "chat-support",
        "--from",
        str(today - timedelta(days=1)),
        "--to",
        str(today + timedelta(days=1)),
        "--tenant",
        "acme-shop",
    )
    assert ranged["turns"] == agent["turns"]
    tomorrow = json_of(url, "metrics", "agent", "chat-support", "--from", str(today + timedelta(1)))
    assert (tomorrow["turns"], tomorrow["p99_ms"], tomorrow["days"]) == (0, None, 0)
    text = ok(url, "metrics", "agent", "chat-support").stdout
    assert "Metrics of agent chat-support" in text
    assert re.search(r"latency\s+p50 \d+ ms, p95 \d+ ms, p99 \d+ ms", text)
    assert invoke(url, "metrics", "agent", "x", "--from", "tomorrow").exit_code == EXIT_SETTINGS
    backwards = invoke(url, "metrics", "agent", "x", "--from", "2026-02-02", "--to", "2026-02-01")
    assert backwards.exit_code == EXIT_REQUEST


# -- cleanup --------------------------------------------------------------------------------------


@pytest.fixture
def idle(projected: str) -> tuple[str, list[UUID]]:
    """Two sessions created two hours ago with a 60 s idle timeout, projected."""
    settings = settings_of(projected)
    log = open_log(settings)
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    store = SessionStore(log, clock=lambda: two_hours_ago)
    ids = [
        store.create(
            tenant_id="ops", user_id=f"u{n}", agent_id="a", policy={"idle_timeout_seconds": 60}
        ).session_id
        for n in range(2)
    ]
    log.close()
    ok(projected, "projections", "run", "--once")
    return projected, ids


def test_cleanup_dry_run_lists_candidates_and_changes_nothing(idle: tuple[str, list[UUID]]) -> None:
    url, ids = idle
    head = head_of(url)

    out = ok(url, "cleanup", "--dry-run").stdout

    assert f"cleanup view at position {head}, log head {head}: up to date" in out
    assert "Idle beyond their policy (2)" in out
    for sid in ids:
        assert re.search(rf"{sid}\s+ops\s+active\s+1\s", out), out
    assert "Past their TTL: none" in out
    assert "dry run: nothing was changed" in out
    assert head_of(url) == head
    as_json = json_of(url, "cleanup", "--dry-run", "--tenant", "ops")
    # Same deadline (same creation time): ordered by session id.
    assert [c["session_id"] for c in as_json["idle"]] == sorted(str(sid) for sid in ids)
    assert as_json["view"]["lag"] == 0


def test_cleanup_expires_then_a_second_run_replays(idle: tuple[str, list[UUID]]) -> None:
    url, ids = idle

    out = ok(url, "cleanup").stdout

    assert "expired 2 sessions; 0 already expired by another run; 0 skipped" in out
    assert out.count("idle timeout") == 2
    settings = settings_of(url)
    log = open_log(settings)
    try:
        for sid in ids:
            end = log.read_session(sid)[-1].event
            assert isinstance(end, SessionEnded)
            assert (end.status.value, end.reason) == ("expired", "idle timeout")
    finally:
        log.close()

    # The view has not seen the ends yet: the same requests are answered by their keys.
    again = ok(url, "cleanup").stdout
    assert "2 events behind" in again
    assert "expired 0 sessions; 2 already expired by another run; 0 skipped" in again
    ok(url, "projections", "run", "--once")
    last = json_of(url, "cleanup")
    assert (last["expired"], last["already_done"], last["skipped"]) == (0, 0, 0)
    assert last["view"]["lag"] == 0


# -- errors ---------------------------------------------------------------------------------------


def test_a_read_your_writes_timeout_exits_with_the_storage_code() -> None:
    with pytest.raises(typer.Exit) as raised, _reported_errors():
        raise ProjectionTimeout("transcript", 12, 10, 0.5)
    assert raised.value.exit_code == EXIT_STORAGE


def test_views_on_memory_are_empty_and_current(tmp_path: Path) -> None:
    status = json_of("memory://", "projections", "status")
    assert [(s["name"], s["position"], s["lag"]) for s in status] == [
        (name, 0, 0) for name in PROJECTIONS
    ]
    assert json_of("memory://", "sessions", "list") == {"items": [], "next_cursor": None}


def test_query_commands_on_an_unmigrated_database_name_the_fix(tmp_path: Path) -> None:
    result = invoke(f"sqlite:///{tmp_path / 'none.db'}", "sessions", "list")
    assert result.exit_code == EXIT_STORAGE
    assert "run `sessionstore db migrate`" in one_line_error(result)
