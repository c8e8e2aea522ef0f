"""What the HTTP API says about its embedded projector (memory://): ``/readyz`` is ``degraded``
(still 200) with the projector's state while it retries or after it stopped, unchanged while it
runs; Prometheus has ``sessionstore_process_up`` and the retries counter. The projector's
supervisor is driven directly here; tests/integration/test_outage.py takes a real database away
from a real ``serve``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessionstore.adapters.settings import load_settings
from sessionstore.domain.errors import ProjectionOutdated, StorageError
from sessionstore.projections.supervision import Supervisor
from tests.unit.test_http_app import Api, _api


@pytest.fixture
def api() -> Iterator[Api]:
    # No projector thread: the test plays its supervisor.
    yield from _api(load_settings(database_url="memory://"), project=False)


def projector(api: Api) -> Supervisor:
    ctx = api.client.app.state.ctx  # type: ignore[attr-defined]
    supervisor = Supervisor("embedded projector", report=lambda _line: None)
    ctx.projector = supervisor
    return supervisor


def metric(api: Api, name: str) -> float:
    text = api.client.get("/metrics").text
    line = next(line for line in text.splitlines() if line.startswith(name + "{"))
    return float(line.split()[-1])


def test_a_retrying_projector_degrades_readiness_and_is_counted(api: Api) -> None:
    supervisor = projector(api)
    supervisor.succeeded()
    assert api.client.get("/readyz").json()["status"] == "ready"
    assert "projector" not in api.client.get("/readyz").json()["checks"]
    assert metric(api, "sessionstore_process_up") == 1.0

    supervisor.failed(StorageError("db: database error: connection refused"))
    supervisor.failed(StorageError("db: database error: connection refused"))
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["projector"].startswith("retrying since ")
    assert body["checks"]["projector"].endswith(
        "(2 attempts): db: database error: connection refused"
    )
    assert body["checks"]["database"] == "ok"
    assert "the embedded projector is retrying since" in body["reason"]
    assert metric(api, "sessionstore_process_up") == 0.0
    assert metric(api, "sessionstore_process_retries_total") == 2.0

    supervisor.succeeded()
    assert api.client.get("/readyz").json()["status"] == "ready"
    assert metric(api, "sessionstore_process_up") == 1.0
    assert metric(api, "sessionstore_process_retries_total") == 2.0  # a counter: not reset


def test_a_projector_stopped_by_a_configuration_error_says_why(api: Api) -> None:
    supervisor = projector(api)
    assert supervisor.failed(ProjectionOutdated("metrics")) is None
    body = api.client.get("/readyz").json()
    assert body["status"] == "degraded"
    assert body["checks"]["projector"].startswith("stopped at ")
    assert "sessionstore projections rebuild metrics" in body["checks"]["projector"]
    assert metric(api, "sessionstore_process_up") == 0.0


def test_without_an_embedded_projector_nothing_is_reported_about_it(api: Api) -> None:
    assert "projector" not in api.client.get("/readyz").json()["checks"]
    assert "sessionstore_process_up{" not in api.client.get("/metrics").text
