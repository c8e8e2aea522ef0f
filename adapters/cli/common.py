"""What every command shares: exit codes, option types, opening the store and its views,
error reporting, progress and signals, and parsing durations, days and times."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial
from types import FrameType
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from sessionstore.adapters.bootstrap import build_store, open_log, open_queries, open_views
from sessionstore.adapters.settings import Settings, SettingsError, load_settings
from sessionstore.domain.errors import (
    BrokerUnavailable,
    ProjectionTimeout,
    SessionStoreError,
    StorageError,
)
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import SessionStore
from sessionstore.events.codec import CodecError
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.queries import SessionQueries

# Errors that sessionstore raises on purpose end the command with one red line on stderr and an
# exit code: 1 for a bad request (unknown session, malformed id, unknown projection, ...), 2 for
# invalid settings (typer uses 2 for command-line usage errors too), 3 when the database or the
# Kafka brokers fail or the schema is not ready, or a view did not catch up within a
# read-your-writes wait (the request was fine; the service side is behind, so a retry later may
# succeed); 4 when `audit verify` finds the log disagreeing with its hash chain or a checkpoint.
EXIT_REQUEST = 1
"""The request was wrong: unknown session, malformed id or input, invalid transition."""
EXIT_SETTINGS = 2
"""A SESSIONSTORE_* variable is invalid (typer exits with 2 on usage errors as well)."""
EXIT_STORAGE = 3
"""The database or the Kafka brokers failed or cannot be reached, the schema is not current, a
row is unreadable, or a view did not reach a position within a read-your-writes wait."""
EXIT_TAMPERED = 4
"""``audit verify`` found the stored log disagreeing with its hash chain or a checkpoint."""


SessionIdArg = Annotated[str, typer.Argument(help="The session's id (a UUID).", show_default=False)]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")
]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Only this tenant's rows.", show_default=False)
]


def parse_instant(text: str) -> datetime:
    """ISO 8601 time; without a zone it is UTC (``2026-11-21T06:20``, ``...Z``, ``...+01:00``)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"{text!r} is not an ISO 8601 time like 2026-11-21T06:20:00Z"
        raise typer.BadParameter(msg) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


InstantOption = partial(typer.Option, parser=parse_instant, metavar="TIME", show_default=False)


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``: days, hours, minutes, seconds in that order."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        msg = f"{text!r} is not a duration like 90s, 30m, 2h, 1d or 1h30m"
        raise typer.BadParameter(msg)
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        msg = f"{text!r} is not a date like 2026-01-31"
        raise typer.BadParameter(msg) from None


def _console() -> Console:
    # Made per command, so COLUMNS and NO_COLOR are read when the command runs.
    return Console(highlight=False)


@contextmanager
def _store() -> Iterator[SessionStore]:
    store = build_store(load_settings())
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _opened() -> Iterator[tuple[Settings, EventLog, ViewStore]]:
    """The settings, the event log and the view store, closed afterwards."""
    settings = load_settings()
    log = open_log(settings)
    try:
        views = open_views(settings)
        try:
            if settings.backend == "memory":  # no migration made its views: make them now
                for projection in all_projections():
                    views.ensure(projection)
            yield settings, log, views
        finally:
            views.close()
    finally:
        log.close()


@contextmanager
def _queries() -> Iterator[SessionQueries]:
    with _opened() as (settings, log, views):
        yield open_queries(settings, views, log)


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM set ``stop``: the runner finishes its batch and returns."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _progress_bar(out: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=out,
    )


@contextmanager
def _reported_errors() -> Iterator[None]:
    """Expected errors become one red line on stderr and an exit code, never a traceback."""
    try:
        yield
    except SettingsError as e:
        _fail(str(e), EXIT_SETTINGS)
    except (StorageError, CodecError) as e:
        _fail(str(e), EXIT_STORAGE)
    except (ProjectionTimeout, BrokerUnavailable) as e:
        _fail(e.message, EXIT_STORAGE)
    except SessionStoreError as e:
        _fail(e.message, EXIT_REQUEST)


def _fail(message: str, code: int) -> NoReturn:
    line = Text.assemble(("error: ", "bold red"), (" ".join(message.split()), "red"))
    Console(stderr=True, highlight=False).print(line, soft_wrap=True)
    raise typer.Exit(code)


def _print_migrations(out: Console, settings: Settings, applied: list[str]) -> None:
    where = settings.redacted_url()
    if applied:
        for name in applied:
            out.print(f"[green]applied migration[/] {name}", soft_wrap=True)
        out.print(f"database schema of {where} is now up to date", soft_wrap=True)
    elif settings.backend == "memory":
        out.print(f"database schema is up to date ({where} needs no schema)", soft_wrap=True)
    else:
        out.print(f"database schema of {where} is up to date", soft_wrap=True)


def _configure_logging() -> None:
    """Long-running commands log with timestamps. The drivers' own retry chatter (kafka-python,
    psycopg's pool: a line per reconnection attempt) is left out: the supervisor reports an
    outage once when it starts and once when it ends (docs/decisions.md §23)."""
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
