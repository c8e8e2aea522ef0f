"""The projection runner: one batched code path for catch-up, live processing and rebuilds.

Each step reads one batch of events from the log (after the lowest position of the projections
it drives), lets every projection fold the events it has not applied yet into a ``Batch``, then
commits every batch's rows and every tracking move in one transaction. A crash anywhere leaves
either the whole step applied or none of it; a restart resumes from the tracking positions.
Live mode is the same loop, sleeping on a ``Waiter`` (LISTEN/NOTIFY on PostgreSQL, a timer on
SQLite) when the log has nothing new. A rebuild is the same loop on a fresh generation of one
projection, from position 0, activated once it has caught up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from uuid import UUID

from sessionstore.domain.errors import (
    ProjectionConflict,
    ProjectionFedFromKafka,
    ProjectionOutdated,
    ProjectionTimeout,
    SchemaNotReady,
    StorageError,
    UnknownProjection,
)
from sessionstore.domain.ports import EventLog, LogCursor
from sessionstore.projections.base import (
    Projection,
    ProjectionStatus,
    Tracking,
    ViewStore,
    fingerprint,
    fold,
)

Progress = Callable[[int], None]


class Waiter(Protocol):
    """Blocks until the log may have new events (a notification) or the timeout passes."""

    def wait(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class TimerWaiter:
    """Polling: just wait for the timeout (or until ``stop`` is set)."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop or threading.Event()

    def wait(self, timeout: float) -> None:
        self._stop.wait(timeout)

    def close(self) -> None:
        """Nothing to release."""


class ProjectionRunner:
    """Applies the log to projections' views, exactly once per event."""

    def __init__(
        self,
        log: EventLog,
        store: ViewStore,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        generations: Mapping[str, int] | None = None,
    ) -> None:
        self.log = log
        self.store = store
        self.projections = list(projections)
        self.batch_size = batch_size
        self._pinned = dict(generations or {})
        """Generations to write instead of the active one (a rebuild's new generation)."""
        self._used: dict[str, int] = {}
        self._checked = False

    def _generation(self, projection: Projection) -> int:
        pinned = self._pinned.get(projection.name)
        return pinned if pinned is not None else self.store.active_generation(projection.name)

    def check_tables(self) -> None:
        """Refuse to write into a generation built from other table declarations than ours, or
        into one that Kafka-fed workers write (both would apply the same events)."""
        for projection in self.projections:
            if projection.name in self._pinned:
                continue  # a rebuild's new generation is built from these very declarations
            stored = self.store.fingerprint(projection.name)
            if stored and stored != fingerprint(projection.tables):
                raise ProjectionOutdated(projection.name)
            generation = self.store.active_generation(projection.name)
            if self.store.fed_from_kafka(projection.name, generation):
                raise ProjectionFedFromKafka(projection.name, generation)
        self._checked = True

    def step(self) -> int:
        """Apply one batch of events to every projection; return how many events were read."""
        if not self._checked:
            self.check_tables()
        generations, cursors = self._positions()
        start = min(cursors.values())
        events = self.log.read_log(start, limit=self.batch_size)
        if not events:
            return 0
        end = events[-1].cursor
        writes = []
        moves = []
        for projection in self.projections:
            generation, cursor = generations[projection.name], cursors[projection.name]
            if end <= cursor:
                continue  # this one is ahead of the batch (it was rebuilt recently)

            pending = events if cursor == start else [e for e in events if e.cursor > cursor]
            batch = fold(self.store, projection, generation, pending)
            writes.append((projection, generation, batch))
            moves.append((Tracking(projection.name, generation, cursor), end))
        self.store.commit(writes, moves)
        return len(events)

    def _positions(self) -> tuple[dict[str, int], dict[str, LogCursor]]:
        """Generation and cursor of each projection: one query unless generations are pinned."""
        if self._pinned:
            generations = {p.name: self._generation(p) for p in self.projections}
            return generations, {
                name: self.store.tracking(name, generation)
                for name, generation in generations.items()
            }
        found = self.store.positions([p.name for p in self.projections])
        self._used = {n: g for n, (g, _) in found.items()}
        return dict(self._used), {n: c for n, (_, c) in found.items()}

    def _switched(self) -> bool:
        """Whether a rebuild activated another generation since the last step began."""
        if self._pinned or not self._used:
            return False
        now = self.store.positions(list(self._used))
        return any(now[n][0] != g for n, g in self._used.items())

    def catch_up(
        self, *, progress: Progress | None = None, stop: threading.Event | None = None
    ) -> int:
        """Apply everything the log has now; return the number of events read."""
        total = 0
        while stop is None or not stop.is_set():
            try:
                n = self.step()
            except ProjectionConflict:
                continue  # another runner advanced; re-read the tracking and go on
            except (StorageError, SchemaNotReady):
                # A rebuild that switched generations mid-step dropped the tables this step was
                # using; that is not a failure: start again on the new generation (and check
                # that it was built from our table declarations).
                if self._switched():
                    self._checked = False
                    continue
                raise
            if n == 0:
                break
            total += n
            if progress is not None:
                progress(n)
        return total

    def run(self, stop: threading.Event, waiter: Waiter, *, poll_interval: float = 0.5) -> None:
        """Live: catch up, then wait for news (or ``poll_interval``), until ``stop`` is set."""
        while not stop.is_set():
            if self.catch_up(stop=stop) == 0:
                waiter.wait(poll_interval)

    def status(self) -> list[ProjectionStatus]:
        head = self.log.head()
        out = []
        for projection in self.projections:
            generation = self._generation(projection)
            cursor = self.store.tracking(projection.name, generation)
            out.append(
                ProjectionStatus(
                    name=projection.name,
                    generation=generation,
                    cursor=cursor,
                    head=head,
                    lag_events=self.log.count_after(cursor),
                    feed="kafka"
                    if self.store.fed_from_kafka(projection.name, generation)
                    else "log",
                )
            )
        return out


