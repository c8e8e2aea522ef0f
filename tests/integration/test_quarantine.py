"""Poison containment on SQLite and PostgreSQL, through the CLI: rows the views cannot apply,
written straight into the log with SQL (behind the domain's back), hold only their session in
the views that cannot apply them; every other session keeps flowing, status and the
quarantine list report them, a rebuild completes, and a retry of an unfixable row leaves it
quarantined and exits 1.

The poisons: a value the database refuses (PostgreSQL: a NUL character in a message's text;
SQLite, which stores NULs, a message's input token count of 2^63, beyond its 64-bit integers:
the transcript keeps it as it is, where the state's and the metrics' sums saturate) and a row
whose state is not JSON at all. (A handler bug, fixed by new code, is in the view-store
contract, on every backend.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner, Result

from sessionstore.adapters.bootstrap import build_store, open_log, open_views
from sessionstore.adapters.cli.root import app
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.serialization import SessionStoredEvent
from sessionstore.domain.store import SessionStore
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.runner import ProjectionRunner
from tests.poison import RawLog, message, stored, turn, undecodable

PROJECTIONS = ("session_state", "transcript", "metrics", "cleanup")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest) -> Settings:
    name = "sqlite_settings" if request.param == "sqlite" else "pg_settings"
    value: Settings = request.getfixturevalue(name)
    return value


def invoke(settings: Settings, *args: str) -> Result:
    """A CLI command in-process, configured like a deployment (SESSIONSTORE_* variables)."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SESSIONSTORE_")}
    env.update(
        SESSIONSTORE_DATABASE_URL=settings.database_url,
        SESSIONSTORE_DATABASE_SCHEMA=settings.database_schema,
        COLUMNS="250",
    )
    return CliRunner().invoke(app, list(args), env=env)


def json_of(settings: Settings, *args: str) -> Any:
    result = invoke(settings, *args, "--json")
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


@pytest.fixture
def store(settings: Settings) -> Iterator[SessionStore]:
    store = build_store(settings)
    yield store
    store.close()


@pytest.fixture
def views(settings: Settings) -> Iterator[ViewStore]:
    views = open_views(settings)
    yield views
    views.close()


def refused_value(settings: Settings, sid: UUID, version: int) -> SessionStoredEvent:
    """A row whose view rows the database refuses."""
    if settings.backend == "postgres":  # PostgreSQL text cannot hold NUL
        return stored(message(sid, version), content="be\x00fore")
    return stored(message(sid, version), input_tokens=2**63)  # SQLite integers are 64-bit


POISONS = {
    # (the row, the views that cannot apply it, the error they record). On PostgreSQL the NUL
    # reaches the transcript's row; the session state's preview of it is replaced by the next
    # message of the same batch before anything is written, so that view applies it fine.
    "refused value": (
        refused_value,
        {"postgres": {"transcript"}, "sqlite": {"transcript"}},
        "StorageRejected",
    ),
    "undecodable": (
        lambda _settings, sid, version: undecodable(message(sid, version)),
        {"postgres": set(PROJECTIONS), "sqlite": set(PROJECTIONS)},
        "UndecodableEvent",
    ),
}


def state_rows(views: ViewStore) -> dict[UUID, dict[str, Any]]:
    return {r["session_id"]: r for r in views.rows("session_state", "session_state")}  # type: ignore[attr-defined]


