"""Tenant isolation and roles over HTTP: the matrix, against a real server on both backends.

A key can never read, list, append to or learn the existence of another tenant's session: every
per-session route answers 404 exactly as for a session that does not exist. A reader cannot
append, only an admin operates, and a missing, garbage or revoked key is 401 everywhere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.http_server import ROLES, Server

PROBLEM = "application/problem+json"

APPENDS: dict[str, dict[str, Any]] = {
    "messages": {"role": "user", "content": "hello"},
    "turns": {"request_id": "r1", "duration_ms": 10},
    "context": {"set": {"k": "v"}},
    "interrupt": {"reason": "timeout"},
    "resume": {},
    "end": {"status": "completed"},
}
READS = ("", "/messages", "/events", "/state?version=1", "/metrics")


@dataclass(frozen=True)
class World:
    """Each tenant's session (owned by its agent key), and the log position after both."""

    server: Server
    sessions: tuple[str, str]
    users: tuple[str, str]
    agent_id: str


@pytest.fixture(scope="module")
def world(http_server: Server) -> World:
    agent_id = f"iso-bot-{uuid.uuid4().hex[:6]}"
    sessions, users = [], []
    position = 0
    for tenant in (0, 1):
        user = f"iso-user-{uuid.uuid4().hex[:6]}"
        with http_server.client("agent", tenant) as client:
            response = client.post("/v1/sessions", json={"user_id": user, "agent_id": agent_id})
            assert response.status_code == 201, response.text
            sessions.append(response.json()["session_id"])
            turn = client.post(
                f"/v1/sessions/{sessions[-1]}/turns", json={"request_id": "r0", "duration_ms": 5}
            )
            assert turn.status_code == 201, turn.text
            position = max(position, turn.json()["position"])
            users.append(user)
    with http_server.client("reader", 0) as reader:  # both tenants' writes are in the views now
        view = reader.get(f"/v1/sessions/{sessions[0]}", params={"min_position": position})
        assert view.status_code == 200, view.text
    return World(http_server, (sessions[0], sessions[1]), (users[0], users[1]), agent_id)


def assert_not_found(response: httpx.Response, sid: str) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"].endswith("session-not-found")


def events_of(world: World, tenant: int) -> list[int]:
    with world.server.client("admin", tenant) as admin:
        response = admin.get(f"/v1/sessions/{world.sessions[tenant]}/events")
    assert response.status_code == 200, response.text
    return [e["version"] for e in response.json()["events"]]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path", READS)
def test_no_role_reads_another_tenants_session(world: World, role: str, path: str) -> None:
    own, foreign = world.sessions
    with world.server.client(role, 0) as client:
        mine = client.get(f"/v1/sessions/{own}{path}")
        theirs = client.get(f"/v1/sessions/{foreign}{path}")
        unknown = client.get(f"/v1/sessions/{uuid.uuid4()}{path}")
    assert mine.status_code == 200, mine.text
    assert_not_found(theirs, foreign)
    assert_not_found(unknown, "")
    # Indistinguishable from a session that does not exist: same shape, same title.
    assert theirs.json()["title"] == unknown.json()["title"]
    assert set(theirs.json()) == set(unknown.json())
    assert world.server.tenants[1] not in theirs.text


@pytest.mark.parametrize("role", ["agent", "admin"])
@pytest.mark.parametrize("kind", list(APPENDS))
def test_no_role_appends_to_another_tenants_session(world: World, role: str, kind: str) -> None:
    foreign = world.sessions[1]
    before = events_of(world, 1)
    with world.server.client(role, 0) as client:
        response = client.post(f"/v1/sessions/{foreign}/{kind}", json=APPENDS[kind])
        conditional = client.post(
            f"/v1/sessions/{foreign}/{kind}", json=APPENDS[kind], headers={"If-Match": '"1"'}
        )
    assert_not_found(response, foreign)
    assert_not_found(conditional, foreign)  # not 412: that would confirm the session exists
    assert events_of(world, 1) == before


def test_creating_a_session_with_another_tenants_id_reveals_nothing(world: World) -> None:
    foreign = world.sessions[1]
    with world.server.client("agent", 0) as client:
        response = client.post(
            "/v1/sessions", json={"user_id": "u", "agent_id": "a", "session_id": foreign}
        )
    # The id is taken, so it cannot be created; but the answer must not differ from a
    # conflict inside the tenant in a way that names the other tenant or its data.
    assert response.status_code in (404, 409), response.text
    assert world.server.tenants[1] not in response.text
    assert world.users[1] not in response.text
    assert events_of(world, 1) == [1, 2]


