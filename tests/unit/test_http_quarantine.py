"""The HTTP API reports quarantined events (memory://, embedded projector): per view in
``GET /v1/projections``, as ``degraded`` (still 200) in ``/readyz``, and as a Prometheus gauge;
every other session is served as usual."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest

from sessionstore.adapters.settings import load_settings
from tests.poison import RawLog, message, undecodable
from tests.unit.test_http_app import Api, _api


@pytest.fixture
def api() -> Iterator[Api]:
    yield from _api(load_settings(database_url="memory://", http_wait_seconds=5.0), project=True)


def test_a_poisoned_row_degrades_readiness_and_is_counted_per_view(api: Api) -> None:
    assert api.client.get("/readyz").json()["status"] == "ready"
    poisoned = api.create()
    ctx = api.client.app.state.ctx  # type: ignore[attr-defined]
    RawLog(memory=ctx.log).insert(undecodable(message(UUID(poisoned["session_id"]), 2)))
    other = api.create()

    # Reads of other sessions wait for (and get) their events past the poison.
    shown = api.get(f"/v1/sessions/{other['session_id']}/state?min_position={other['position']}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["state"]["version"] == 1

    views = {v["name"]: v for v in api.get("/v1/projections").json()}
    assert {name: v["quarantined"] for name, v in views.items()} == {
        "session_state": 1,
        "transcript": 1,
        "metrics": 1,
        "cleanup": 1,
    }
    assert {v["lag_events"] for v in views.values()} == {0}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["session_state"] == "degraded: 1 quarantined events"
    assert body["checks"]["database"] == "ok"
    assert "session_state 1" in body["reason"]
    assert "sessionstore projections quarantine list" in body["reason"]
    metrics = api.client.get("/metrics").text
    assert 'sessionstore_projection_quarantined_events{projection="transcript"} 1.0' in metrics


def test_healthy_views_are_ready_with_a_zero_gauge(api: Api) -> None:
    created = api.create()
    api.get(f"/v1/sessions/{created['session_id']}?min_position={created['position']}")
    assert api.client.get("/readyz").json() == {
        "status": "ready",
        "checks": {
            "database": "ok",
            "session_state": "ok",
            "transcript": "ok",
            "metrics": "ok",
            "cleanup": "ok",
        },
    }
    assert {v["quarantined"] for v in api.get("/v1/projections").json()} == {0}
    metrics = api.client.get("/metrics").text
    assert 'sessionstore_projection_quarantined_events{projection="metrics"} 0.0' in metrics


def test_a_value_the_database_refused_is_a_422_not_a_retryable_503() -> None:
    from sessionstore.adapters.http.problems import STATUS_OF, TITLES
    from sessionstore.domain.errors import StorageRejected

    # The same request would be refused again: a 503 (with Retry-After) would invite retries.
    assert STATUS_OF[StorageRejected.code] == 422
    assert TITLES[StorageRejected.code] == "Value refused by the database"