def transcript_versions(views: ViewStore, sid: UUID) -> list[int]:
    rows = views.rows("transcript", "transcript")  # type: ignore[attr-defined]
    return [r["version"] for r in rows if r["session_id"] == sid]


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poisoned_row_holds_only_its_session_and_only_in_the_views_it_poisons(
    settings: Settings, store: SessionStore, views: ViewStore, poison: str
) -> None:
    make, poisoned_in, error = POISONS[poison]
    held_in = poisoned_in[settings.backend]
    raw = RawLog(settings)
    a, b, p = (
        store.create(tenant_id="acme", user_id=f"u{n}", agent_id="bot").session_id for n in range(3)
    )
    for sid in (a, b, p):
        store.add_message(sid, role="user", content="first")
        store.add_message(sid, role="assistant", content="second")
    raw.insert(make(settings, p, 4))  # the poison
    raw.insert(stored(message(p, 5, "after the poison")))
    store.add_message(a, role="user", content="after the poison")  # a v4, after it in the log
    store.add_message(b, role="user", content="after the poison")

    run = invoke(settings, "projections", "run", "--once")

    assert run.exit_code == 0, (run.output, run.stderr)
    assert "quarantined events" in run.stdout
    status = {s["name"]: s for s in json_of(settings, "projections", "status")}
    head = open_log(settings).head().position
    for name in PROJECTIONS:
        assert (status[name]["position"], status[name]["lag"]) == (head, 0), name
        assert status[name]["quarantined"] == (2 if name in held_in else 0), name
    table = invoke(settings, "projections", "status").stdout
    assert "quarantined" in table
    assert "projections quarantine list" in table
    # Every other session flowed past the poison; the held one shows its state before it.
    state = state_rows(views)
    assert (state[a]["version"], state[a]["message_count"]) == (4, 3)
    assert (state[b]["version"], state[b]["message_count"]) == (4, 3)
    if "session_state" in held_in:
        assert (state[p]["version"], state[p]["message_count"]) == (3, 2)
    if "transcript" in held_in:
        assert transcript_versions(views, p) == [2, 3]
    else:
        assert transcript_versions(views, p) == [2, 3, 5]  # the poison is a turn: not in it
    listed = json_of(settings, "projections", "quarantine", "list", "--session", str(p))
    assert [(q["projection"], q["version"]) for q in listed] == [
        (name, version) for name in PROJECTIONS if name in held_in for version in (4, 5)
    ]
    heads = [q for q in listed if q["held_behind"] is None]
    assert {q["version"] for q in heads} == {4}
    assert all(q["error"].startswith(f"{error}: ") for q in heads), heads
    assert all(q["held_behind"] == heads[0]["event_id"] for q in listed if q["version"] == 5)
    assert json_of(settings, "projections", "quarantine", "list", "--session", str(a)) == []
    shown = invoke(settings, "projections", "quarantine", "list").stdout
    assert "Quarantined events" in shown
    assert error in shown
    assert str(p) in shown

    # Later events: the others keep flowing, the held session's wait behind the poison.
    raw.insert(stored(message(p, 6, "later still")))
    store.add_message(a, role="user", content="later still")
    assert invoke(settings, "projections", "run", "--once").exit_code == 0
    state = state_rows(views)
    assert state[a]["version"] == 5
    if "session_state" in held_in:
        assert state[p]["version"] == 3
    counts = {s["name"]: s["quarantined"] for s in json_of(settings, "projections", "status")}
    assert counts == {name: 3 if name in held_in else 0 for name in PROJECTIONS}

    # A rebuild meets the same poison, completes and switches over.
    rebuilt = invoke(settings, "projections", "rebuild")
    assert rebuilt.exit_code == 0, (rebuilt.output, rebuilt.stderr)
    after = {s["name"]: s for s in json_of(settings, "projections", "status")}
    assert {s["generation"] for s in after.values()} == {2}
    assert {n: s["quarantined"] for n, s in after.items()} == counts
    assert state_rows(views) == state

    # The log is immutable: a retry cannot fix the row; it stays quarantined, exit 1.
    retried = invoke(settings, "projections", "quarantine", "retry")
    assert retried.exit_code == 1, (retried.output, retried.stderr)
    assert "still fails" in retried.stdout
    assert f"released 0 events; {sum(counts.values())} remain quarantined" in retried.stdout
    only = invoke(settings, "projections", "quarantine", "retry", "--session", str(a), "--json")
    assert only.exit_code == 0, only.output  # nothing of that session is quarantined
    assert {r["remaining"] for r in json.loads(only.stdout)} == {0}
    assert json_of(settings, "projections", "status") == list(after.values())


def test_a_runner_reports_what_it_quarantined(
    settings: Settings, store: SessionStore, views: ViewStore
) -> None:
    sid = store.create(tenant_id="acme", user_id="u", agent_id="bot").session_id
    RawLog(settings).insert(undecodable(message(sid, 2)))
    log = open_log(settings)
    try:
        runner = ProjectionRunner(log, views, all_projections())
        assert runner.catch_up() == 2
        assert runner.contained == 4  # one row, in every view (MessageAdded concerns them all)
        assert {s.name: s.quarantined for s in runner.status()} == dict.fromkeys(PROJECTIONS, 1)
        (row,) = views.quarantined("transcript")
        assert (row.session_id, row.version, row.held_behind) == (sid, 2, None)
        assert row.error.startswith("UndecodableEvent: stored MessageAdded of session")
    finally:
        log.close()


def test_an_aggregate_beyond_64_bits_saturates_instead_of_stopping_the_view(
    settings: Settings, store: SessionStore, views: ViewStore
) -> None:
    # Two sessions of one agent on one day, each with a turn of 2^62 input tokens (beyond the
    # input contract, written behind its back): each turn is fine on its own, their sum in the
    # agent's daily row is beyond 64 bits. The sum stops at 2^63 - 1; nothing is quarantined.
    raw = RawLog(settings)
    x, y = (store.create(tenant_id="acme", user_id=u, agent_id="bot").session_id for u in "xy")
    z = store.create(tenant_id="acme", user_id="z", agent_id="other-bot").session_id
    raw.insert(stored(turn(x, 2), input_tokens=2**62))
    raw.insert(stored(turn(y, 2), input_tokens=2**62))
    raw.insert(stored(turn(z, 2)))
    log = open_log(settings)
    try:
        ProjectionRunner(log, views, all_projections()).catch_up()
    finally:
        log.close()

    assert views.quarantined() == []
    daily = {r["agent_id"]: r for r in views.rows("metrics", "agent_daily_metrics")}  # type: ignore[attr-defined]
    assert (daily["bot"]["turns"], daily["bot"]["input_tokens"]) == (2, 2**63 - 1)
    assert (daily["other-bot"]["turns"], daily["other-bot"]["input_tokens"]) == (1, 10)
    assert state_rows(views)[y]["input_tokens"] == 2**62  # the session's own view holds it
