"""JSON rendering: what ``--json`` prints, for scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from datetime import UTC
from typing import Any

import typer
from pydantic_core import to_jsonable_python

from sessionstore.adapters.storage.chain import Checkpoint
from sessionstore.adapters.storage.processes import COMMANDS, ProcessRow
from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.session import Session
from sessionstore.projections.base import ProjectionStatus, Quarantined
from sessionstore.projections.expiry import ExpiryReport
from sessionstore.projections.quarantine import RetryResult
from sessionstore.projections.queries import CleanupCandidates


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _dataclass_json(value: Any) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in asdict(value).items()}


def session_json(s: Session) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(s, f.name)) for f in fields(s)}


def event_json(recorded: RecordedEvent) -> dict[str, Any]:
    event = recorded.event
    return {
        "position": recorded.position,
        "recorded_at": to_jsonable_python(recorded.recorded_at.astimezone(UTC)),
        "tenant_id": recorded.tenant_id,
        "type": event.topic,
        "class_version": event.class_version,
        **event.model_dump(mode="json"),
    }


def _jsonable(value: object) -> Any:
    # Session holds read-only mappings (MappingProxyType), which pydantic does not serialise.
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return to_jsonable_python(value)


def _status_json(s: ProjectionStatus) -> dict[str, Any]:
    return {
        "name": s.name,
        "generation": s.generation,
        "position": s.cursor.position,
        "tx": s.cursor.tx,
        "head": s.head.position,
        "lag": s.lag_events,
        "feed": s.feed,
        "quarantined": s.quarantined,
    }


def _quarantined_json(q: Quarantined) -> dict[str, Any]:
    return {
        "projection": q.projection,
        "generation": q.generation,
        "event_id": str(q.event_id),
        "session_id": str(q.session_id),
        "version": q.version,
        "position": q.position,
        "tx": q.tx,
        "type": q.topic,
        "error": q.error,
        "held_behind": None if q.held_behind is None else str(q.held_behind),
        "quarantined_at": None if q.quarantined_at is None else _jsonable(q.quarantined_at),
    }


def _retry_json(r: RetryResult) -> dict[str, Any]:
    return {
        "projection": r.projection,
        "generation": r.generation,
        "released": r.released,
        "remaining": r.remaining,
        "failing": [_quarantined_json(q) for q in r.failing],
    }


def _candidates_json(candidates: CleanupCandidates) -> dict[str, Any]:
    return {
        "now": _jsonable(candidates.now),
        "idle": [_dataclass_json(c) for c in candidates.idle],
        "expirable": [_dataclass_json(c) for c in candidates.expirable],
        "past_retention": [_dataclass_json(c) for c in candidates.past_retention],
    }


def _report_json(report: ExpiryReport) -> dict[str, Any]:
    return {
        "now": _jsonable(report.now),
        "expired": report.expired,
        "already_done": report.already_done,
        "skipped": report.skipped,
        "results": [_dataclass_json(r) for r in report.results],
        "past_retention": [_dataclass_json(c) for c in report.past_retention],
    }


def _checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "tx": checkpoint.cursor.tx,
        "position": checkpoint.cursor.position,
        "events": checkpoint.events,
        "digest": checkpoint.digest.hex(),
        "created_at": to_jsonable_python(checkpoint.created_at.astimezone(UTC)),
    }


def process_json(row: ProcessRow) -> dict[str, Any]:
    """A process's status row: ``detail`` is the last error while retrying, the reason when
    stopped; ``stale`` means it was not written for three heartbeats."""
    return {
        "kind": row.kind,
        "command": COMMANDS.get(row.kind, row.kind),
        "instance": row.instance,
        "state": row.state,
        "since": to_jsonable_python(row.since),
        "attempts": row.attempts,
        "detail": row.detail,
        "updated_at": to_jsonable_python(row.updated_at),
        "heartbeat_seconds": row.heartbeat_seconds,
        "stale": row.stale,
    }
