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
    StorageRejected,
    UndecodableEvent,
    UnknownProjection,
)
from sessionstore.domain.ports import EventLog, LogCursor
from sessionstore.projections.base import (
    Projection,
    ProjectionStatus,
    Tracking,
    ViewStore,
    fingerprint,
)
from sessionstore.projections.containment import (
    Containment,
    Item,
    Prepared,
    Unattributable,
    extra,
    session_of,
)
from sessionstore.projections.supervision import Supervisor

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


class _Unit:
    """One projection's share of a step: its pending items and where its tracking row is."""

    def __init__(self, containment: Containment, tracking: Tracking, items: Sequence[Item]) -> None:
        self.containment, self.tracking, self.items = containment, tracking, items

    @property
    def projection(self) -> Projection:
        return self.containment.projection

    @property
    def generation(self) -> int:
        return self.tracking.generation

    def commit(self, prepared: Prepared) -> None:
        """Commit part of the share alone, moving the tracking row to its last item."""
        to = prepared.items[-1].cursor
        writes = (
            [] if prepared.batch is None else [(self.projection, self.generation, prepared.batch)]
        )
        self.containment.store.commit(writes, [(self.tracking, to)], **extra(prepared.quarantine))
        self.tracking = self.tracking.moved(to)


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
        self.contained = 0
        """Quarantine rows this runner has written (events it could not apply, and events of
        the sessions those hold)."""

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
        """Apply one batch of events to every projection; return how many events were read.

        An event a projection cannot apply is quarantined in that projection and its session
        held there; every other session and projection goes on (``projections/containment``).
        """
        if not self._checked:
            self.check_tables()
        trackings = self._positions()
        start = min(t.cursor for t in trackings.values())
        items: Sequence[Item]
        try:
            items = self.log.read_log(start, limit=self.batch_size)
        except UndecodableEvent as e:
            items = [*e.decoded, e]  # the rows before it as usual; it is quarantined
        if not items:
            return 0
        end = items[-1].cursor
        behind = {n: t for n, t in trackings.items() if t.cursor < end}
        held = self._held(behind, items)
        units = []
        for projection in self.projections:
            tracking = behind.get(projection.name)
            if tracking is None:
                continue  # this one is ahead of the batch (it was rebuilt recently)
            pending = (
                items
                if tracking.cursor == start
                else [i for i in items if i.cursor > tracking.cursor]
            )
            containment = Containment(
                self.store, projection, tracking.generation, held.get(projection.name, {})
            )
            units.append(_Unit(containment, tracking, pending))
        self._commit(units, end)
        return len(items)

    def _held(
        self, trackings: Mapping[str, Tracking], items: Sequence[Item]
    ) -> dict[str, dict[UUID, UUID]]:
        """The batch's sessions each projection holds (one read, and none at all when no
        projection's generation holds anything: the healthy case costs no round trip)."""
        holding = {n: t.generation for n, t in trackings.items() if t.holds}
        if not holding:
            return {}
        return self.store.held(holding, list(dict.fromkeys(session_of(i) for i in items)))

    def _commit(self, units: list[_Unit], end: LogCursor) -> None:
        """Every projection's share in one transaction; on a refused value (or a failure that
        names no event), each share on its own, split until the culprit is alone."""
        ready: list[tuple[_Unit, Prepared]] = []
        alone: list[_Unit] = []
        for unit in units:
            try:
                ready.append((unit, unit.containment.prepare(unit.items)))
            except Unattributable:
                alone.append(unit)
        try:
            if ready:
                self.store.commit(
                    [
                        (u.projection, u.generation, p.batch)
                        for u, p in ready
                        if p.batch is not None
                    ],
                    [(u.tracking, end) for u, _ in ready],
                    **extra(row for _, p in ready for row in p.quarantine),
                )
        except StorageRejected:
            alone = units  # this batch only: one projection at a time, split as needed
        else:
            for unit, prepared in ready:
                unit.containment.accept(prepared)
                self.contained += len(prepared.quarantine)
        for unit in alone:
            before = unit.containment.contained
            unit.containment.apply_alone(unit.items, unit.commit)
            self.contained += unit.containment.contained - before

    def _positions(self) -> dict[str, Tracking]:
        """The tracking row of each projection: one query unless generations are pinned."""
        if self._pinned:
            return {
                p.name: self.store.tracking_of(p.name, self._generation(p))
                for p in self.projections
            }
        found = self.store.positions([p.name for p in self.projections])
        self._used = {n: t.generation for n, t in found.items()}
        return found

    def _switched(self) -> bool:
        """Whether a rebuild activated another generation since the last step began."""
        if self._pinned or not self._used:
            return False
        now = self.store.positions(list(self._used))
        return any(now[n].generation != g for n, g in self._used.items())

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

    def run(
        self,
        stop: threading.Event,
        waiter: Waiter,
        *,
        poll_interval: float = 0.5,
        supervisor: Supervisor | None = None,
    ) -> None:
        """Live: catch up, then wait for news (or ``poll_interval``), until ``stop`` is set.

        With a ``supervisor``, transient failures (the database) are retried with its back-off
        and every completed catch-up counts as a success (it read the database); without one
        they propagate. Configuration errors always propagate."""

        def step() -> bool:
            if self.catch_up(stop=stop) == 0:
                waiter.wait(poll_interval)
            return True

        if supervisor is not None:
            supervisor.loop(step, stop)
            return
        while not stop.is_set():
            step()

    def status(self) -> list[ProjectionStatus]:
        head = self.log.head()
        quarantined = self.store.quarantine_counts([p.name for p in self.projections])
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
                    quarantined=quarantined[projection.name],
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
