"""The HTTP API against a real server process, on SQLite and on PostgreSQL.

Every endpoint's happy path and its error statuses (problem+json bodies), idempotent replays,
If-Match, read-your-writes with ``min_position``, and N clients racing on one session.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.http_server import Server

PROBLEM = "application/problem+json"
ALL_APPENDS = ("messages", "turns", "context", "interrupt", "resume", "end")


@pytest.fixture
def agent(http_server: Server) -> Iterator[httpx.Client]:
    with http_server.client("agent") as client:
        yield client


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem of ``status``; return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("type"), str)
    assert body["type"]
    assert body.get("status") == status
    assert isinstance(body.get("detail"), str)
    assert body["detail"]
    return body


def create(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": f"u-{uuid.uuid4().hex[:8]}", "agent_id": "bot-1"}
    body.update(fields)
    response = client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def append(
    client: httpx.Client, sid: str, kind: str, body: dict[str, Any], status: int = 201
) -> dict[str, Any]:
    response = client.post(f"/v1/sessions/{sid}/{kind}", json=body)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def state(client: httpx.Client, sid: str, position: int) -> httpx.Response:
    response = client.get(f"/v1/sessions/{sid}", params={"min_position": position})
    assert response.status_code == 200, response.text
    return response


# ---------------------------------------------------------------------------------------------
# Service endpoints


def test_health_readiness_metrics_and_openapi(http_server: Server) -> None:
    with httpx.Client(base_url=http_server.url) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        metrics = anonymous.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE" in metrics.text
        spec = anonymous.get("/openapi.json").json()
        docs = anonymous.get("/docs")
    assert docs.status_code == 200
    assert "html" in docs.headers["content-type"]
    paths = set(spec["paths"])
    expected = {
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/messages",
        "/v1/sessions/{session_id}/turns",
        "/v1/sessions/{session_id}/context",
        "/v1/sessions/{session_id}/interrupt",
        "/v1/sessions/{session_id}/resume",
        "/v1/sessions/{session_id}/end",
        "/v1/sessions/{session_id}/events",
        "/v1/sessions/{session_id}/state",
        "/v1/sessions/{session_id}/metrics",
        "/v1/metrics/agents/{agent_id}",
        "/v1/projections",
        "/v1/projections/{name}/rebuild",
    }
    assert expected <= paths, expected - paths


def test_requests_show_up_in_the_prometheus_metrics(
    http_server: Server, agent: httpx.Client
) -> None:
    create(agent)
    text = agent.get("/metrics").text
    assert "/v1/sessions" in text


# ---------------------------------------------------------------------------------------------
# Writes and reads of one session


def test_a_session_is_created_and_read_back_with_its_version_as_etag(
    http_server: Server, agent: httpx.Client
) -> None:
    sid = str(uuid.uuid4())
    created = create(
        agent,
        session_id=sid,
        user_id="u-create",
        channel="voice",
        metadata={"locale": "de-DE"},
        policy={"idle_timeout_seconds": 600, "ttl_seconds": 3600},
    )
    assert created["session_id"] == sid
    assert created["version"] == 1
    assert isinstance(created["position"], int)
    assert created["position"] >= 1

    response = state(agent, sid, created["position"])
    assert response.headers["etag"] == '"1"'
    body = response.json()
    assert body["session_id"] == sid
    assert body["status"] == "active"
    assert body["version"] == 1
    assert body["user_id"] == "u-create"
    assert body["channel"] == "voice"
    assert body["metadata"] == {"locale": "de-DE"}
    assert http_server.tenants[0] in response.text  # its own tenant, never another


def test_a_second_create_with_the_same_session_id_is_a_conflict(agent: httpx.Client) -> None:
    sid = str(uuid.uuid4())
    create(agent, session_id=sid)
    again = agent.post("/v1/sessions", json={"user_id": "u", "agent_id": "a", "session_id": sid})
    body = problem(again, 409)
    assert sid in again.text
    assert body["type"].endswith("session-exists")


def test_a_whole_conversation_every_append_route(agent: httpx.Client) -> None:
    created = create(agent, agent_id="bot-life")
    sid = created["session_id"]
    steps: list[tuple[str, dict[str, Any]]] = [
        ("messages", {"role": "user", "content": "Where is order 1234?"}),
        (
            "messages",
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "name": "get_order", "arguments": {"id": "1234"}}],
            },
        ),
        ("messages", {"role": "tool", "tool_call_id": "c1", "content": '{"status":"shipped"}'}),
        ("messages", {"role": "assistant", "content": "It shipped yesterday."}),
        (
            "turns",
            {"request_id": "r1", "duration_ms": 1840, "llm_ms": 1200, "input_tokens": 812},
        ),
        ("context", {"set": {"order_id": "1234"}, "remove": []}),
        ("interrupt", {"reason": "disconnect", "detail": "call dropped"}),
        ("resume", {}),
        ("end", {"status": "completed", "reason": "done"}),
    ]
    positions = [created["position"]]
    for expected_version, (kind, body) in enumerate(steps, start=2):
        result = append(agent, sid, kind, body)
        assert result["version"] == expected_version, (kind, result)
        assert result["position"] > positions[-1]
        positions.append(result["position"])

    response = state(agent, sid, positions[-1])
    final = response.json()
    assert response.headers["etag"] == f'"{len(steps) + 1}"'
    assert final["status"] == "ended"
    assert final["message_count"] == 4
    assert final["turn_count"] == 1
    assert final["resume_count"] == 1
    assert final["context"] == {"order_id": "1234"}

    # Nothing more is appended to an ended session.
    late = agent.post(f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "hi"})
    body = problem(late, 409)
    assert body["type"].endswith("invalid-transition")
    assert "ended" in late.text

    messages = agent.get(f"/v1/sessions/{sid}/messages", params={"last": 2}).json()
    assert messages["session_id"] == sid
    entries = messages["messages"]
    assert [m["content"] for m in entries][-1] == "It shipped yesterday."
    assert len(entries) == 2

    events = agent.get(f"/v1/sessions/{sid}/events", params={"after_version": 2, "limit": 3})
    assert events.status_code == 200, events.text
    page = events.json()
    assert [e["version"] for e in page["events"]] == [3, 4, 5]
    assert [e["type"] for e in page["events"]] == ["MessageAdded"] * 3
    assert page["next_after_version"] == 5

    at_three = agent.get(f"/v1/sessions/{sid}/state", params={"version": 3})
    assert at_three.status_code == 200, at_three.text
    assert at_three.json()["as_of_version"] == 3
    assert at_three.json()["state"]["version"] == 3
    assert at_three.json()["state"]["open_tool_calls"][0]["id"] == "c1"
    now = agent.get(f"/v1/sessions/{sid}/state", params={"at": datetime.now(UTC).isoformat()})
    assert now.status_code == 200, now.text
    assert now.json()["state"]["version"] == len(steps) + 1
    assert now.json()["state"]["status"] == "ended"
    too_far = agent.get(f"/v1/sessions/{sid}/state", params={"version": 999})
    assert problem(too_far, 404)["code"] == "version-beyond-stream"

    metrics = agent.get(f"/v1/sessions/{sid}/metrics")
    assert metrics.status_code == 200, metrics.text
    assert metrics.json()["requests"] == 1

    today = datetime.now(UTC).date().isoformat()
    daily = agent.get("/v1/metrics/agents/bot-life", params={"from": today, "to": today})
    assert daily.status_code == 200, daily.text
    assert daily.json()["turns"] == 1
    assert daily.json()["sessions_completed"] == 1


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("messages", {"role": "user", "content": "hello"}),
        ("turns", {"request_id": "r", "duration_ms": 12.5}),
        ("context", {"set": {"k": 1}}),
        ("interrupt", {"reason": "barge_in"}),
        ("end", {"status": "abandoned"}),
    ],
)
def test_an_idempotent_retry_gets_the_first_answer_with_200(
    agent: httpx.Client, kind: str, body: dict[str, Any]
) -> None:
    sid = create(agent)["session_id"]
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = agent.post(f"/v1/sessions/{sid}/{kind}", json=body, headers=key)
    again = agent.post(f"/v1/sessions/{sid}/{kind}", json=body, headers=key)
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()

    other = {
        "messages": {"role": "user", "content": "a different message"},
        "turns": {"request_id": "r", "duration_ms": 99},
        "context": {"set": {"k": 2}},
        "interrupt": {"reason": "barge_in", "detail": "other"},
        "end": {"status": "abandoned", "reason": "other"},
    }[kind]
    reused = agent.post(f"/v1/sessions/{sid}/{kind}", json=other, headers=key)
    problem(reused, 422)
    assert reused.json()["code"] == "idempotency-key-reused"

    history = agent.get(f"/v1/sessions/{sid}/events").json()
    items = history["events"]
    assert [e["version"] for e in items] == [1, 2]  # the retries appended nothing


def test_an_idempotent_create_is_replayed_too(agent: httpx.Client) -> None:
    key = {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
    body = {"user_id": "u-idem", "agent_id": "bot"}
    first = agent.post("/v1/sessions", json=body, headers=key)
    again = agent.post("/v1/sessions", json=body, headers=key)
    assert (first.status_code, again.status_code) == (201, 200), (first.text, again.text)
    assert again.json() == first.json()


def test_if_match_appends_only_on_the_current_version(agent: httpx.Client) -> None:
    sid = create(agent)["session_id"]
    message = {"role": "user", "content": "hi"}
    ok = agent.post(f"/v1/sessions/{sid}/messages", json=message, headers={"If-Match": '"1"'})
    assert ok.status_code == 201, ok.text
    assert ok.json()["version"] == 2

    stale = agent.post(f"/v1/sessions/{sid}/messages", json=message, headers={"If-Match": '"1"'})
    body = problem(stale, 412)
    assert body["type"].endswith("version-conflict")
    assert body["context"]["expected_version"] == 1
    assert body["context"]["actual_version"] == 2

    also_ok = agent.post(f"/v1/sessions/{sid}/messages", json=message, headers={"If-Match": '"2"'})
    assert also_ok.status_code == 201, also_ok.text
    garbage = agent.post(
        f"/v1/sessions/{sid}/messages", json=message, headers={"If-Match": "yesterday"}
    )
    assert problem(garbage, 400)["code"] == "invalid-precondition"


def test_invalid_transitions_are_409_with_the_current_status(agent: httpx.Client) -> None:
    sid = create(agent)["session_id"]
    resume = agent.post(f"/v1/sessions/{sid}/resume", json={})
    body = problem(resume, 409)
    assert body["type"] == "urn:sessionstore:problem:invalid-transition"
    assert body["context"]["status"] == "active"
    assert body["context"]["session_id"] == sid
    dangling = agent.post(
        f"/v1/sessions/{sid}/messages", json={"role": "tool", "tool_call_id": "c9", "content": "x"}
    )
    assert problem(dangling, 409)["code"] == "transcript-violation"


@pytest.mark.parametrize("kind", ALL_APPENDS)
def test_appending_to_an_unknown_session_is_404(agent: httpx.Client, kind: str) -> None:
    sid = str(uuid.uuid4())
    bodies = {
        "messages": {"role": "user", "content": "x"},
        "turns": {"request_id": "r", "duration_ms": 1},
        "context": {"set": {"a": 1}},
        "interrupt": {"reason": "timeout"},
        "resume": {},
        "end": {"status": "completed"},
    }
    body = problem(agent.post(f"/v1/sessions/{sid}/{kind}", json=bodies[kind]), 404)
    assert body["type"].endswith("session-not-found")
    assert body["context"]["session_id"] == sid


@pytest.mark.parametrize(
    "path",
    ["", "/messages", "/events", "/state?version=1", "/metrics"],
)
def test_reading_an_unknown_session_is_404(agent: httpx.Client, path: str) -> None:
    sid = str(uuid.uuid4())
    body = problem(agent.get(f"/v1/sessions/{sid}{path}"), 404)
    assert body["type"].endswith("session-not-found")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/sessions", {"agent_id": "a"}),  # user_id missing
        ("/v1/sessions", {"user_id": "u", "agent_id": "a", "channel": "fax"}),
        ("/v1/sessions", {"user_id": "u", "agent_id": "a", "policy": {"ttl_seconds": -1}}),
        ("/v1/sessions", {"user_id": "u", "agent_id": "a", "session_id": "not-a-uuid"}),
        ("{sid}/messages", {"role": "robot", "content": "x"}),
        ("{sid}/messages", {"role": "user", "content": 5}),
        ("{sid}/turns", {"request_id": "r", "duration_ms": "slow"}),
        ("{sid}/interrupt", {"reason": "bored"}),
        ("{sid}/end", {"status": "exploded"}),
        ("{sid}/context", {"set": "not an object"}),
    ],
)
def test_invalid_bodies_are_422_and_write_nothing(
    agent: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    created = create(agent)
    sid = created["session_id"]
    url = path.replace("{sid}", f"/v1/sessions/{sid}")
    response = agent.post(url, json=body)
    problem(response, 422)
    history = agent.get(f"/v1/sessions/{sid}/events").json()
    items = history["events"]
    assert len(items) == 1


def test_malformed_json_and_wrong_query_values_are_422(agent: httpx.Client) -> None:
    sid = create(agent)["session_id"]
    broken = agent.post(
        f"/v1/sessions/{sid}/messages",
        content=b'{"role": "user", "content": ',
        headers={"content-type": "application/json"},
    )
    problem(broken, 422)
    problem(agent.get("/v1/sessions", params={"limit": 0}), 422)
    problem(agent.get("/v1/sessions", params={"limit": 100_000}), 422)
    problem(agent.get("/v1/sessions", params={"cursor": "%%%not-a-cursor"}), 422)
    problem(agent.get("/v1/sessions", params={"status": "sleeping"}), 422)
    problem(agent.get(f"/v1/sessions/{sid}/messages", params={"last": 0}), 422)
    problem(agent.get(f"/v1/sessions/{sid}/events", params={"after_version": -1}), 422)
    problem(agent.get("/v1/metrics/agents/bot-1", params={"from": "2026-02-30"}), 422)


def test_limits_content_and_body_size(http_server: Server, agent: httpx.Client) -> None:
    sid = create(agent)["session_id"]
    limit = http_server.settings.max_content_bytes
    too_long = agent.post(
        f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "x" * (limit + 1)}
    )
    body = problem(too_long, 422)
    assert body["code"] == "payload-too-large"
    assert body["context"]["limit"] == limit

    huge = agent.post(
        f"/v1/sessions/{sid}/messages",
        content=b'{"role": "user", "content": "' + b"y" * 8_000_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    problem(huge, 413)
    history = agent.get(f"/v1/sessions/{sid}/events").json()
    items = history["events"]
    assert len(items) == 1


# ---------------------------------------------------------------------------------------------
# Lists, projections


def test_listing_pages_through_filters(agent: httpx.Client) -> None:
    user = f"u-list-{uuid.uuid4().hex[:8]}"
    sids = []
    position = 0
    for _ in range(5):
        created = create(agent, user_id=user, agent_id="bot-list")
        sids.append(created["session_id"])
        position = created["position"]
    ended = append(agent, sids[0], "end", {"status": "failed"})
    position = ended["position"]
    state(agent, sids[0], position)  # the views have caught up with every write above

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"user_id": user, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = agent.get("/v1/sessions", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["session_id"] for item in page["items"])
        assert len(page["items"]) <= 2
        pages += 1
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert sorted(seen) == sorted(sids)
    assert len(seen) == len(set(seen))
    assert pages >= 3

    active = agent.get("/v1/sessions", params={"user_id": user, "status": "active"}).json()
    assert {i["session_id"] for i in active["items"]} == set(sids[1:])
    failed = agent.get("/v1/sessions", params={"user_id": user, "status": "failed"}).json()
    assert [i["session_id"] for i in failed["items"]] == [sids[0]]
    by_agent = agent.get("/v1/sessions", params={"agent_id": "bot-list", "limit": 500}).json()
    assert set(sids) <= {i["session_id"] for i in by_agent["items"]}
    idle = agent.get("/v1/sessions", params={"user_id": user, "idle_for": 3600}).json()
    assert idle["items"] == []


def test_projections_are_listed_and_an_admin_can_rebuild_one(http_server: Server) -> None:
    with http_server.client("admin") as admin, http_server.client("agent") as agent:
        listed = admin.get("/v1/projections")
        assert listed.status_code == 200, listed.text
        names = {p["name"] for p in listed.json()}
        assert {"session_state", "transcript", "metrics"} <= names, names
        for p in listed.json():
            assert p["lag_events"] == p["head"] - p["position"] >= 0
        problem(agent.post("/v1/projections/transcript/rebuild"), 403)
        rebuilt = admin.post("/v1/projections/transcript/rebuild")
        assert rebuilt.status_code == 200, rebuilt.text
        assert rebuilt.json()["projection"] == "transcript"
        assert rebuilt.json()["events_read"] >= 1
        problem(admin.post("/v1/projections/no_such_view/rebuild"), 404)


# ---------------------------------------------------------------------------------------------
# Read-your-writes


def test_min_position_waits_for_the_projector(agent: httpx.Client) -> None:
    sid = create(agent)["session_id"]
    last = None
    for i in range(20):
        last = append(agent, sid, "messages", {"role": "user", "content": f"m{i}"})
    assert last is not None
    # Read immediately after the last write: the view must include it.
    body = state(agent, sid, last["position"]).json()
    assert body["version"] == 21
    assert body["message_count"] == 20


def test_min_position_times_out_with_503_and_retry_after(
    http_server_without_projector: Server,
) -> None:
    with http_server_without_projector.client("agent", timeout=60) as client:
        created = create(client)
        response = client.get(
            f"/v1/sessions/{created['session_id']}",
            params={"min_position": created["position"]},
        )
    body = problem(response, 503)
    assert "retry-after" in response.headers
    assert int(response.headers["retry-after"]) >= 1
    assert str(created["position"]) in str(body)


# ---------------------------------------------------------------------------------------------
# Concurrency


def test_clients_racing_with_if_match_exactly_one_wins_each_version(http_server: Server) -> None:
    clients = [http_server.client("agent") for _ in range(8)]
    try:
        sid = create(clients[0])["session_id"]
        rounds = 6
        version = 1
        barrier = threading.Barrier(len(clients))

        def attempt(i: int, at: int) -> int:
            barrier.wait()
            response = clients[i].post(
                f"/v1/sessions/{sid}/messages",
                json={"role": "user", "content": f"client {i} on {at}"},
                headers={"If-Match": f'"{at}"'},
            )
            if response.status_code == 412:
                assert response.headers["content-type"].startswith(PROBLEM)
            elif response.status_code == 201:
                assert response.json()["version"] == at + 1
            return response.status_code

        with ThreadPoolExecutor(len(clients)) as pool:
            for _ in range(rounds):
                at = version
                statuses = list(pool.map(attempt, range(len(clients)), [at] * len(clients)))
                assert sorted(statuses) == [201] + [412] * (len(clients) - 1), statuses
                version += 1

        events = clients[0].get(f"/v1/sessions/{sid}/events").json()
        items = events["events"]
        assert [e["version"] for e in items] == list(range(1, rounds + 2))
    finally:
        for client in clients:
            client.close()


def test_clients_appending_without_if_match_lose_nothing(http_server: Server) -> None:
    clients = [http_server.client("agent") for _ in range(8)]
    try:
        sid = create(clients[0])["session_id"]
        per_client = 5

        def write(i: int) -> list[int]:
            return [
                append(clients[i], sid, "messages", {"role": "user", "content": f"{i}/{n}"})[
                    "version"
                ]
                for n in range(per_client)
            ]

        with ThreadPoolExecutor(len(clients)) as pool:
            versions = [v for vs in pool.map(write, range(len(clients))) for v in vs]
        assert sorted(versions) == list(range(2, 2 + per_client * len(clients)))
        events = clients[0].get(f"/v1/sessions/{sid}/events", params={"limit": 1000}).json()
        items = events["events"]
        assert len(items) == 1 + per_client * len(clients)
    finally:
        for client in clients:
            client.close()
