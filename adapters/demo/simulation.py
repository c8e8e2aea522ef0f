"""The demo: a few agent runtimes hold realistic voice and chat sessions against a SessionStore.

The simulation is planned first and executed second. Each session is a script of timed steps
(what the caller says, which tools the agent calls, how long each stage takes); the steps of all
sessions are then run in order of simulated time, so the global log interleaves the sessions the
way concurrent calls would. The store's clock is the simulated one, anchored so that the last
step happens "now": timestamps, turn latencies and interruption lengths are all consistent.

``--seed`` makes every choice (names, numbers, latencies, pauses, tool call ids) reproducible;
session ids stay random, so running the demo twice on one database adds new sessions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sessionstore.adapters.bootstrap import open_log
from sessionstore.adapters.demo.runtime import Runtime, SimClock, Simulation
from sessionstore.adapters.demo.scenarios import SCENARIOS
from sessionstore.adapters.settings import Settings
from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.session import Session
from sessionstore.domain.store import SessionStore

DEFAULT_SESSIONS = 6
MAX_SESSIONS = 200

# ---------------------------------------------------------------------------------------------
# What the demo returns (the CLI renders it)


@dataclass(frozen=True, slots=True)
class DemoSession:
    """One simulated session: what it was meant to show, and its state read back from the log."""

    scenario: str
    state: Session


@dataclass(frozen=True, slots=True)
class DemoSummary:
    seed: int
    sessions: tuple[DemoSession, ...]
    highlight: DemoSession
    """The session with an interruption (and resume), whose full history is shown."""
    history: tuple[RecordedEvent, ...]
    notes: tuple[str, ...]
    """Notable things the runtimes did: aborted tool calls, replayed retries, conflicts."""
    started_at: datetime
    finished_at: datetime

    @property
    def events_appended(self) -> int:
        return sum(s.state.version for s in self.sessions)


# ---------------------------------------------------------------------------------------------
# Running it


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 1_000_000)


def simulate(
    store_for: Callable[[Callable[[], datetime]], SessionStore],
    *,
    sessions: int = DEFAULT_SESSIONS,
    seed: int,
    now: datetime | None = None,
) -> DemoSummary:
    """Plan ``sessions`` sessions, then run them on the store ``store_for(clock)`` returns.

    The simulated traffic ends at ``now`` (default: the real current time).
    """
    if not 1 <= sessions <= MAX_SESSIONS:
        msg = f"sessions must be between 1 and {MAX_SESSIONS}, got {sessions}"
        raise ValueError(msg)
    sim = Simulation(seed)
    planned: list[tuple[str, Runtime]] = []
    start = 0.0
    for index in range(sessions):
        planned.append(SCENARIOS[index % len(SCENARIOS)](sim, index, start))
        start += sim.rng.uniform(4, 25)  # calls and chats arrive a few seconds apart
    sim.steps.sort()
    span = sim.steps[-1].at
    finished_at = (now or datetime.now(UTC)).astimezone(UTC)
    started_at = finished_at - timedelta(seconds=span)
    clock = SimClock(started_at)
    store = store_for(clock)
    sim.store = store
    try:
        for step in sim.steps:
            clock.offset = step.at
            step.run()
        results = tuple(DemoSession(scenario, store.get(r.session_id)) for scenario, r in planned)
        highlight = next(
            (s for s in results if s.state.interrupt_count and s.state.resume_count), results[0]
        )
        history = tuple(store.history(highlight.state.session_id))
    finally:
        store.close()
    return DemoSummary(
        seed=seed,
        sessions=results,
        highlight=highlight,
        history=history,
        notes=tuple(sim.notes),
        started_at=started_at,
        finished_at=finished_at,
    )


def run_demo(
    settings: Settings, *, sessions: int = DEFAULT_SESSIONS, seed: int | None = None
) -> DemoSummary:
    """Run the demo on the configured backend, whose schema must already be migrated."""

    def store_for(clock: Callable[[], datetime]) -> SessionStore:
        # Same wiring as bootstrap.build_store, plus the simulated clock.
        return SessionStore(
            open_log(settings), limits=settings.limits, clock=clock, cache_size=settings.cache_size
        )

    return simulate(store_for, sessions=sessions, seed=new_seed() if seed is None else seed)
