"""Wake-ups for live projection runners: NOTIFY after appends, LISTEN in runners.

The NOTIFY is deliberately NOT part of the append statement: PostgreSQL serialises the commits
of all transactions that NOTIFY (measured here: 8 writers fell from ~7.7k to ~5.2k appends/s),
which would undo the lock-free append path. Instead each writing process has one background
thread that sends a NOTIFY on its own connection after appends, coalescing bursts: at most one
every ``MIN_INTERVAL`` seconds, so a busy writer adds ~100 tiny transactions a second, not one
per append. A lost or late notification only costs latency: runners also poll on a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import psycopg
from psycopg import sql

from sessionstore.adapters.settings import Settings

log = logging.getLogger(__name__)


def channel_for(settings: Settings) -> str:
    """One channel per schema, so stores in different schemas do not wake each other."""
    return f"sessionstore_{settings.database_schema}"


def _connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        settings.database_url,
        autocommit=True,
        connect_timeout=max(1, int(settings.connect_timeout)),
    )


class PostgresNotifier:
    """Sends ``NOTIFY <channel>`` soon after ``poke()``; never blocks the caller."""

    MIN_INTERVAL = 0.01

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._notify = sql.SQL("NOTIFY {}").format(sql.Identifier(channel_for(settings)))
        self._pending = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def poke(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._closed.is_set():
                    self._thread = threading.Thread(
                        target=self._loop, name="sessionstore-notifier", daemon=True
                    )
                    self._thread.start()
        self._pending.set()

    def close(self) -> None:
        self._closed.set()
        self._pending.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        backoff = 0.1
        while True:
            self._pending.wait()
            if self._closed.is_set():
                break
            self._pending.clear()
            try:
                if conn is None or conn.closed:
                    conn = _connect(self._settings)
                conn.execute(self._notify)
                backoff = 0.1
                # Appends during this pause are announced by the next NOTIFY, together.
                self._closed.wait(self.MIN_INTERVAL)
            except psycopg.Error as e:
                if conn is not None:
                    conn.close()
                # A connection the server closed (a restart) is replaced at once, silently; a
                # failure to connect is reported once per streak (runners poll meanwhile).
                if conn is None and backoff == 0.1:
                    log.warning("could not send NOTIFY (runners fall back to polling): %s", e)
                conn = None
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                self._pending.set()  # try again: appends happened that nobody announced
        if conn is not None:
            conn.close()


class PostgresWaiter:
    """Blocks a live runner until a NOTIFY arrives on the channel or the timeout passes."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self._settings = settings
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel_for(settings)))
        self._stop = stop or threading.Event()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._failing = False

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            if self._conn is None or self._conn.closed:
                self._conn = _connect(self._settings)
                self._conn.execute(self._listen)
                self._failing = False
                return  # events may have been appended while we were not listening: look now
            # Wake at least every 0.2 s so a stop request is noticed promptly.
            while not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                for _ in self._conn.notifies(timeout=min(remaining, 0.2), stop_after=1):
                    return
        except psycopg.Error as e:
            # Once per failure streak, and only at info: a database that is down is reported
            # by the runner's supervisor; this only costs latency (the runner polls).
            if not self._failing:
                log.info(
                    "LISTEN connection lost (polling until it is back): %s",
                    " ".join(str(e).split()),
                )
            self._failing = True
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
            self._conn = None
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