@pytest.mark.parametrize("role", ROLES)
def test_lists_and_metrics_hold_only_the_callers_tenant(world: World, role: str) -> None:
    with world.server.client(role, 0) as client:
        by_agent = client.get("/v1/sessions", params={"agent_id": world.agent_id, "limit": 500})
        by_foreign_user = client.get("/v1/sessions", params={"user_id": world.users[1]})
        everything = client.get("/v1/sessions", params={"limit": 500})
        metrics = client.get(f"/v1/metrics/agents/{world.agent_id}")
    assert by_agent.status_code == 200, by_agent.text
    assert [i["session_id"] for i in by_agent.json()["items"]] == [world.sessions[0]]
    assert by_foreign_user.json()["items"] == []
    assert world.sessions[1] not in everything.text
    assert world.server.tenants[1] not in everything.text
    assert metrics.status_code == 200, metrics.text
    assert metrics.json()["sessions_started"] == 1  # only its own tenant's session
    assert metrics.json()["turns"] == 1


def test_a_reader_reads_but_cannot_append_or_create(world: World) -> None:
    own = world.sessions[0]
    before = events_of(world, 0)
    with world.server.client("reader", 0) as reader:
        assert reader.get(f"/v1/sessions/{own}").status_code == 200
        created = reader.post("/v1/sessions", json={"user_id": "u", "agent_id": "a"})
        appended = [
            reader.post(f"/v1/sessions/{own}/{kind}", json=body) for kind, body in APPENDS.items()
        ]
    for response in [created, *appended]:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["type"].endswith("forbidden")
    assert events_of(world, 0) == before


@pytest.mark.parametrize("role", ["agent", "reader"])
def test_only_an_admin_rebuilds(world: World, role: str) -> None:
    with world.server.client(role, 0) as client:
        response = client.post("/v1/projections/session_state/rebuild")
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith(PROBLEM)


def test_a_readers_foreign_append_is_404_not_403(world: World) -> None:
    """Checking the role before the tenant would be fine too, but 403 must not reveal anything
    either: a reader gets the same answer for a foreign and for an unknown session."""
    with world.server.client("reader", 0) as reader:
        foreign = reader.post(
            f"/v1/sessions/{world.sessions[1]}/messages", json=APPENDS["messages"]
        )
        unknown = reader.post(f"/v1/sessions/{uuid.uuid4()}/messages", json=APPENDS["messages"])
    assert foreign.status_code == unknown.status_code, (foreign.text, unknown.text)
    assert foreign.json()["type"] == unknown.json()["type"]


ROUTES = [
    ("GET", "/v1/sessions", None),
    ("POST", "/v1/sessions", {"user_id": "u", "agent_id": "a"}),
    ("GET", "/v1/sessions/{sid}", None),
    ("GET", "/v1/sessions/{sid}/messages", None),
    ("GET", "/v1/sessions/{sid}/events", None),
    ("GET", "/v1/sessions/{sid}/state?version=1", None),
    ("GET", "/v1/sessions/{sid}/metrics", None),
    ("GET", "/v1/metrics/agents/bot", None),
    ("GET", "/v1/projections", None),
    ("POST", "/v1/projections/session_state/rebuild", None),
    *[("POST", f"/v1/sessions/{{sid}}/{kind}", body) for kind, body in APPENDS.items()],
]


@pytest.mark.parametrize("credentials", ["missing", "garbage", "wrong-secret", "revoked", "basic"])
@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_a_valid_key(
    world: World, credentials: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    server = world.server
    token = server.token("admin", 0)
    headers = {
        "missing": {},
        "garbage": {"Authorization": "Bearer not-a-key"},
        "wrong-secret": {"Authorization": f"Bearer {token[:-4]}AAAA"},
        "revoked": {"Authorization": f"Bearer {server.revoked}"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    }[credentials]
    url = path.replace("{sid}", world.sessions[0])
    with httpx.Client(base_url=server.url, timeout=15) as client:
        response = client.request(method, url, json=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"].endswith("unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_service_endpoints_need_no_key(world: World) -> None:
    with httpx.Client(base_url=world.server.url, timeout=15) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/openapi.json").status_code == 200