def rebuild(
    log: EventLog,
    store: ViewStore,
    projections: Projection | Sequence[Projection],
    *,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> int:
    """Rebuild projections from position 0 into new generations (one shared pass over the log
    when several are given) and switch each to its new generation once caught up. Queries keep
    reading the old generations until the switch. Returns the number of events read."""
    chosen = [projections] if not isinstance(projections, Sequence) else list(projections)
    generations = {p.name: store.start_generation(p) for p in chosen}
    runner = ProjectionRunner(log, store, chosen, batch_size=batch_size, generations=generations)
    applied = runner.catch_up(progress=progress)
    # Kafka-fed workers hold the same lock while they apply: an event one of them applied to
    # the old generation after this last catch-up would be lost with the old tables.
    with store.feed_lock():
        for projection in chosen:
            # Apply what arrived since the last read, then switch. Anything appended after this
            # is applied by the live runner (or the next run) from the new generation's position.
            applied += ProjectionRunner(
                log, store, [projection], batch_size=batch_size, generations=generations
            ).catch_up(progress=progress)
            store.activate(projection, generations[projection.name])
    return applied


def wait_for_position(
    log: EventLog,
    store: ViewStore,
    projection: str,
    position: int,
    *,
    timeout: float,
) -> None:
    """Read-your-writes: block until ``projection`` has applied the event at ``position``.

    Log-fed views have then applied every event before it too. Kafka-fed views (which do not
    move their log position) have applied that event's session up to its version.
    Raises ProjectionTimeout after ``timeout`` seconds. Polls with a short, growing interval."""
    target = log.cursor_of(position)
    located: tuple[UUID, int] | None = None
    deadline = time.monotonic() + timeout
    interval = 0.001
    while True:
        generation = store.active_generation(projection)
        cursor = store.tracking(projection, generation)
        if target is None:
            # Not committed yet (or never existed): wait until a position beyond it is applied.
            if cursor.position >= position:
                return
        elif cursor >= target:
            return
        elif store.fed_from_kafka(projection, generation):
            located = located or log.locate(position)
            if located is not None:
                sid, version = located
                applied = store.applied_versions({projection: generation}, [sid])[projection]
                if applied.get(sid, 0) >= version:
                    return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProjectionTimeout(projection, position, cursor.position, timeout)
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, 0.05)


def select(projections: Sequence[Projection], names: Sequence[str]) -> list[Projection]:
    by_name = {p.name: p for p in projections}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UnknownProjection(unknown[0], sorted(by_name))
    return [by_name[n] for n in names] if names else list(projections)
