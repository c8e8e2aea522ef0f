"""Tamper evidence: a hash chain per session, and checkpoints chaining the whole log.

Each event's ``hash`` is SHA-256 of the previous event's hash in the same session (32 zero
bytes before version 1) followed by the event's digest: SHA-256 over its stored fields, each
length-prefixed — session id, version, event id, topic, class version, tenant, occurred_at and
the state bytes exactly as stored. Changing any stored byte, deleting an event or swapping two
changes the hashes from that version on, and ``verify`` names the first broken link.

What it proves and what it does not (docs/audit.md says more): the chain shows that rows were
not changed by anything that did not also recompute every later hash of the session; someone
with write access to the database CAN rewrite a whole chain consistently. Checkpoints narrow
that: each records a digest over every event hash in log order up to a position; copied out
of the database (printed, stored elsewhere), they let a later verify prove the log up to there
is the same. Deleting a session's LAST events leaves its chain consistent; only a checkpoint
taken after them detects it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

from sessionstore.domain.ports import LOG_START, LogCursor, StoredRow

GENESIS = bytes(32)
"""The "previous hash" of every session's version 1."""


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def event_digest(
    *,
    session_id: UUID,
    version: int,
    event_id: UUID,
    topic: str,
    class_version: int,
    tenant_id: str,
    occurred_at: datetime,
    state: bytes,
) -> bytes:
    """SHA-256 over the event's stored fields (length-prefixed, so fields cannot run together)."""
    when = occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    parts = (
        session_id.bytes,
        struct.pack(">q", version),
        event_id.bytes,
        topic.encode(),
        struct.pack(">q", class_version),
        tenant_id.encode(),
        when.encode(),
        state,
    )
    return hashlib.sha256(b"".join(_field(p) for p in parts)).digest()


