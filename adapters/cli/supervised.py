"""What the long-running commands share (``projections run``, ``projections run --source
kafka``, ``relay``): a supervisor reporting to the console, opening the store with retries at
start, and the process's status row (``adapters.storage.processes``).

A transient failure (the database or the brokers unreachable, a SQLite lock held too long) is
retried with back-off for as long as the process runs, at start as well; a configuration error
(the database does not exist, a login refused, the schema not migrated, views to rebuild) ends
the command with one red line and its exit code (docs/cli.md). ``--once`` forms do not come
here: they fail fast.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from sessionstore.adapters.bootstrap import open_log, open_views
from sessionstore.adapters.settings import Settings
from sessionstore.adapters.storage.processes import Heartbeat, process_table
from sessionstore.domain.ports import EventLog
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.supervision import Backoff, Supervisor


def console_supervisor(name: str, out: Console, settings: Settings) -> Supervisor:
    """A supervisor whose reports (one line per change of state) go to the console."""
    return Supervisor(
        name,
        policy=Backoff(cap=settings.retry_max_seconds),
        report=lambda line: out.print(line, soft_wrap=True),
    )


def _open(settings: Settings) -> tuple[EventLog, ViewStore]:
    log = open_log(settings)
    try:
        views = open_views(settings)
        if settings.backend == "memory":  # no migration made its views: make them now
            for projection in all_projections():
                views.ensure(projection)
    except BaseException:
        log.close()
        raise
    return log, views


@contextmanager
def opened_retrying(
    settings: Settings, supervisor: Supervisor, stop: threading.Event
) -> Iterator[tuple[EventLog, ViewStore] | None]:
    """The log and the view store, once the database answers (None if stopped before);
    closed afterwards. An unreachable database at start is retried like one lost later."""
    opened = supervisor.call(lambda: _open(settings), stop)
    if opened is None:
        yield None
        return
    log, views = opened
    try:
        yield log, views
    finally:
        views.close()
        log.close()


@contextmanager
def heartbeat(
    settings: Settings, log: EventLog, kind: str, supervisor: Supervisor
) -> Iterator[Heartbeat]:
    """This process's status row, written while the block runs (see ``Heartbeat``)."""
    with Heartbeat(
        process_table(settings, log), kind, supervisor, interval=settings.heartbeat_seconds
    ) as beat:
        yield beat
