"""The cleanup job: end sessions that idled or lived beyond their policy, through the domain.

Expiring a session is an ordinary ``SessionStore.end(status="expired")``, so it is a
SessionEnded event in the session's history like any other end: auditable, projected, and
subject to the same rules. Two guards make the job safe to run anywhere, any number of times,
from several processes at once:

- ``expected_version`` is the version the cleanup view saw. If the session moved on after the
  view was read (a message arrived, someone else ended it), the end is refused with
  ConcurrencyConflict and the session is *skipped*: its new deadline is the view's to judge.
- the idempotency key ``cleanup:expire:<session id>:<version>`` and a reason that depends only
  on the view row make every run ask for exactly the same append. Of two jobs racing on one
  session, one appends the SessionEnded; the other gets the first result back (``replayed``)
  and counts the session as *already done*.

Sessions past their retention are only reported here; erasing them is a later, audited command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from sessionstore.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidTransition,
    SessionNotFound,
)
from sessionstore.domain.store import SessionStore
from sessionstore.projections.queries import CleanupCandidate, SessionQueries

IDLE_REASON = "idle timeout"
TTL_REASON = "ttl reached"

Outcome = Literal["expired", "skipped", "already_done"]


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    """What happened to one candidate."""

    session_id: UUID
    tenant_id: str
    version: int
    """The version the cleanup view saw."""
    reason: str
    outcome: Outcome
    detail: str = ""
    """Why it was skipped (the error's message)."""
    position: int | None = None
    """Global position of the SessionEnded (appended or replayed)."""


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    now: datetime
    results: tuple[ExpiryResult, ...]
    past_retention: tuple[CleanupCandidate, ...]
    """Ended sessions whose retention has passed: reported only (erasure is not built yet)."""

    @property
    def expired(self) -> int:
        """Sessions this run ended."""
        return self._count("expired")

    @property
    def skipped(self) -> int:
        """Sessions that changed since the view was read (or were ended otherwise)."""
        return self._count("skipped")

    @property
    def already_done(self) -> int:
        """Sessions another run had already expired (the append was replayed)."""
        return self._count("already_done")

    @property
    def last_position(self) -> int:
        """The highest log position this run wrote or was answered with (0: none); wait for it
        to read the views after the job."""
        return max((r.position or 0 for r in self.results), default=0)

    def _count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)


def expiry_reason(candidate: CleanupCandidate) -> str:
    """Why a due session expires: the deadline that passed first (idle or TTL; TTL on a tie).

    It depends on the view row only, never on ``now``: whenever any deadline has passed, the
    earliest one has too. So every run (whatever its clock) asks for the same append, and the
    idempotency key can answer a second run instead of rejecting it as a different request."""
    idle, ttl = candidate.idle_deadline, candidate.expires_at
    if ttl is not None and (idle is None or ttl <= idle):
        return TTL_REASON
    return IDLE_REASON


def idempotency_key(candidate: CleanupCandidate) -> str:
    return f"cleanup:expire:{candidate.session_id}:{candidate.version}"


def expire_idle_sessions(
    store: SessionStore,
    queries: SessionQueries,
    *,
    now: datetime,
    limit: int = 1000,
    tenant_id: str | None = None,
) -> ExpiryReport:
    """End (status ``expired``) up to ``limit`` sessions the cleanup view finds idle beyond
    their idle timeout or past their TTL at ``now``, the longest overdue first."""
    due = queries.cleanup_candidates(now=now, tenant_id=tenant_id, limit=limit)
    candidates: dict[UUID, CleanupCandidate] = {}
    for candidate in sorted((*due.idle, *due.expirable), key=_overdue_since):
        candidates.setdefault(candidate.session_id, candidate)
    results = [_expire(store, c) for c in list(candidates.values())[:limit]]
    return ExpiryReport(now=due.now, results=tuple(results), past_retention=due.past_retention)


def _expire(store: SessionStore, candidate: CleanupCandidate) -> ExpiryResult:
    reason = expiry_reason(candidate)

    def result(outcome: Outcome, detail: str = "", position: int | None = None) -> ExpiryResult:
        return ExpiryResult(
            session_id=candidate.session_id,
            tenant_id=candidate.tenant_id,
            version=candidate.version,
            reason=reason,
            outcome=outcome,
            detail=detail,
            position=position,
        )

    try:
        appended = store.end(
            candidate.session_id,
            status="expired",
            reason=reason,
            expected_version=candidate.version,
            idempotency_key=idempotency_key(candidate),
        )
    except (ConcurrencyConflict, InvalidTransition, SessionNotFound, IdempotencyKeyReused) as e:
        return result("skipped", e.message)
    return result("already_done" if appended.replayed else "expired", position=appended.position)


def _overdue_since(candidate: CleanupCandidate) -> tuple[datetime, str]:
    deadlines = [d for d in (candidate.idle_deadline, candidate.expires_at) if d is not None]
    return min(deadlines), str(candidate.session_id)
