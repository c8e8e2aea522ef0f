"""The HTTP API's contract, pinned: every operation in OpenAPI order, with its operation id and
the response statuses it documents. Renaming, removing, adding or reordering a route fails here;
when the API changes on purpose, change this table with it."""

# ruff: noqa: E501 - one operation per line reads better than the wrapped form

from __future__ import annotations

from sessionstore.adapters.http.app import create_app
from sessionstore.adapters.settings import load_settings

CREATE = {200, 201, 400, 401, 403, 409, 413, 422, 503}
APPEND = {200, 201, 400, 401, 403, 404, 409, 412, 413, 422, 503}
READ = {200, 401, 403, 422, 503}
SESSION_READ = {200, 401, 403, 404, 422, 503}

# fmt: off
OPERATIONS: list[tuple[str, str, str, set[int]]] = [
    ("/v1/sessions", "post", "create_session_v1_sessions_post", CREATE),
    ("/v1/sessions", "get", "list_sessions_v1_sessions_get", READ),
    ("/v1/sessions/{session_id}/messages", "post", "add_message_v1_sessions__session_id__messages_post", APPEND),
    ("/v1/sessions/{session_id}/messages", "get", "last_messages_v1_sessions__session_id__messages_get", SESSION_READ),
    ("/v1/sessions/{session_id}/turns", "post", "record_turn_v1_sessions__session_id__turns_post", APPEND),
    ("/v1/sessions/{session_id}/context", "post", "update_context_v1_sessions__session_id__context_post", APPEND),
    ("/v1/sessions/{session_id}/interrupt", "post", "interrupt_v1_sessions__session_id__interrupt_post", APPEND),
    ("/v1/sessions/{session_id}/resume", "post", "resume_v1_sessions__session_id__resume_post", APPEND),
    ("/v1/sessions/{session_id}/end", "post", "end_v1_sessions__session_id__end_post", APPEND),
    ("/v1/sessions/{session_id}", "get", "get_session_v1_sessions__session_id__get", SESSION_READ),
    ("/v1/sessions/{session_id}/metrics", "get", "session_metrics_v1_sessions__session_id__metrics_get", SESSION_READ),
    ("/v1/metrics/agents/{agent_id}", "get", "agent_metrics_v1_metrics_agents__agent_id__get", READ),
    ("/v1/sessions/{session_id}/events", "get", "session_history_v1_sessions__session_id__events_get", SESSION_READ),
    ("/v1/sessions/{session_id}/state", "get", "session_state_as_of_v1_sessions__session_id__state_get", SESSION_READ),
    ("/v1/projections", "get", "projections_status_v1_projections_get", READ),
    ("/v1/projections/{name}/rebuild", "post", "rebuild_projection_v1_projections__name__rebuild_post", {200, 401, 403, 404, 409, 422, 503}),
    ("/healthz", "get", "healthz_healthz_get", {200}),
    ("/readyz", "get", "readyz_readyz_get", {200, 503}),
    ("/metrics", "get", "prometheus_metrics_metrics_get", {200}),
]
# fmt: on


def _operations() -> list[tuple[str, str, str, set[int]]]:
    spec = create_app(load_settings(database_url="memory://")).openapi()
    return [
        (path, method, operation["operationId"], {int(status) for status in operation["responses"]})
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def test_operations_paths_and_ids_in_order() -> None:
    assert [op[:3] for op in _operations()] == [op[:3] for op in OPERATIONS]


def test_each_operation_documents_its_statuses() -> None:
    assert {op[2]: op[3] for op in _operations()} == {op[2]: op[3] for op in OPERATIONS}
