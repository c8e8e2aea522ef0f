"""JSON Lines import: every line is checked before anything is written.

An import reads and checks the whole file before it writes anything, then appends each
session's events in one ``append`` (one transaction), keeping event ids, versions and
``occurred_at``, so the stored hashes come out as in the source.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sessionstore.adapters.audit.export import FORMAT, FORMAT_VERSION, Progress
from sessionstore.adapters.audit.history import mapper_of
from sessionstore.adapters.storage.chain import GENESIS, chain_of
from sessionstore.adapters.storage.sql.log import chain_hashes
from sessionstore.domain import contract
from sessionstore.domain.contract import Limits
from sessionstore.domain.errors import (
    ImportRejected,
    StreamVersionTaken,
)
from sessionstore.domain.ports import EventLog
from sessionstore.domain.session import Session, SessionStatus, evolve, replay
from sessionstore.events.catalogue import SessionCreated, SessionEvent
from sessionstore.events.codec import CodecError, EncodedEvent, EventCodec

# Import


@dataclass(frozen=True, slots=True)
class ImportSummary:
    sessions: int
    events: int


@dataclass
class _Pending:
    """One session's validated events, waiting to be written."""

    first_line: int
    tenant_id: str
    state: Session | None
    previous_hash: bytes
    events: list[SessionEvent] = field(default_factory=list)


_REQUIRED = (
    "session_id",
    "version",
    "event_id",
    "type",
    "class_version",
    "occurred_at",
    "tenant_id",
    "payload",
)
_OPTIONAL = ("position", "recorded_at", "hash")


def import_log(
    log: EventLog,
    lines: Iterable[str | bytes],
    *,
    limits: Limits | None = None,
    on_line: Progress | None = None,
    on_written: Progress | None = None,
) -> ImportSummary:
    """Check every line of an export, then write it: nothing is written if any line is bad.

    Every event must satisfy the input contract (``domain.contract``) with ``limits`` (the
    store's, normally from settings), exactly as if it were appended now. Raises
    ``ImportRejected(line, reason)`` at the first bad line. Each session's events are appended
    in one transaction; if the store fails (or someone else writes one of the sessions) half
    way, the sessions before it are written and that one is not.
    """
    pending = _Validator(log, limits or Limits()).check(lines, on_line)
    written = 0
    for sid, session in pending.items():
        try:
            log.append(session.events, tenant_id=session.tenant_id)
        except StreamVersionTaken:
            msg = f"session {sid} was written by someone else during the import"
            raise ImportRejected(session.first_line, msg) from None
        written += len(session.events)
        if on_written:
            on_written(len(session.events))
    return ImportSummary(len(pending), written)


