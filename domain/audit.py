"""Audit logic without I/O: a session's state as of a version or a time, and what changed.

Both run the one fold (``domain.session.evolve``), so a past state is exactly what the store
would have returned at that point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sessionstore.domain.errors import BeforeCreation, InvalidInput, VersionBeyondStream
from sessionstore.domain.session import Session, evolve
from sessionstore.events.catalogue import SessionEvent


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs between two states. Mapping fields (``metadata``, ``context``)
    are compared key by key, named ``context.<key>``; a missing key is ``None`` on that side."""

    field: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "before": self.before, "after": self.after}


def state_as_of(
    events: Iterable[SessionEvent], *, version: int | None = None, at: datetime | None = None
) -> Session:
    """The state after ``version``, or after the last event that occurred at or before ``at``
    (or after every event when neither is given).

    ``events`` is one session's stream in version order, from version 1. Raises
    ``VersionBeyondStream`` for a version the stream does not reach, ``BeforeCreation`` for a
    time before the session's first event, ``InvalidInput`` for both or a version below 1.
    """
    if version is not None and at is not None:
        raise InvalidInput([{"field": "version", "message": "give a version or a time, not both"}])
    if version is not None and version < 1:
        raise InvalidInput([{"field": "version", "message": f"must be 1 or more, not {version}"}])
    if at is not None and at.tzinfo is None:
        raise InvalidInput([{"field": "at", "message": "needs a time zone (e.g. Z or +00:00)"}])
    state: Session | None = None
    for event in events:
        if at is not None and event.occurred_at > at:
            if state is None:
                raise BeforeCreation(event.session_id, at, event.occurred_at)
            break
        state = evolve(state, event)
        if version is not None and state.version == version:
            break
    if state is None:
        msg = "state_as_of needs the session's events (from version 1); got none"
        raise ValueError(msg)
    if version is not None and state.version < version:
        raise VersionBeyondStream(state.session_id, version, state.version)
    return state


_MAPPINGS = ("metadata", "context")


def diff(before: Session, after: Session) -> list[FieldChange]:
    """The fields of ``after`` that differ from ``before``, in the order Session declares them.

    Values are the states' own (datetimes, enums, tuples of tool calls); the two states should
    be of the same session (a different one shows up as a change of ``session_id``)."""
    changes: list[FieldChange] = []
    for f in fields(Session):
        old, new = getattr(before, f.name), getattr(after, f.name)
        if f.name in _MAPPINGS:
            changes.extend(_mapping_changes(f.name, old, new))
        elif old != new:
            changes.append(FieldChange(f.name, old, new))
    return changes


def _mapping_changes(
    name: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[FieldChange]:
    keys = list(old) + [k for k in new if k not in old]
    return [
        FieldChange(f"{name}.{key}", old.get(key), new.get(key))
        for key in keys
        if key not in old or key not in new or old[key] != new[key]
    ]
