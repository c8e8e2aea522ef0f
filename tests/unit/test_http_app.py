"""The HTTP API in-process (TestClient over create_app) on memory:// and SQLite: every route,
each error type and status, authentication, roles and tenant isolation."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from sessionstore.adapters.http.app import create_app
from sessionstore.adapters.http.deps import namespaced, parse_if_match
from sessionstore.adapters.http.keys import KeyStore
from sessionstore.adapters.settings import Settings, load_settings

with warnings.catch_warnings():
    # starlette asks for httpx2 instead of httpx; the TestClient works the same with either.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"


@dataclass
class Api:
    client: TestClient
    keys: KeyStore
    tokens: dict[str, str]

    def auth(self, role: str = "agent", tenant: str = "acme") -> dict[str, str]:
        name = f"{tenant}/{role}"
        if name not in self.tokens:
            _info, self.tokens[name] = self.keys.create(tenant, role)
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def create(self, tenant: str = "acme", **body: Any) -> dict[str, Any]:
        payload = {"user_id": "u-1", "agent_id": "bot", **body}
        r = self.client.post("/v1/sessions", json=payload, headers=self.auth(tenant=tenant))
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    def post(
        self, path: str, body: Any = None, *, role: str = "agent", tenant: str = "acme", **h: str
    ) -> Any:
        headers = {**self.auth(role, tenant), **h}
        return self.client.post(path, json=body, headers=headers)

    def get(self, path: str, *, role: str = "reader", tenant: str = "acme") -> Any:
        return self.client.get(path, headers=self.auth(role, tenant))


def _settings(backend: str, request: pytest.FixtureRequest, **overrides: Any) -> Settings:
    if backend == "memory":
        return load_settings(database_url="memory://", **overrides)
    base: Settings = request.getfixturevalue("sqlite_settings")
    return load_settings(database_url=base.database_url, **overrides)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _api(settings: Settings, **kwargs: Any) -> Iterator[Api]:
    app = create_app(settings, **kwargs)
    with TestClient(app) as client:
        yield Api(client, app.state.ctx.keys, {})


@pytest.fixture
def api(backend: str, request: pytest.FixtureRequest) -> Iterator[Api]:
    settings = _settings(backend, request, max_content_bytes=1000, http_wait_seconds=5.0)
    yield from _api(settings, project=True)


@pytest.fixture
def idle_api(backend: str, request: pytest.FixtureRequest) -> Iterator[Api]:
    """No projector: the views never move."""
    settings = _settings(backend, request, http_wait_seconds=0.0, http_max_body_bytes=2000)
    yield from _api(settings, project=False, stall_seconds=0.0)


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:sessionstore:problem:{code}"
    assert body["code"] == code
    assert body["status"] == status
    assert body["detail"]
    return body


# ---------------------------------------------------------------------------------------------
# Appends


def test_create_then_read_your_write_with_etag(api: Api) -> None:
    sid = str(uuid.uuid4())
    r = api.post(
        "/v1/sessions",
        {"user_id": "u-1", "agent_id": "bot", "channel": "voice", "session_id": sid,
         "metadata": {"lang": "en"}, "policy": {"idle_timeout_seconds": 60}},
    )  # fmt: skip
    assert r.status_code == 201
    assert r.json() == {"session_id": sid, "version": 1, "position": r.json()["position"]}
    assert r.headers["location"] == f"/v1/sessions/{sid}"
    assert r.headers["etag"] == '"1"'
    got = api.get(f"/v1/sessions/{sid}?min_position={r.json()['position']}")
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    state = got.json()
    assert (state["tenant_id"], state["channel"], state["status"]) == ("acme", "voice", "active")
    assert state["metadata"] == {"lang": "en"}
    assert state["policy"]["idle_timeout_seconds"] == 60


def test_tenant_comes_from_the_key_never_the_body(api: Api) -> None:
    r = api.post("/v1/sessions", {"user_id": "u", "agent_id": "a", "tenant_id": "globex"})
    body = assert_problem(r, 422, "invalid-input")
    assert any("tenant_id" in e["field"] for e in body["context"]["errors"])


def test_every_append_route_moves_the_session_on(api: Api) -> None:
    sid = api.create()["session_id"]
    steps = [
        ("messages", {"role": "user", "content": "hello"}),
        ("turns", {"request_id": "r-1", "duration_ms": 120.5, "llm_ms": 80}),
        ("context", {"set": {"topic": "billing"}}),
        ("interrupt", {"reason": "disconnect"}),
        ("resume", None),
        ("end", {"status": "completed", "reason": "done"}),
    ]
    for version, (route, body) in enumerate(steps, start=2):
        r = api.post(f"/v1/sessions/{sid}/{route}", body)
        assert r.status_code == 201, (route, r.text)
        assert r.json()["version"] == version
        assert r.headers["etag"] == f'"{version}"'
    last = r.json()["position"]
    state = api.get(f"/v1/sessions/{sid}?min_position={last}").json()
    assert (state["status"], state["end_status"], state["resume_count"]) == (
        "ended",
        "completed",
        1,
    )
    assert state["context"] == {"topic": "billing"}
    after_end = api.post(f"/v1/sessions/{sid}/messages", {"role": "user", "content": "hi?"})
    problem = assert_problem(after_end, 409, "invalid-transition")
    assert problem["context"]["status"] == "ended"
    assert problem["context"]["session_id"] == sid


def test_if_match_guards_appends(api: Api) -> None:
    sid = api.create()["session_id"]
    msg = {"role": "user", "content": "one"}
    assert api.post(f"/v1/sessions/{sid}/messages", msg, **{"If-Match": '"1"'}).status_code == 201
    stale = api.post(f"/v1/sessions/{sid}/messages", msg, **{"If-Match": '"1"'})
    problem = assert_problem(stale, 412, "version-conflict")
    assert problem["context"]["actual_version"] == 2
    assert problem["context"]["expected_version"] == 1
    weak = api.post(f"/v1/sessions/{sid}/messages", msg, **{"If-Match": 'W/"2"'})
    assert_problem(weak, 400, "invalid-precondition")
    bare = api.post(f"/v1/sessions/{sid}/messages", msg, **{"If-Match": "2"})
    assert_problem(bare, 400, "invalid-precondition")
    any_version = api.post(f"/v1/sessions/{sid}/messages", msg, **{"If-Match": "*"})
    assert any_version.status_code == 201
    assert any_version.json()["version"] == 3


def test_parse_if_match_and_namespaced_keys() -> None:
    assert parse_if_match(None) is None
    assert parse_if_match('"12"') == 12
    assert parse_if_match(' "0" ') == 0
    # Tenants "a:b" + key "c" and "a" + key "b:c" must not share a store key.
    assert namespaced("a:b", "c") != namespaced("a", "b:c")
    assert namespaced("acme", None) is None


def test_idempotent_retry_replays_and_a_changed_body_is_refused(api: Api) -> None:
    sid = api.create()["session_id"]
    body = {"role": "user", "content": "pay my bill"}
    first = api.post(f"/v1/sessions/{sid}/messages", body, **{"Idempotency-Key": "k-1"})
    again = api.post(f"/v1/sessions/{sid}/messages", body, **{"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    other = api.post(
        f"/v1/sessions/{sid}/messages",
        {"role": "user", "content": "x"},
        **{"Idempotency-Key": "k-1"},
    )
    problem = assert_problem(other, 422, "idempotency-key-reused")
    assert problem["context"]["idempotency_key"] == "k-1"  # the client's key, not namespaced
    assert "acme" not in problem["detail"]
    history = api.get(f"/v1/sessions/{sid}/events").json()["events"]
    assert [e["type"] for e in history] == ["SessionCreated", "MessageAdded"]


def test_tenants_cannot_collide_on_idempotency_keys(api: Api) -> None:
    body = {"user_id": "u", "agent_id": "a"}
    a = api.post("/v1/sessions", body, tenant="acme", **{"Idempotency-Key": "same"})
    b = api.post("/v1/sessions", body, tenant="globex", **{"Idempotency-Key": "same"})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["session_id"] != b.json()["session_id"]


def test_unknown_and_malformed_sessions(api: Api) -> None:
    missing = str(uuid.uuid4())
    r = api.post(f"/v1/sessions/{missing}/messages", {"role": "user", "content": "hi"})
    assert assert_problem(r, 404, "session-not-found")["context"]["session_id"] == missing
    assert_problem(api.get(f"/v1/sessions/{missing}"), 404, "session-not-found")
    assert_problem(api.get("/v1/sessions/not-a-uuid"), 422, "invalid-input")


def test_an_existing_session_id_is_a_conflict(api: Api) -> None:
    sid = api.create()["session_id"]
    r = api.post("/v1/sessions", {"user_id": "u", "agent_id": "a", "session_id": sid})
    assert assert_problem(r, 409, "session-exists")["context"]["session_id"] == sid


def test_field_validation_and_sizes(api: Api) -> None:
    sid = api.create()["session_id"]
    bad_role = api.post(f"/v1/sessions/{sid}/messages", {"role": "robot", "content": "x"})
    errors = assert_problem(bad_role, 422, "invalid-input")["context"]["errors"]
    assert errors[0]["field"] == "body.role"
    dangling = api.post(f"/v1/sessions/{sid}/messages", {"role": "tool", "content": "x"})
    assert_problem(dangling, 422, "invalid-input")
    orphan = api.post(
        f"/v1/sessions/{sid}/messages", {"role": "tool", "tool_call_id": "c-9", "content": "x"}
    )
    assert_problem(orphan, 409, "transcript-violation")
    big = api.post(f"/v1/sessions/{sid}/messages", {"role": "user", "content": "x" * 1001})
    assert assert_problem(big, 422, "payload-too-large")["context"]["limit"] == 1000
    assert_problem(api.post(f"/v1/sessions/{sid}/interrupt", {}), 422, "invalid-input")
    # A deadline past year 9999 would break the cleanup view for everyone: refused up front.
    forever = {"user_id": "u", "agent_id": "a", "policy": {"retention_days": 10**9}}
    assert_problem(api.post("/v1/sessions", forever), 422, "invalid-input")
    slow = api.post(f"/v1/sessions/{sid}/turns", {"request_id": "r", "duration_ms": 1.7e308})
    assert_problem(slow, 422, "invalid-input")
    not_json = api.client.post(
        f"/v1/sessions/{sid}/messages",
        content=b"{not json",
        headers={**api.auth(), "content-type": "application/json"},
    )
    assert_problem(not_json, 422, "invalid-input")


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_the_input_contract_is_422_naming_the_field_path(api: Api) -> None:
    sid = api.create()["session_id"]
    nul = api.post(f"/v1/sessions/{sid}/messages", {"role": "user", "content": "a\u0000b"})
    errors = assert_problem(nul, 422, "invalid-input")["context"]["errors"]
    assert errors[0]["field"] == "content"
    assert "NUL" in errors[0]["message"]
    deep = api.post("/v1/sessions", {"user_id": "u", "agent_id": "a", "metadata": nested(40)})
    errors = assert_problem(deep, 422, "invalid-input")["context"]["errors"]
    assert "nested 40 levels deep" in errors[0]["message"]
    # Deeper than pydantic or orjson would go: still a clean 422, never a 500.
    deeper = api.post("/v1/sessions", {"user_id": "u", "agent_id": "a", "metadata": nested(300)})
    assert_problem(deeper, 422, "invalid-input")
    nan = api.client.post(
        "/v1/sessions",
        content=b'{"user_id": "u", "agent_id": "a", "metadata": {"x": NaN}}',
        headers={**api.auth(), "content-type": "application/json"},
    )
    assert assert_problem(nan, 422, "invalid-input")["context"]["errors"][0]["field"] in {
        "metadata.x",
        "body",
    }
    tokens = api.post(
        f"/v1/sessions/{sid}/turns", {"request_id": "r", "duration_ms": 1, "input_tokens": 2**62}
    )
    assert_problem(tokens, 422, "invalid-input")
    listed = api.get("/v1/sessions?user_id=u%00")
    assert assert_problem(listed, 422, "invalid-input")["context"]["errors"][0]["field"] == (
        "user_id"
    )
    assert api.get(f"/v1/sessions/{sid}/events").json()["events"][-1]["version"] == 1


def test_oversized_body_is_413(idle_api: Api) -> None:
    r = idle_api.post(
        "/v1/sessions", {"user_id": "u", "agent_id": "a", "metadata": {"x": "y" * 3000}}
    )
    assert assert_problem(r, 413, "body-too-large")["context"]["limit"] == 2000


# ---------------------------------------------------------------------------------------------
# Authentication, roles, tenant isolation


def test_missing_or_invalid_key_is_401_with_www_authenticate(api: Api) -> None:
    missing = api.client.get("/v1/sessions")
    assert_problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = api.client.get("/v1/sessions", headers={"Authorization": "Bearer ssk_0_nope"})
    assert_problem(wrong, 401, "unauthorized")
    assert "invalid_token" in wrong.headers["www-authenticate"]
    basic = api.client.get("/v1/sessions", headers={"Authorization": "Basic dTpw"})
    assert_problem(basic, 401, "unauthorized")


def test_revoked_key_is_refused(api: Api) -> None:
    info, token = api.keys.create("acme", "reader")
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/sessions", headers=headers).status_code == 200
    assert api.keys.revoke(info.key_id)
    assert_problem(api.client.get("/v1/sessions", headers=headers), 401, "unauthorized")


def test_roles(api: Api) -> None:
    sid = api.create()["session_id"]
    by_reader = api.post(
        f"/v1/sessions/{sid}/messages", {"role": "user", "content": "x"}, role="reader"
    )
    assert assert_problem(by_reader, 403, "forbidden")["context"]["role"] == "reader"
    assert_problem(
        api.post("/v1/sessions", {"user_id": "u", "agent_id": "a"}, role="reader"), 403, "forbidden"
    )
    assert api.get(f"/v1/sessions/{sid}/events", role="reader").status_code == 200
    assert_problem(api.post("/v1/projections/metrics/rebuild", role="agent"), 403, "forbidden")
    admin_append = api.post(
        f"/v1/sessions/{sid}/messages", {"role": "user", "content": "x"}, role="admin"
    )
    assert admin_append.status_code == 201


def test_another_tenants_session_does_not_exist_for_a_key(api: Api) -> None:
    created = api.create(tenant="acme")
    sid = created["session_id"]
    api.get(f"/v1/sessions/{sid}?min_position={created['position']}")  # views caught up
    unknown = str(uuid.uuid4())
    paths = ["", "/messages", "/events", "/state", "/metrics"]
    for path in paths:
        theirs = api.get(f"/v1/sessions/{sid}{path}", tenant="globex")
        nobody = api.get(f"/v1/sessions/{unknown}{path}", tenant="globex")
        a = assert_problem(theirs, 404, "session-not-found")
        b = assert_problem(nobody, 404, "session-not-found")
        assert a["detail"].replace(sid, "?") == b["detail"].replace(unknown, "?"), path
    for route in ("messages", "end"):
        body = {"role": "user", "content": "x"} if route == "messages" else None
        r = api.post(f"/v1/sessions/{sid}/{route}", body, tenant="globex", role="admin")
        assert_problem(r, 404, "session-not-found")
    assert api.get("/v1/sessions", tenant="globex").json()["items"] == []
    assert api.get(f"/v1/sessions/{sid}/events").status_code == 200  # still there for acme


# ---------------------------------------------------------------------------------------------
# Queries and audit


def test_listing_with_filters_and_cursor(api: Api) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    last = 0
    for _ in range(3):
        last = api.create(user_id=user)["position"]
    ended = api.create(user_id=user)
    last = api.post(f"/v1/sessions/{ended['session_id']}/end", {"status": "failed"}).json()[
        "position"
    ]
    first = api.get(f"/v1/sessions?user_id={user}&limit=2&min_position={last}").json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    rest = api.get(f"/v1/sessions?user_id={user}&limit=2&cursor={first['next_cursor']}").json()
    assert len(rest["items"]) == 2
    assert rest["next_cursor"] is None
    failed = api.get(f"/v1/sessions?user_id={user}&status=failed").json()["items"]
    assert [s["session_id"] for s in failed] == [ended["session_id"]]
    assert api.get(f"/v1/sessions?user_id={user}&idle_for=3600").json()["items"] == []
    assert_problem(api.get("/v1/sessions?cursor=bogus"), 422, "invalid-input")
    assert_problem(api.get("/v1/sessions?limit=501"), 422, "invalid-input")
    assert_problem(api.get("/v1/sessions?status=sleeping"), 422, "invalid-input")


def test_transcript_window(api: Api) -> None:
    sid = api.create()["session_id"]
    last = 0
    for i in range(5):
        last = api.post(
            f"/v1/sessions/{sid}/messages", {"role": "user", "content": f"m{i}"}
        ).json()["position"]
    r = api.get(f"/v1/sessions/{sid}/messages?last=2&min_position={last}")
    assert [m["content"] for m in r.json()["messages"]] == ["m3", "m4"]
    assert_problem(api.get(f"/v1/sessions/{sid}/messages?last=0"), 422, "invalid-input")


def test_history_pages_and_state_as_of(api: Api) -> None:
    sid = api.create()["session_id"]
    for i in range(3):
        api.post(f"/v1/sessions/{sid}/messages", {"role": "user", "content": f"m{i}"})
    page = api.get(f"/v1/sessions/{sid}/events?limit=2").json()
    assert [e["version"] for e in page["events"]] == [1, 2]
    assert page["next_after_version"] == 2
    rest = api.get(f"/v1/sessions/{sid}/events?after_version=2").json()
    assert [e["version"] for e in rest["events"]] == [3, 4]
    assert rest["events"][0]["payload"]["content"] == "m1"
    v2 = api.get(f"/v1/sessions/{sid}/state?version=2").json()
    assert (v2["as_of_version"], v2["state"]["message_count"]) == (2, 1)
    created_at = page["events"][0]["occurred_at"]
    at = api.client.get(
        f"/v1/sessions/{sid}/state", params={"at": created_at}, headers=api.auth("reader")
    ).json()
    assert at["state"]["version"] == 1
    latest = api.get(f"/v1/sessions/{sid}/state").json()
    assert latest["state"]["version"] == 4
    beyond = api.get(f"/v1/sessions/{sid}/state?version=9")
    assert assert_problem(beyond, 404, "version-beyond-stream")["context"]["last_version"] == 4
    early = api.client.get(
        f"/v1/sessions/{sid}/state",
        params={"at": "2000-01-01T00:00:00Z"},
        headers=api.auth("reader"),
    )
    assert_problem(early, 404, "before-creation")
    naive = api.get(f"/v1/sessions/{sid}/state?at=2030-01-01T00:00:00")
    assert_problem(naive, 422, "invalid-input")


def test_session_and_agent_metrics(api: Api) -> None:
    agent = f"bot-{uuid.uuid4().hex[:8]}"
    sid = api.create(agent_id=agent)["session_id"]
    api.post(f"/v1/sessions/{sid}/turns", {"request_id": "r1", "duration_ms": 100})
    last = api.post(
        f"/v1/sessions/{sid}/turns",
        {"request_id": "r2", "duration_ms": 300, "error": True, "error_type": "timeout"},
    ).json()["position"]
    m = api.get(f"/v1/sessions/{sid}/metrics?min_position={last}").json()
    assert (m["requests"], m["errors"], m["mean_ms"]) == (2, 1, 200.0)
    a = api.get(f"/v1/metrics/agents/{agent}?from=2000-01-01&to=2100-01-01").json()
    assert (a["turns"], a["error_turns"], a["sessions_started"]) == (2, 1, 1)
    other = api.get(f"/v1/metrics/agents/{agent}", tenant="globex").json()
    assert other["turns"] == 0  # another tenant's agent of the same name shares nothing
    assert_problem(
        api.get(f"/v1/metrics/agents/{agent}?from=2020-01-02&to=2020-01-01"), 422, "invalid-input"
    )
    assert_problem(api.get(f"/v1/metrics/agents/{agent}?to=0"), 422, "invalid-input")


# ---------------------------------------------------------------------------------------------
# Read-your-writes bounds, projections, health, metrics


def test_min_position_times_out_with_503_and_retry_after(idle_api: Api) -> None:
    created = idle_api.create()
    r = idle_api.get(f"/v1/sessions/{created['session_id']}?min_position={created['position']}")
    problem = assert_problem(r, 503, "projection-timeout")
    assert r.headers["retry-after"] == "1"
    assert problem["context"]["position"] == created["position"]
    beyond = idle_api.get(f"/v1/sessions?min_position={created['position'] + 1000}")
    assert assert_problem(beyond, 422, "invalid-input")["context"]["errors"][0]["field"] == (
        "min_position"
    )


def test_readyz_fails_when_views_stall(idle_api: Api) -> None:
    assert idle_api.client.get("/healthz").json() == {"status": "ok", "checks": {}}
    assert idle_api.client.get("/readyz").status_code == 200  # nothing to apply yet
    idle_api.create()
    assert idle_api.client.get("/readyz").status_code == 200  # first sight of the lag
    stalled = idle_api.client.get("/readyz")
    assert "session_state" in assert_problem(stalled, 503, "not-ready")["context"]["stalled"]


def test_projection_status_and_rebuild(api: Api) -> None:
    created = api.create()
    api.get(f"/v1/sessions/{created['session_id']}?min_position={created['position']}")
    statuses = api.get("/v1/projections").json()
    assert {s["name"] for s in statuses} == {"session_state", "transcript", "metrics", "cleanup"}
    assert all(s["head"] >= created["position"] for s in statuses)
    assert {s["feed"] for s in statuses} == {"log"}
    before = next(s for s in statuses if s["name"] == "metrics")["generation"]
    rebuilt = api.post("/v1/projections/metrics/rebuild", role="admin")
    assert rebuilt.status_code == 200
    assert rebuilt.json()["generation"] > before
    assert rebuilt.json()["events_read"] >= 1
    assert_problem(
        api.post("/v1/projections/nope/rebuild", role="admin"), 404, "unknown-projection"
    )


def test_prometheus_metrics(api: Api) -> None:
    sid = api.create()["session_id"]
    api.post(
        f"/v1/sessions/{sid}/messages", {"role": "user", "content": "x"}, **{"If-Match": '"7"'}
    )
    text = api.client.get("/metrics").text
    assert 'sessionstore_append_requests_total{command="create",status="201"} 1.0' in text
    assert 'sessionstore_append_conflicts_total{command="add_message"} 1.0' in text
    assert 'sessionstore_append_duration_seconds_count{command="create"} 1.0' in text
    assert 'sessionstore_projection_lag_events{projection="session_state"}' in text
    assert 'route="/v1/sessions/{session_id}/messages",status="412"' in text


# ---------------------------------------------------------------------------------------------
# OpenAPI and HTTP-level errors


def test_openapi_declares_routes_and_problem_responses(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
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
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    append = paths["/v1/sessions/{session_id}/messages"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "404", "409", "412", "413", "422", "503"} <= set(
        append
    )
    assert set(append["412"]["content"]) == {PROBLEM}
    assert "WWW-Authenticate" in append["401"]["headers"]
    assert "ETag" in paths["/v1/sessions/{session_id}"]["get"]["responses"]["200"]["headers"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert api.client.get("/docs").status_code == 200


def test_unknown_route_and_method_are_problems(api: Api) -> None:
    assert_problem(api.get("/v1/nothing-here"), 404, "not-found")
    r = api.client.delete("/v1/sessions", headers=api.auth())
    assert_problem(r, 405, "method-not-allowed")
    assert r.headers["allow"] == "GET, POST"