class _Validator:
    def __init__(self, log: EventLog, limits: Limits) -> None:
        self.log = log
        self.limits = limits
        self.codec = EventCodec()
        self.mapper = mapper_of(log)
        self.sessions: dict[UUID, _Pending] = {}
        self.event_ids: set[UUID] = set()

    def check(self, lines: Iterable[str | bytes], on_line: Progress | None) -> dict[UUID, _Pending]:
        number = 0
        trailer: dict[str, Any] | None = None
        for number, raw in enumerate(lines, start=1):
            if trailer is not None:
                raise ImportRejected(number, "a line after the trailer line")
            record = _parse(number, raw)
            if number == 1:
                _check_header(record)
            elif "end" in record:
                trailer = record
                self._check_trailer(number, record)
            else:
                self._check_event(number, record)
            if on_line:
                on_line(1)
        if number == 0:
            raise ImportRejected(1, "the file is empty (no header line)")
        if trailer is None:
            raise ImportRejected(number + 1, "the file ends without its trailer line (cut short?)")
        return self.sessions

    def _check_trailer(self, number: int, record: dict[str, Any]) -> None:
        if record.get("end") != FORMAT:
            raise ImportRejected(number, f"trailer line: 'end' is not {FORMAT!r}")
        events = sum(len(s.events) for s in self.sessions.values())
        if record.get("events") != events or record.get("sessions") != len(self.sessions):
            raise ImportRejected(
                number,
                f"trailer line says {record.get('sessions')} sessions and {record.get('events')} "
                f"events; the file has {len(self.sessions)} and {events} (lines lost?)",
            )

    def _decode(self, number: int, record: dict[str, Any]) -> SessionEvent:
        """The line's event, its fields checked and its payload validated by its class."""

        def reject(reason: str) -> ImportRejected:
            return ImportRejected(number, reason)

        missing = [k for k in _REQUIRED if k not in record]
        if missing:
            raise reject(f"missing {', '.join(missing)}")
        extra = sorted(set(record) - set(_REQUIRED) - set(_OPTIONAL))
        if extra:
            raise reject(f"unknown fields {', '.join(extra)}")
        sid = _uuid(number, record, "session_id")
        event_id = _uuid(number, record, "event_id")
        version, class_version = record["version"], record["class_version"]
        for name, value in (("version", version), ("class_version", class_version)):
            if type(value) is not int or value < 1:
                raise reject(f"{name} is not a whole number of 1 or more: {value!r}")
        occurred_at = _timestamp(number, record, "occurred_at")
        if record.get("recorded_at") is not None:
            _timestamp(number, record, "recorded_at")
        tenant, topic, payload = record["tenant_id"], record["type"], record["payload"]
        if not isinstance(tenant, str) or not tenant:
            raise reject("tenant_id is not a non-empty string")
        if not isinstance(topic, str):
            raise reject("type is not a string")
        if not isinstance(payload, dict):
            raise reject("payload is not a JSON object")
        position = record.get("position")
        if position is not None and (type(position) is not int or position < 1):
            raise reject(f"position is not a whole number of 1 or more: {position!r}")
        tenant_problem = contract.text_problem(tenant)
        if tenant_problem:
            raise reject(f"tenant_id {tenant_problem}")
        try:
            event = self.codec.decode(
                EncodedEvent(sid, version, event_id, occurred_at, topic, class_version, payload)
            )
        except CodecError as e:
            raise reject(str(e)) from None
        problems = contract.event_problems(event, self.limits)
        if problems:
            summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
            raise reject(f"breaks the input contract (docs/input-contract.md): {summary}")
        return event

    def _check_event(self, number: int, record: dict[str, Any]) -> None:
        def reject(reason: str) -> ImportRejected:
            return ImportRejected(number, reason)

        event = self._decode(number, record)
        sid, event_id, version = event.session_id, event.event_id, event.version
        tenant: str = record["tenant_id"]
        if event_id in self.event_ids:
            raise reject(f"event id {event_id} appears twice in the file")
        self.event_ids.add(event_id)
        session = self.sessions.get(sid) or self._start(number, sid, version, tenant)
        state = session.state
        expected = 1 if state is None else state.version + 1
        if version != expected:
            raise reject(f"session {sid}: version {version} out of order (expected {expected})")
        if tenant != session.tenant_id:
            raise reject(f"session {sid} belongs to tenant {session.tenant_id!r}, not {tenant!r}")
        if isinstance(event, SessionCreated) and event.tenant_id != tenant:
            raise reject(f"tenant_id {tenant!r} differs from the payload's {event.tenant_id!r}")
        if state is not None and state.status is SessionStatus.ENDED:
            raise reject(f"session {sid} already ended at version {state.version}")
        try:
            session.state = evolve(state, event)
        except (TypeError, ValueError) as e:
            raise reject(f"session {sid}: {e}") from None
        (computed,) = chain_hashes(session.previous_hash, [self.mapper.encode(event)], tenant)
        stated = record.get("hash")
        if stated is not None and stated != computed.hex():
            raise reject(
                f"session {sid} version {version}: hash does not match the event "
                "(the line or an earlier line of this session was changed)"
            )
        session.previous_hash = computed
        session.events.append(event)

    def _start(self, number: int, sid: UUID, version: int, tenant: str) -> _Pending:
        """A session's first line in the file: it starts the stream or continues the store's."""
        stored = self.log.read_session(sid)
        if version == 1 and stored:
            raise ImportRejected(
                number, f"session {sid} already exists in the store (at version {len(stored)})"
            )
        if version != len(stored) + 1:
            have = f"ends at version {len(stored)}" if stored else "does not have it"
            raise ImportRejected(
                number,
                f"session {sid} starts at version {version} in the file, but the store {have}",
            )
        previous = GENESIS
        if stored:
            rows = self.log.stored_rows(sid)
            previous = rows[-1].hash if rows[-1].hash is not None else chain_of(rows)
            if stored[-1].tenant_id != tenant:
                raise ImportRejected(
                    number, f"session {sid} belongs to tenant {stored[-1].tenant_id!r} in the store"
                )
        pending = _Pending(
            first_line=number,
            tenant_id=tenant,
            state=replay(r.event for r in stored),
            previous_hash=previous,
        )
        self.sessions[sid] = pending
        return pending


def _parse(number: int, raw: str | bytes) -> dict[str, Any]:
    """One line as JSON, strictly: NaN and Infinity are not JSON (Python's parser would take
    them), and integers stay exact (orjson would turn a huge one into a float), so the contract
    sees exactly what the file holds."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise ImportRejected(number, f"not valid UTF-8: {e.reason} at byte {e.start}") from None
    if not text.strip():
        raise ImportRejected(number, "empty line")
    try:
        value = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ImportRejected(number, "not valid JSON: nested too deeply") from None
    except ValueError as e:
        raise ImportRejected(number, f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ImportRejected(number, "not a JSON object")
    return value


def _not_json(constant: str) -> object:
    msg = f"{constant} is not a JSON number"
    raise ValueError(msg)


def _check_header(record: dict[str, Any]) -> None:
    if record.get("format") != FORMAT:
        raise ImportRejected(1, f"not a {FORMAT} file (the first line has no 'format': {FORMAT!r})")
    if record.get("format_version") != FORMAT_VERSION:
        raise ImportRejected(
            1,
            f"format_version {record.get('format_version')!r} is not supported "
            f"(this sessionstore reads {FORMAT_VERSION})",
        )


def _uuid(number: int, record: dict[str, Any], name: str) -> UUID:
    value = record[name]
    try:
        if isinstance(value, str):
            return UUID(value)
    except ValueError:
        pass
    raise ImportRejected(number, f"{name} is not a UUID: {value!r}")


def _timestamp(number: int, record: dict[str, Any], name: str) -> datetime:
    value = record[name]
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ImportRejected(number, f"{name} is not an ISO 8601 time with a zone: {value!r}")
    return parsed
