"""Status rows of the separately running processes, and the heartbeat thread that writes them.

``projections run``, ``projections run --source kafka`` and ``relay`` each keep one row in
``process_status`` (migration 0008): their kind, their instance (host:pid), the supervisor's
state (``projections.supervision``), the last error or the reason they stopped, when that state
began, and when the row was last written. ``Heartbeat`` writes it on every change of state and
every ``heartbeat_seconds`` in a thread of its own, so a write that waits for an unreachable
database never delays the loop; the row is deleted on a clean exit and kept (saying "stopped")
when a configuration error ends the process. A row not written for ``STALE_HEARTBEATS``
heartbeats is stale: its process died, hangs, or cannot reach the database.

Times are the database's clock (written and compared there), so processes on hosts whose clocks
disagree are judged alike.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.sql.log import SQLRunner
from sessionstore.domain.ports import EventLog
from sessionstore.projections.supervision import ProcessState, Supervisor

logger = logging.getLogger("sessionstore.processes")

STALE_HEARTBEATS = 3
"""A row not written for this many heartbeats is reported as stale."""
FORGET_SECONDS = 24 * 3600.0
"""Rows of processes gone this long are deleted when another process of the kind starts."""
RUNNER, KAFKA_WORKER, RELAY = "projections", "kafka-worker", "relay"
COMMANDS = {
    RUNNER: "projections run",
    KAFKA_WORKER: "projections run --source kafka",
    RELAY: "relay",
}


def this_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class ProcessRow:
    kind: str
    instance: str
    state: str
    detail: str
    attempts: int
    since: datetime
    updated_at: datetime
    heartbeat_seconds: float
    age_seconds: float
    """Seconds since the row was last written, by the database's clock."""

    @property
    def stale(self) -> bool:
        return self.age_seconds > STALE_HEARTBEATS * self.heartbeat_seconds


def _time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _text_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ProcessTable:
    """The ``process_status`` rows, in the store's database (in this process for memory://)."""

    def __init__(self, db: SQLRunner | None) -> None:
        self._db = db
        self._memory: dict[tuple[str, str], tuple[ProcessState, float, datetime]] = {}
        self._lock = threading.Lock()
        postgres = db is not None and db.placeholder == "%s"
        self._now = "clock_timestamp()" if postgres else "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
        self._age = (
            "extract(epoch FROM clock_timestamp() - updated_at)::float8"
            if postgres
            else "(julianday('now') - julianday(updated_at)) * 86400.0"
        )
        self._postgres = postgres

    def write(self, kind: str, instance: str, state: ProcessState, heartbeat: float) -> None:
        if self._db is None:
            with self._lock:
                self._memory[(kind, instance)] = (state, heartbeat, datetime.now(UTC))
            return
        p = self._db.placeholder
        since: object = state.since if self._postgres else _text_time(state.since)
        self._db._write(
            "INSERT INTO process_status (kind, instance, state, detail, attempts, since, "
            f"heartbeat_seconds, updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, "
            f"{self._now}) ON CONFLICT (kind, instance) DO UPDATE SET state = excluded.state, "
            "detail = excluded.detail, attempts = excluded.attempts, since = excluded.since, "
            "heartbeat_seconds = excluded.heartbeat_seconds, updated_at = excluded.updated_at",
            [kind, instance, state.state, state.detail, state.attempts, since, heartbeat],
        )

    def delete(self, kind: str, instance: str) -> None:
        if self._db is None:
            with self._lock:
                self._memory.pop((kind, instance), None)
            return
        p = self._db.placeholder
        self._db._write(
            f"DELETE FROM process_status WHERE kind = {p} AND instance = {p}", [kind, instance]
        )

    def forget_gone(self, kind: str, older_than: float = FORGET_SECONDS) -> None:
        """Delete the rows of ``kind`` not written for ``older_than`` seconds."""
        if self._db is None:
            return
        p = self._db.placeholder
        self._db._write(
            f"DELETE FROM process_status WHERE kind = {p} AND {self._age} > {p}",
            [kind, older_than],
        )

    def rows(self, kinds: Sequence[str]) -> list[ProcessRow]:
        """The rows of these kinds, by kind and instance."""
        if self._db is None:
            now = datetime.now(UTC)
            with self._lock:
                items = sorted(self._memory.items())
            return [
                ProcessRow(
                    k,
                    i,
                    s.state,
                    s.detail,
                    s.attempts,
                    s.since,
                    at,
                    beat,
                    (now - at).total_seconds(),
                )
                for (k, i), (s, beat, at) in items
                if k in kinds
            ]
        if not kinds:
            return []
        p = self._db.placeholder
        found = self._db._raw(
            "SELECT kind, instance, state, detail, attempts, since, updated_at, "
            f"heartbeat_seconds, {self._age} FROM process_status "
            f"WHERE kind IN ({', '.join(p for _ in kinds)}) ORDER BY kind, instance",
            list(kinds),
        )
        return [
            ProcessRow(
                str(kind),
                str(instance),
                str(state),
                str(detail),
                int(attempts),
                _time(since),
                _time(updated),
                float(beat),
                float(age),
            )
            for kind, instance, state, detail, attempts, since, updated, beat, age in found
        ]


def process_table(settings: Settings, log: EventLog) -> ProcessTable:
    """Status rows in the store's database (in this process for ``memory://``)."""
    if settings.backend == "memory":
        return ProcessTable(None)
    return ProcessTable(cast("SQLRunner", log))


class Heartbeat:
    """Keeps one process's row current (see the module docstring). Use as a context manager
    around the process's work: it deletes the row on a normal exit, and on an exception leaves
    it saying what the supervisor last said (stopped, and why)."""

    def __init__(
        self,
        table: ProcessTable,
        kind: str,
        supervisor: Supervisor,
        *,
        interval: float,
        instance: str | None = None,
    ) -> None:
        self.table, self.kind, self.supervisor = table, kind, supervisor
        self.instance = instance or this_instance()
        self.interval = interval
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sessionstore-heartbeat-{kind}", daemon=True
        )
        supervisor.watch(lambda _state: self._wake.set())

    def __enter__(self) -> Heartbeat:
        try:
            self.table.forget_gone(self.kind)
        except Exception as e:  # noqa: BLE001 - housekeeping must not stop the process
            logger.debug("could not delete old %s rows: %s", self.kind, e)
        self._thread.start()
        return self

    def __exit__(self, kind: object, error: object, _tb: object) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=30)
        try:
            if error is None:
                self.table.delete(self.kind, self.instance)
            else:
                self._write()
        except Exception as e:  # noqa: BLE001 - the process is ending; its logs say why
            logger.debug("could not update the %s row on exit: %s", self.kind, e)

    def _write(self) -> None:
        self.table.write(self.kind, self.instance, self.supervisor.state, self.interval)

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.clear()
            try:
                self._write()
            except Exception as e:  # noqa: BLE001 - the database may be down: try again later
                logger.debug("heartbeat of %s %s not written: %s", self.kind, self.instance, e)
            self._wake.wait(self.interval)