def link(previous: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(previous + digest).digest()


def row_digest(row: StoredRow) -> bytes:
    return event_digest(
        session_id=row.session_id,
        version=row.version,
        event_id=row.event_id,
        topic=row.topic,
        class_version=row.class_version,
        tenant_id=row.tenant_id,
        occurred_at=row.occurred_at,
        state=row.state,
    )


def chain_of(rows: Iterable[StoredRow], previous: bytes = GENESIS) -> bytes:
    """The hash of the last row of a run of consecutive rows, recomputed from their bytes."""
    for row in rows:
        previous = link(previous, row_digest(row))
    return previous


def checkpoint_digest(previous: bytes, hashes: Iterable[bytes]) -> bytes:
    """A checkpoint's digest: the previous checkpoint's digest, then every event hash after it
    up to its position, in log order."""
    h = hashlib.sha256(previous)
    for event_hash in hashes:
        h.update(event_hash)
    return h.digest()


@dataclass(frozen=True, slots=True)
class Break:
    """The first place where the stored log disagrees with its hashes."""

    session_id: UUID | None
    version: int | None
    kind: str
    """hash-mismatch, missing-version, unexpected-version, unsealed-after-sealed, checkpoint"""
    detail: str

    def __str__(self) -> str:
        where = "the log" if self.session_id is None else f"session {self.session_id}"
        at = "" if self.version is None else f" version {self.version}"
        return f"{where}{at}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    sessions: int = 0
    events: int = 0
    unsealed_events: int = 0
    """Events written before hashing existed (no stored hash): checked for continuity only."""
    checkpoints: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_break(self) -> Break | None:
        return self.breaks[0] if self.breaks else None


def verify_session(rows: Sequence[StoredRow], report: VerifyReport) -> bytes | None:
    """Check one session's rows (in version order); add its first break to ``report``.

    Returns the session's last hash when the chain is intact (None if broken)."""
    report.sessions += 1
    previous = GENESIS
    sealed = False
    for expected, row in enumerate(rows, start=1):
        report.events += 1
        if row.version != expected:
            kind = "missing-version" if row.version > expected else "unexpected-version"
            report.breaks.append(
                Break(row.session_id, expected, kind, f"found version {row.version} there")
            )
            return None
        computed = link(previous, row_digest(row))
        if row.hash is None:
            if sealed:
                report.breaks.append(
                    Break(
                        row.session_id,
                        row.version,
                        "unsealed-after-sealed",
                        "the stored hash was removed",
                    )
                )
                return None
            report.unsealed_events += 1
        else:
            sealed = True
            if row.hash != computed:
                report.breaks.append(
                    Break(
                        row.session_id,
                        row.version,
                        "hash-mismatch",
                        "the stored bytes or the order of events changed",
                    )
                )
                return None
        previous = computed
    return previous


class Auditable(Protocol):
    """What the audit needs from an event log (every backend's log provides it)."""

    def stored_rows(
        self, session_id: UUID | None = None, *, after: LogCursor = LOG_START, limit: int = 1000
    ) -> list[StoredRow]: ...

    def checkpoints(self) -> list[Checkpoint]: ...

    def add_checkpoint(self, cursor: LogCursor, events: int, digest: bytes) -> None: ...


def create_checkpoint(log: Auditable) -> Checkpoint | None:
    """Record a checkpoint over every event after the last one (None if there is none new).

    Uses the stored hashes (recomputing only those of rows written before hashing existed);
    run ``verify`` first if the stored hashes themselves are in doubt."""
    existing = log.checkpoints()
    last = existing[-1] if existing else None
    previous = last.digest if last else GENESIS
    cursor = last.cursor if last else LOG_START
    count = last.events if last else 0
    hashes: list[bytes] = []
    legacy: dict[UUID, dict[int, bytes]] = {}
    while page := log.stored_rows(after=cursor, limit=5000):
        for row in page:
            if row.hash is None:
                if row.session_id not in legacy:
                    chained, running = {}, GENESIS
                    for r in log.stored_rows(row.session_id):
                        running = link(running, row_digest(r))
                        chained[r.version] = running
                    legacy[row.session_id] = chained
                hashes.append(legacy[row.session_id][row.version])
            else:
                hashes.append(row.hash)
        cursor = page[-1].cursor
    if not hashes:
        return None
    log.add_checkpoint(cursor, count + len(hashes), checkpoint_digest(previous, hashes))
    return log.checkpoints()[-1]


def verify(log: Auditable, session_id: UUID | None = None) -> VerifyReport:
    """Recompute the chains: of one session, or of every session and every checkpoint."""
    report = VerifyReport()
    if session_id is not None:
        verify_session(log.stored_rows(session_id), report)
        return report
    by_session: dict[UUID, list[StoredRow]] = {}
    in_log_order: list[tuple[LogCursor, UUID, int]] = []
    cursor = LOG_START
    while page := log.stored_rows(after=cursor, limit=5000):
        for row in page:
            by_session.setdefault(row.session_id, []).append(row)
            in_log_order.append((row.cursor, row.session_id, row.version))
        cursor = page[-1].cursor
    hashes: dict[tuple[UUID, int], bytes] = {}
    for sid in sorted(by_session, key=str):
        rows = sorted(by_session[sid], key=lambda r: r.version)
        previous = GENESIS
        if verify_session(rows, report) is None:
            continue
        for row in rows:
            previous = link(previous, row_digest(row))
            hashes[(sid, row.version)] = previous
    verify_checkpoints(in_log_order, hashes, log.checkpoints(), report)
    return report


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    cursor: LogCursor
    events: int
    digest: bytes
    created_at: datetime


def verify_checkpoints(
    in_log_order: Sequence[tuple[LogCursor, UUID, int]],
    hashes: dict[tuple[UUID, int], bytes],
    checkpoints: Sequence[Checkpoint],
    report: VerifyReport,
) -> None:
    previous, done = GENESIS, 0
    for checkpoint in checkpoints:
        report.checkpoints += 1
        covered = [entry for entry in in_log_order[done:] if entry[0] <= checkpoint.cursor]
        if done + len(covered) != checkpoint.events:
            report.breaks.append(
                Break(
                    None,
                    None,
                    "checkpoint",
                    f"checkpoint {checkpoint.id} covered {checkpoint.events} events up to "
                    f"position {checkpoint.cursor.position}; the log now has "
                    f"{done + len(covered)} there (events deleted or added)",
                )
            )
            return
        missing = [(sid, v) for _, sid, v in covered if (sid, v) not in hashes]
        if missing:
            return  # that session's own break is already reported
        digest = checkpoint_digest(previous, (hashes[(sid, v)] for _, sid, v in covered))
        if digest != checkpoint.digest:
            report.breaks.append(
                Break(
                    None,
                    None,
                    "checkpoint",
                    f"checkpoint {checkpoint.id} (position {checkpoint.cursor.position}) "
                    "does not match the events it covered",
                )
            )
            return
        previous, done = digest, done + len(covered)
