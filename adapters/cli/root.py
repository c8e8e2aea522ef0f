"""The ``sessionstore`` command line: typer wiring and rich rendering; the work happens elsewhere.

Every command reads its settings when it runs (nothing connects at import time). Errors that
sessionstore raises on purpose end the command with one red line on stderr and an exit code:
1 for a bad request (unknown session, malformed id, unknown projection, ...), 2 for invalid
settings (typer uses 2 for command-line usage errors too), 3 when the database or the Kafka
brokers fail or the schema is not ready, or a view did not catch up within a read-your-writes
wait (the request was fine; the service side is behind, so a retry later may succeed); 4 when
`audit verify` finds the log disagreeing with its hash chain or a checkpoint.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn, Protocol, cast

import typer
from pydantic_core import to_jsonable_python
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from sessionstore.adapters import audit
from sessionstore.adapters.bootstrap import (
    build_store,
    migrate,
    open_log,
    open_queries,
    open_views,
    open_waiter,
)
from sessionstore.adapters.demo import DEFAULT_SESSIONS, MAX_SESSIONS, DemoSummary, run_demo
from sessionstore.adapters.http.keys import KeyStore
from sessionstore.adapters.settings import Settings, SettingsError, load_settings
from sessionstore.adapters.storage.chain import Auditable, Checkpoint, create_checkpoint, verify
from sessionstore.domain.audit import diff, state_as_of
from sessionstore.domain.errors import (
    BrokerUnavailable,
    ProjectionTimeout,
    SessionNotFound,
    SessionStoreError,
    StorageError,
)
from sessionstore.domain.ports import LOG_START, EventLog, RecordedEvent
from sessionstore.domain.session import Session, SessionStatus
from sessionstore.domain.store import SessionStore, parse_session_id, utc_now
from sessionstore.events.catalogue import (
    ContextUpdated,
    EndStatus,
    MessageAdded,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionResumed,
    TurnRecorded,
)
from sessionstore.events.codec import CodecError
from sessionstore.projections import all_projections
from sessionstore.projections.base import Projection, ProjectionStatus, ViewStore
from sessionstore.projections.expiry import ExpiryReport, expire_idle_sessions
from sessionstore.projections.queries import (
    MAX_PAGE_SIZE,
    AgentMetrics,
    CleanupCandidate,
    CleanupCandidates,
    SessionMetrics,
    SessionPage,
    SessionQueries,
    StageTimes,
    TranscriptEntry,
)
from sessionstore.projections.runner import ProjectionRunner, rebuild, select
from sessionstore.projections.tables import SESSION_CLEANUP

EXIT_REQUEST = 1
"""The request was wrong: unknown session, malformed id or input, invalid transition."""
EXIT_SETTINGS = 2
"""A SESSIONSTORE_* variable is invalid (typer exits with 2 on usage errors as well)."""
EXIT_STORAGE = 3
"""The database or the Kafka brokers failed or cannot be reached, the schema is not current, a
row is unreadable, or a view did not reach a position within a read-your-writes wait."""

app = typer.Typer(
    name="sessionstore",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals could hold the database password
)
session_app = typer.Typer(
    help="Read one session: its current state, its event history or its messages.",
    no_args_is_help=True,
)
sessions_app = typer.Typer(help="Find sessions in the session state view.", no_args_is_help=True)
metrics_app = typer.Typer(
    help="Turn metrics from the metrics view: per session, per agent.", no_args_is_help=True
)
projections_app = typer.Typer(
    help="The views queries read: their status and lag, run them, rebuild them.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="Database schema: apply the versioned migrations.", no_args_is_help=True)
app.add_typer(session_app, name="session")
app.add_typer(sessions_app, name="sessions")
app.add_typer(metrics_app, name="metrics")
app.add_typer(projections_app, name="projections")
app.add_typer(db_app, name="db")

SessionIdArg = Annotated[str, typer.Argument(help="The session's id (a UUID).", show_default=False)]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")
]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Only this tenant's rows.", show_default=False)
]


class StatusChoice(StrEnum):
    """What ``sessions list --status`` accepts: a session status or an end status."""

    ACTIVE = "active"
    INTERRUPTED = "interrupted"
    ENDED = "ended"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    ABANDONED = "abandoned"


def main() -> None:
    """Console script entry point (``sessionstore``)."""
    app()


# ---------------------------------------------------------------------------------------------
# Commands


def _version(show: bool) -> None:
    if show:
        try:
            typer.echo(f"sessionstore {version('sessionstore')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("sessionstore (not installed)")
        raise typer.Exit


@app.callback()
def _root(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Event-sourced session store for conversational AI agents (chat and voice bots).

    Configure with SESSIONSTORE_* environment variables; the default database is the SQLite
    file sessionstore.db in the working directory.
    """


@app.command()
def demo(
    sessions: Annotated[
        int,
        typer.Option(
            "--sessions",
            "-n",
            min=1,
            max=MAX_SESSIONS,
            help="How many sessions to simulate (the first four end with every status).",
        ),
    ] = DEFAULT_SESSIONS,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed for every random choice, to reproduce a run (random if absent)."),
    ] = None,
) -> None:
    """Simulate agents holding voice and chat sessions, then show what the store recorded.

    Applies the schema migrations first, so this one command is enough on a fresh database.
    """
    out = _console()
    with _reported_errors():
        settings = load_settings()
        _print_migrations(out, settings, migrate(settings))
        summary = run_demo(settings, sessions=sessions, seed=seed)
        metrics = demo_views(settings, summary)
    render_demo(out, summary, settings)
    if metrics:
        out.print()
        out.print(demo_metrics_table(metrics))


def demo_views(settings: Settings, summary: DemoSummary) -> list[AgentMetrics]:
    """Catch the projections up with the log and read each demo agent's metrics from the views
    (what a dashboard would show). memory:// keeps no log between opens, so it has none."""
    if settings.backend == "memory":
        return []
    log, views = open_log(settings), open_views(settings)
    try:
        ProjectionRunner(log, views, all_projections()).catch_up()
        queries = open_queries(settings, views, log)
        agents = sorted({s.state.agent_id for s in summary.sessions})
        first, last = summary.started_at.date(), summary.finished_at.date()
        return [queries.agent_metrics(a, from_day=first, to_day=last) for a in agents]
    finally:
        views.close()
        log.close()


def demo_metrics_table(metrics: Sequence[AgentMetrics]) -> Table:
    table = Table(
        title="Per-agent metrics from the views (every run in this database, these UTC days; "
        "turn latency percentiles)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("agent")
    for header in ("sessions", "ended ok/fail/exp/ab", "turns", "errors", "p50", "p95", "p99"):
        table.add_column(header, justify="right")
    for m in metrics:
        ended = "/".join(
            str(n)
            for n in (
                m.sessions_completed,
                m.sessions_failed,
                m.sessions_expired,
                m.sessions_abandoned,
            )
        )
        errors = "-" if m.error_rate is None else f"{m.error_rate:.0%}"
        table.add_row(
            m.agent_id, str(m.sessions_started), ended, str(m.turns), errors,
            _ms(m.p50_ms), _ms(m.p95_ms), _ms(m.p99_ms),
        )  # fmt: skip
    return table


@session_app.command("show")
def session_show(session_id: SessionIdArg, as_json: JsonOption = False) -> None:
    """Show a session's current state (the fold of its events)."""
    with _reported_errors(), _store() as store:
        state = store.get(session_id)
    if as_json:
        typer.echo(json.dumps(session_json(state), indent=2, ensure_ascii=False))
    else:
        _console().print(session_table(state))


@session_app.command("events")
def session_events(
    session_id: SessionIdArg,
    after: Annotated[
        int, typer.Option("--after", min=0, help="Only events after this version.")
    ] = 0,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many events.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a session's events in version order, with their global log positions."""
    with _reported_errors(), _store() as store:
        history = store.history(session_id, after_version=after, limit=limit)
    if as_json:
        typer.echo(json.dumps([event_json(r) for r in history], indent=2, ensure_ascii=False))
    else:
        _console().print(events_table(history, title=f"Session {session_id}"))


@session_app.command("messages")
def session_messages(
    session_id: SessionIdArg,
    last: Annotated[
        int | None,
        typer.Option(
            "--last", min=1, max=10_000, help="Only the last N messages.", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a session's transcript (from the transcript view), oldest first."""
    with _reported_errors(), _queries() as queries:
        entries = (
            queries.transcript(session_id)
            if last is None
            else queries.last_messages(session_id, last)
        )
    if as_json:
        _print_json([_dataclass_json(entry) for entry in entries])
        return
    what = "messages" if last is None else f"last {len(entries)} messages"
    _console().print(transcript_table(entries, title=f"Session {session_id}: {what}"))


@sessions_app.command("list")
def sessions_list(
    *,
    status: Annotated[
        StatusChoice | None,
        typer.Option(
            "--status",
            help="A status (active, interrupted, ended) or an end status.",
            show_default=False,
        ),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's sessions.", show_default=False)
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="Only this agent's sessions.", show_default=False),
    ] = None,
    idle_for: Annotated[
        timedelta | None,
        typer.Option(
            "--idle-for",
            parser=parse_duration,
            metavar="DURATION",
            help="Only sessions without activity for at least this long: 90s, 30m, 2h, 1d, 1h30m.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_PAGE_SIZE, help="Sessions per page.")
    ] = 50,
    cursor: Annotated[
        str | None,
        typer.Option("--cursor", help="Where the previous page ended.", show_default=False),
    ] = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """List sessions, oldest first, a page at a time (from the session state view)."""
    with _reported_errors(), _queries() as queries:
        page = queries.list_sessions(
            tenant_id=tenant,
            status=None if status is None else status.value,
            user_id=user,
            agent_id=agent,
            idle_for=idle_for,
            limit=limit,
            cursor=cursor,
        )
    if as_json:
        _print_json(
            {
                "items": [_dataclass_json(item) for item in page.items],
                "next_cursor": page.next_cursor,
            }
        )
        return
    out = _console()
    out.print(session_list_table(page, width=out.width))
    if page.next_cursor is not None:
        out.print(f"more: add --cursor {page.next_cursor}", soft_wrap=True)


@metrics_app.command("session")
def metrics_session(session_id: SessionIdArg, as_json: JsonOption = False) -> None:
    """Show one session's turn metrics: requests, errors, times per stage, tokens."""
    with _reported_errors(), _queries() as queries:
        metrics = queries.session_metrics(session_id)
    if as_json:
        _print_json(_dataclass_json(metrics))
    else:
        _console().print(session_metrics_table(metrics))


@metrics_app.command("agent")
def metrics_agent(
    agent_id: Annotated[str, typer.Argument(help="The agent's id.", show_default=False)],
    from_day: Annotated[
        date | None,
        typer.Option(
            "--from",
            parser=parse_day,
            metavar="DATE",
            help="First UTC day (YYYY-MM-DD), included. Default: the first day recorded.",
            show_default=False,
        ),
    ] = None,
    to_day: Annotated[
        date | None,
        typer.Option(
            "--to",
            parser=parse_day,
            metavar="DATE",
            help="Last UTC day (YYYY-MM-DD), included. Default: the last day recorded.",
            show_default=False,
        ),
    ] = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an agent's metrics summed over a range of UTC days (all tenants unless --tenant)."""
    with _reported_errors(), _queries() as queries:
        metrics = queries.agent_metrics(
            agent_id, tenant_id=tenant, from_day=from_day, to_day=to_day
        )
    if as_json:
        _print_json(_dataclass_json(metrics))
    else:
        _console().print(agent_metrics_table(metrics))


@app.command()
def cleanup(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only list the candidates; change nothing."),
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            min=1,
            max=100_000,
            help="At most this many sessions handled (and listed, per kind of candidate).",
        ),
    ] = 1000,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Expire sessions idle beyond their policy or past their TTL (a SessionEnded event each).

    Reads the cleanup view as it is (run `sessionstore projections run` to keep it current) and
    ends each due session with status expired, only if it is still at the version the view saw.
    Safe to run again and from several processes at once. Sessions past their retention are
    listed, not erased.
    """
    out = _console()
    with _reported_errors(), _opened() as (settings, log, views):
        lag = _cleanup_view_status(log, views)
        queries = open_queries(settings, views, log)
        now = utc_now()
        if dry_run:
            candidates = queries.cleanup_candidates(now=now, tenant_id=tenant, limit=limit)
            report = None
        else:
            store = SessionStore(log, limits=settings.limits, cache_size=settings.cache_size)
            report = expire_idle_sessions(store, queries, now=now, limit=limit, tenant_id=tenant)
    if as_json:
        status = _status_json(lag)
        if report is None:
            _print_json({"view": status, "dry_run": True, **_candidates_json(candidates)})
        else:
            _print_json({"view": status, "dry_run": False, **_report_json(report)})
        return
    out.print(_lag_line(lag), soft_wrap=True)
    if report is None:
        render_candidates(out, candidates)
        out.print("dry run: nothing was changed", soft_wrap=True)
    else:
        render_expiry(out, report)


@projections_app.command("status")
def projections_status(
    as_json: JsonOption = False,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka",
            help="Also show the Kafka-fed workers' consumer group lag per partition (asks the "
            "brokers).",
        ),
    ] = False,
) -> None:
    """Show each view's generation, log position, the log head and the lag (events to apply)."""
    from sessionstore.adapters.kafka.worker import PartitionLag, group_lag

    lags: list[PartitionLag] = []
    with _reported_errors(), _opened() as (settings, log, views):
        statuses = ProjectionRunner(log, views, all_projections()).status()
        if kafka:
            lags = group_lag(settings)
    if as_json:
        out: Any = [_status_json(s) for s in statuses]
        if kafka:
            out = {
                "projections": out,
                "kafka": {
                    "topic": settings.kafka_topic,
                    "group": settings.kafka_group_id,
                    "partitions": [_dataclass_json(p) | {"lag": p.lag} for p in lags],
                    "lag": sum(p.lag for p in lags),
                },
            }
        _print_json(out)
        return
    console = _console()
    console.print(status_table(statuses))
    if kafka:
        table = Table(
            title=f"Kafka group {settings.kafka_group_id}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        for header in ("partition", "committed", "end", "lag"):
            table.add_column(header, justify="right")
        for p in lags:
            style = "green" if p.lag == 0 else "yellow"
            committed = "-" if p.committed is None else str(p.committed)
            table.add_row(str(p.partition), committed, str(p.end), Text(str(p.lag), style=style))
        console.print(table)
        console.print(f"total lag: {sum(p.lag for p in lags)} messages", soft_wrap=True)


class Source(StrEnum):
    """Where ``projections run`` reads events from."""

    LOG = "log"
    KAFKA = "kafka"


@projections_app.command("run")
def projections_run(
    once: Annotated[
        bool, typer.Option("--once", help="Catch up (with the log or the topic), then exit.")
    ] = False,
    source: Annotated[
        Source,
        typer.Option(
            "--source",
            help="log: read the event log (one runner). kafka: consume the relay's topic in "
            "the consumer group SESSIONSTORE_KAFKA_GROUP_ID (run several to share partitions).",
        ),
    ] = Source.LOG,
) -> None:
    """Apply events to every view: catch up, then keep applying new events until Ctrl-C."""
    if source is Source.KAFKA:
        _run_kafka_projector(once)
        return
    out = _console()
    stop = threading.Event()
    with _reported_errors(), _opened() as (settings, log, views), _stopped_by_signals(stop):
        runner = ProjectionRunner(log, views, all_projections())
        runner.check_tables()  # refuses outdated or Kafka-fed views before any progress bar
        behind = log.count_after(min(s.cursor for s in runner.status()))
        with _progress_bar(out) as bar:
            task = bar.add_task("catching up", total=behind)
            applied = runner.catch_up(progress=partial(bar.advance, task), stop=stop)
        done = "stopped" if stop.is_set() else "caught up"
        out.print(f"{done}: {applied} events read; {_positions(runner)}", soft_wrap=True)
        if once or stop.is_set():
            return
        waiter = open_waiter(settings, stop)
        try:
            out.print("applying new events as they arrive (Ctrl-C to stop)", soft_wrap=True)
            runner.run(stop, waiter)
        finally:
            waiter.close()
        out.print(f"stopped: {_positions(runner)}", soft_wrap=True)


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[
        str | None,
        typer.Argument(help="The projection to rebuild (default: all).", show_default=False),
    ] = None,
) -> None:
    """Rebuild views from position 0 into fresh tables; switch over when caught up.

    Queries keep reading the current tables until the switch, so they answer throughout.
    """
    out = _console()
    with _reported_errors(), _opened() as (_settings, log, views):
        chosen = select(all_projections(), [name] if name else [])
        names = ", ".join(p.name for p in chosen)
        with _progress_bar(out) as bar:
            # One pass over the log feeds every chosen projection's new generation.
            task = bar.add_task(f"rebuilding {names}", total=log.count_after(LOG_START))
            applied = rebuild(log, views, chosen, progress=partial(bar.advance, task))
        for projection in chosen:
            out.print(
                f"rebuilt {projection.name}: generation {views.active_generation(projection.name)}",
                soft_wrap=True,
            )
        out.print(f"{applied} events read; {_positions_of(log, views, chosen)}", soft_wrap=True)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations (safe to run again: then it says it is up to date)."""
    out = _console()
    with _reported_errors():
        settings = load_settings()
        _print_migrations(out, settings, migrate(settings))


@db_app.command("init")
def db_init() -> None:
    """Create the schema on a new database: the same as `db migrate`."""
    db_migrate()


# ---------------------------------------------------------------------------------------------
# Audit: history, past states, diffs, export/import, tamper evidence


EXIT_TAMPERED = 4
"""``audit verify`` found the stored log disagreeing with its hash chain or a checkpoint."""

audit_app = typer.Typer(
    help="Audit the log: history, state as of a version or time, diffs, export/import, "
    "tamper checks.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


def parse_instant(text: str) -> datetime:
    """ISO 8601 time; without a zone it is UTC (``2026-11-21T06:20``, ``...Z``, ``...+01:00``)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"{text!r} is not an ISO 8601 time like 2026-11-21T06:20:00Z"
        raise typer.BadParameter(msg) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


InstantOption = partial(typer.Option, parser=parse_instant, metavar="TIME", show_default=False)


class _AuditLog(EventLog, Auditable, Protocol):
    """Every backend's log: the event log port plus the checkpoints the audit keeps."""


@contextmanager
def _log() -> Iterator[_AuditLog]:
    log = open_log(load_settings())
    try:
        if not callable(getattr(log, "checkpoints", None)):  # pragma: no cover - all have it
            msg = f"{type(log).__name__} keeps no audit checkpoints"
            raise StorageError(msg)
        yield cast("_AuditLog", log)
    finally:
        log.close()


@audit_app.command("history")
def audit_history(
    session_id: SessionIdArg,
    *,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type", help="Only events of this type (repeat for more).", show_default=False
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        InstantOption("--from", help="Only events that occurred at or after this time."),
    ] = None,
    until: Annotated[
        datetime | None,
        InstantOption("--to", help="Only events that occurred at or before this time."),
    ] = None,
    after_version: Annotated[
        int, typer.Option("--after-version", min=0, help="Continue after this version.")
    ] = 0,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=audit.MAX_HISTORY_PAGE, help="Events per page.")
    ] = 100,
    as_json: JsonOption = False,
) -> None:
    """A session's events (version, global position, time, type, payload), a page at a time."""
    with _reported_errors(), _log() as log:
        page = audit.history(
            log,
            parse_session_id(session_id),
            types=types or (),
            since=since,
            until=until,
            after_version=after_version,
            limit=limit,
        )
    if as_json:
        _print_json(
            {
                "items": [event_json(r) for r in page.events],
                "next_after_version": page.next_after_version,
            }
        )
        return
    out = _console()
    out.print(events_table(page.events, title=f"Session {session_id}: {len(page.events)} events"))
    if page.next_after_version is not None:
        out.print(f"more: add --after-version {page.next_after_version}", soft_wrap=True)


@audit_app.command("as-of")
def audit_as_of(
    session_id: SessionIdArg,
    at_version: Annotated[
        int | None,
        typer.Option(
            "--version", min=1, help="The state right after this version.", show_default=False
        ),
    ] = None,
    at: Annotated[
        datetime | None,
        InstantOption(
            "--at", help="The state after the last event at or before this time (UTC if no zone)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """A session's state as it was at a version or a time (a replay of the events up to there)."""
    if (at_version is None) == (at is None):
        raise typer.BadParameter("give exactly one of --version N or --at TIME")
    with _reported_errors(), _log() as log:
        events = audit.session_events(log, parse_session_id(session_id))
        state = state_as_of(events, version=at_version, at=at)
    if as_json:
        _print_json(session_json(state))
        return
    out = _console()
    when = f"version {at_version}" if at is None else f"{at.isoformat()} (version {state.version})"
    out.print(f"State as of {when}", soft_wrap=True)
    out.print(session_table(state))


@audit_app.command("diff")
def audit_diff(
    session_id: SessionIdArg,
    version_a: Annotated[
        int, typer.Argument(min=1, help="The earlier version.", show_default=False)
    ],
    version_b: Annotated[int, typer.Argument(min=1, help="The later version.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Which fields of a session's state changed between two versions."""
    with _reported_errors(), _log() as log:
        events = audit.session_events(log, parse_session_id(session_id))
        changes = diff(
            state_as_of(events, version=version_a), state_as_of(events, version=version_b)
        )
    if as_json:
        _print_json(
            [
                {"field": c.field, "before": _jsonable(c.before), "after": _jsonable(c.after)}
                for c in changes
            ]
        )
        return
    table = Table(
        title=f"Session {session_id}: version {version_a} → {version_b}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("field", no_wrap=True)
    table.add_column("before", overflow="fold")
    table.add_column("after", overflow="fold")
    for c in changes:
        table.add_row(
            c.field, Text(_compact(_jsonable(c.before))), Text(_compact(_jsonable(c.after)))
        )
    _console().print(table)
    if not changes:
        _console().print("no fields changed", soft_wrap=True)


@audit_app.command("export")
def audit_export(
    tenant: TenantOption = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's sessions.", show_default=False)
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Only this session.", show_default=False)
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this file (default: stdout).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Write the log (or a tenant's, user's or session's part) as JSON Lines, in log order.

    With -o, a progress bar shows on stderr and the file appears only when complete.
    """
    err = Console(stderr=True, highlight=False)
    with _reported_errors(), _log() as log:
        sid = None if session is None else parse_session_id(session)
        export = partial(audit.export, log, tenant_id=tenant, user_id=user, session_id=sid)
        if output is None:
            export(sys.stdout)
            return
        partial_file = output.with_name(output.name + ".partial")
        try:
            with partial_file.open("w", encoding="utf-8") as out, _progress_bar(err) as bar:
                task = bar.add_task("exporting", total=audit.export_total(log, sid))
                summary = export(out, progress=partial(bar.advance, task))
            partial_file.replace(output)
        finally:
            partial_file.unlink(missing_ok=True)
    err.print(
        f"exported {summary.events} events of {summary.sessions} sessions to {output}",
        soft_wrap=True,
    )


@audit_app.command("import")
def audit_import(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="A file `audit export` wrote.",
            show_default=False,
        ),
    ],
) -> None:
    """Replay an export into this store: checks every line first, writes nothing if one is bad.

    Sessions the store already has are refused, unless the file continues them exactly.
    """
    out = _console()
    with _reported_errors(), _log() as log:
        with file.open("rb") as f:
            lines = sum(1 for _ in f)
        with file.open("r", encoding="utf-8") as f, _progress_bar(out) as bar:
            checking = bar.add_task("checking", total=lines)
            writing = bar.add_task("writing", total=max(0, lines - 2))
            summary = audit.import_log(
                log,
                f,
                on_line=partial(bar.advance, checking),
                on_written=partial(bar.advance, writing),
            )
    out.print(f"imported {summary.events} events of {summary.sessions} sessions", soft_wrap=True)


@audit_app.command("verify")
def audit_verify(
    session_id: Annotated[
        str | None,
        typer.Argument(
            help="Only this session (default: every session and checkpoint).", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute the hash chains (and checkpoints); exit 4 at the first break."""
    with _reported_errors(), _log() as log:
        sid = None if session_id is None else parse_session_id(session_id)
        if sid is not None and not log.read_session(sid, limit=1):
            raise SessionNotFound(sid)
        report = verify(log, sid)
    if as_json:
        _print_json(
            {
                "ok": report.ok,
                "sessions": report.sessions,
                "events": report.events,
                "unsealed_events": report.unsealed_events,
                "checkpoints": report.checkpoints,
                "breaks": [
                    {
                        "session_id": None if b.session_id is None else str(b.session_id),
                        "version": b.version,
                        "kind": b.kind,
                        "detail": b.detail,
                    }
                    for b in report.breaks
                ],
            }
        )
    else:
        checked = (
            f"{report.sessions} sessions, {report.events} events, "
            f"{report.checkpoints} checkpoints checked"
        )
        if report.unsealed_events:
            checked += f" ({report.unsealed_events} events from before hashing: order only)"
        _console().print(checked, soft_wrap=True)
        if report.ok:
            _console().print("OK: the log matches its hashes", soft_wrap=True)
    if report.first_break is not None:
        if not as_json:
            _fail(f"tampered: {report.first_break}", EXIT_TAMPERED)
        raise typer.Exit(EXIT_TAMPERED)


@audit_app.command("checkpoint")
def audit_checkpoint(as_json: JsonOption = False) -> None:
    """Record a checkpoint over every event since the last one; copy its digest elsewhere."""
    with _reported_errors(), _log() as log:
        checkpoint = create_checkpoint(log)
        existing = log.checkpoints() if checkpoint is None else []
    if as_json:
        _print_json(None if checkpoint is None else _checkpoint_json(checkpoint))
        return
    out = _console()
    if checkpoint is None:
        last = f" (checkpoint {existing[-1].id})" if existing else ""
        out.print(f"no events since the last checkpoint{last}: nothing recorded", soft_wrap=True)
        return
    out.print(
        f"checkpoint {checkpoint.id}: {checkpoint.events} events up to position "
        f"{checkpoint.cursor.position}, at {_time(checkpoint.created_at, date=True)} UTC",
        soft_wrap=True,
    )
    out.print(f"digest {checkpoint.digest.hex()}", soft_wrap=True)
    out.print("keep a copy of this line outside the database", soft_wrap=True)


def _checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "tx": checkpoint.cursor.tx,
        "position": checkpoint.cursor.position,
        "events": checkpoint.events,
        "digest": checkpoint.digest.hex(),
        "created_at": to_jsonable_python(checkpoint.created_at.astimezone(UTC)),
    }


# ---------------------------------------------------------------------------------------------
# The HTTP API and its keys


keys_app = typer.Typer(
    help="API keys of the HTTP API: each maps to a tenant and a role.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")

DEV_TENANT = "dev"


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default SESSIONSTORE_HTTP_HOST)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port to listen on (default SESSIONSTORE_HTTP_PORT)."),
    ] = None,
    projector: Annotated[
        bool,
        typer.Option(
            "--projector/--no-projector",
            help="Also apply the log to the views in this process (off when a separate "
            "`sessionstore projections run` does it).",
        ),
    ] = True,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs). Every request needs an API key.

    On the embedded default (SQLite) the schema is migrated first, and if the database has no
    API key yet an admin key for tenant "dev" is created and printed, once.
    """
    import uvicorn

    from sessionstore.adapters.http.app import create_app, key_store

    out = _console()
    with _reported_errors():
        settings = load_settings()
        if settings.backend == "sqlite":
            _print_migrations(out, settings, migrate(settings))
        log = open_log(settings)
        try:
            keys = key_store(settings, log)
            if settings.backend != "postgres" and not keys.list():
                _print_dev_key(out, keys, settings)
            elif not any(k.revoked_at is None for k in keys.list()):
                out.print(
                    "[yellow]no API key exists: every request will be refused; create one with "
                    "`sessionstore keys create --tenant T --role admin`[/]",
                    soft_wrap=True,
                )
            # memory:// keeps its keys in this process: the app must use this very key store.
            api = create_app(
                settings,
                keys=keys if settings.backend == "memory" else None,
                project=projector,
            )
        finally:
            log.close()
        where = f"http://{host or settings.http_host}:{port or settings.http_port}"
        out.print(f"serving {settings.redacted_url()} on {where} (docs: {where}/docs)")
        uvicorn.run(
            api, host=host or settings.http_host, port=port or settings.http_port, log_level="info"
        )


def _print_dev_key(out: Console, keys: KeyStore, settings: Settings) -> None:
    _info, token = keys.create(DEV_TENANT, "admin", name="dev key created by serve")
    out.print(
        "\n[bold yellow]" + "!" * 78 + "[/]\n"
        f"[bold yellow]No API key existed in {settings.redacted_url()}: created an ADMIN key "
        f'for tenant "{DEV_TENANT}".[/]\n'
        "[bold yellow]It is shown only now. Use it as  Authorization: Bearer <key>[/]\n\n"
        f"    [bold]{token}[/]\n\n"
        "[bold yellow]Revoke it (`sessionstore keys revoke`) before exposing this server.[/]\n"
        "[bold yellow]" + "!" * 78 + "[/]\n",
        soft_wrap=True,
    )


@contextmanager
def _keys() -> Iterator[KeyStore]:
    from sessionstore.adapters.http.app import key_store

    settings = load_settings()
    if settings.backend == "memory":
        _fail("API keys need a database: memory:// keeps nothing between commands", EXIT_REQUEST)
    log = open_log(settings)
    try:
        yield key_store(settings, log)
    finally:
        log.close()


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key acts for.")],
    role: Annotated[str, typer.Option("--role", help="agent, reader or admin.")],
    name: Annotated[str, typer.Option("--name", help="A label (who uses the key).")] = "",
) -> None:
    """Create a key and print it: it is shown only now (only a hash is stored)."""
    with _reported_errors(), _keys() as keys:
        info, token = keys.create(tenant, role, name)
    out = _console()
    out.print(
        f"created key {info.key_id} ({info.role.value} of tenant {info.tenant_id}); "
        "store it now, it is not shown again:",
        soft_wrap=True,
    )
    typer.echo(token)


@keys_app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """List keys (ids, tenants, roles, names; never the secrets)."""
    with _reported_errors(), _keys() as keys:
        listed = keys.list()
    if as_json:
        _print_json(
            [
                {
                    "key_id": k.key_id,
                    "tenant_id": k.tenant_id,
                    "role": k.role.value,
                    "name": k.name,
                    "created_at": to_jsonable_python(k.created_at),
                    "revoked_at": to_jsonable_python(k.revoked_at),
                }
                for k in listed
            ]
        )
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("key id", "tenant", "role", "name", "created (UTC)", "revoked"):
        table.add_column(column)
    for k in listed:
        table.add_row(
            k.key_id,
            k.tenant_id,
            k.role.value,
            k.name,
            k.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "" if k.revoked_at is None else k.revoked_at.astimezone(UTC).strftime("%Y-%m-%d"),
        )
    _console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
) -> None:
    """Revoke a key: servers refuse it within seconds (their cache of verified keys)."""
    with _reported_errors(), _keys() as keys:
        revoked = keys.revoke(key_id)
    if not revoked:
        _fail(f"no active key {key_id!r}", EXIT_REQUEST)
    _console().print(f"revoked key {key_id}", soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# Plumbing


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


# ---------------------------------------------------------------------------------------------
# Rendering


_STATUS_STYLE = {
    EndStatus.COMPLETED: "green",
    EndStatus.FAILED: "red",
    EndStatus.EXPIRED: "yellow",
    EndStatus.ABANDONED: "magenta",
}


def status_text(state: Session, *, short: bool = False) -> Text:
    """``ended: completed`` (or just ``completed`` when short), ``active``, ``interrupted``."""
    if state.status is SessionStatus.ENDED and state.end_status is not None:
        style = _STATUS_STYLE.get(state.end_status, "")
        return Text.assemble("" if short else "ended: ", (state.end_status.value, style))
    style = "cyan" if state.status is SessionStatus.ACTIVE else "yellow"
    return Text(state.status.value, style=style)


def render_demo(out: Console, summary: DemoSummary, settings: Settings) -> None:
    agents = {s.state.agent_id for s in summary.sessions}
    out.print(
        f"simulated {len(summary.sessions)} sessions of {len(agents)} agents "
        f"(seed {summary.seed}): {summary.events_appended} events, "
        f"{_time(summary.started_at)} to {_time(summary.finished_at)} UTC",
        soft_wrap=True,
    )
    out.print()
    out.print(sessions_table(summary, wide=out.width >= 110))
    if summary.notes:
        out.print()
        out.print("[bold]What the agent runtimes did[/]")
        for note in summary.notes:
            out.print(Text(f"• {note}"))
    highlight = summary.highlight
    sid = highlight.state.session_id
    out.print()
    out.print(
        events_table(summary.history, title=f"History of session {sid} ({highlight.scenario})")
    )
    out.print()
    if settings.backend == "memory":
        out.print("memory:// keeps nothing once this process exits.", soft_wrap=True)
    else:
        out.print("Look closer:", soft_wrap=True)
        out.print(f"  sessionstore session show {sid}", soft_wrap=True)
        out.print(f"  sessionstore session events {sid}", soft_wrap=True)


def sessions_table(summary: DemoSummary, *, wide: bool) -> Table:
    """The demo sessions' current state; a narrow terminal gets no channel and last message."""
    table = Table(
        title="Demo sessions: current state, read back from the log",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    headers = ["session", "agent", "channel", "status", "ver", "msgs", "turns", "intr", "res"]
    headers += ["open"]
    if not wide:
        headers.remove("channel")
    for header in headers:
        numeric = header in {"ver", "msgs", "turns", "intr", "res", "open"}
        table.add_column(header, no_wrap=True, justify="right" if numeric else "left")
    if wide:
        # The one column that gives way: it takes what is left and cuts its text short.
        table.add_column("last message", max_width=56)
    for s in (item.state for item in summary.sessions):
        values: dict[str, str | Text] = {
            "session": str(s.session_id)[:8],
            "agent": s.agent_id,
            "channel": s.channel.value,
            "status": status_text(s, short=True),
            "ver": str(s.version),
            "msgs": str(s.message_count),
            "turns": str(s.turn_count),
            "intr": str(s.interrupt_count),
            "res": str(s.resume_count),
            "open": str(len(s.open_tool_calls)),
        }
        row = [values[header] for header in headers]
        if wide:
            row.append(Text(_one_line(last_message(s)), no_wrap=True, overflow="ellipsis"))
        table.add_row(*row)
    return table


def last_message(s: Session) -> str:
    if s.last_message_role is None:
        return ""
    # An assistant message that only requests tools has no text.
    return f"{s.last_message_role.value}: {s.last_message_preview or '(tool calls)'}"


def events_table(history: list[RecordedEvent] | tuple[RecordedEvent, ...], *, title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("ver", justify="right")
    table.add_column("pos", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("details", overflow="fold")
    for recorded in history:
        event = recorded.event
        table.add_row(
            str(event.version),
            str(recorded.position),
            _time(event.occurred_at, date=True),
            event.topic,
            Text(describe(event)),
        )
    return table


def session_table(s: Session) -> Table:
    table = Table(
        title=f"Session {s.session_id}", title_justify="left", show_header=False, box=box.SIMPLE
    )
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("status", status_text(s)),
        ("end reason", s.end_reason or ""),
        ("tenant", s.tenant_id),
        ("user", s.user_id),
        ("agent", s.agent_id),
        ("channel", s.channel.value),
        ("version", str(s.version)),
        ("created", _time(s.created_at, date=True)),
        ("last activity", _time(s.last_activity_at, date=True) if s.last_activity_at else ""),
        ("interrupted at", _time(s.interrupted_at, date=True) if s.interrupted_at else ""),
        ("ended at", _time(s.ended_at, date=True) if s.ended_at else ""),
        ("messages", str(s.message_count)),
        ("turns", f"{s.turn_count} ({s.error_turn_count} with errors)"),
        ("interrupts", str(s.interrupt_count)),
        ("resumes", str(s.resume_count)),
        ("tokens", f"{s.input_tokens} in, {s.output_tokens} out"),
        ("open tool calls", ", ".join(f"{c.name} [{c.id}]" for c in s.open_tool_calls)),
        ("policy", _compact(s.policy.model_dump(exclude_none=True))),
        ("metadata", _compact(dict(s.metadata))),
        ("context", _compact(dict(s.context))),
        ("last message", last_message(s)),
    ]
    for name, value in rows:
        if value or name in {"status", "open tool calls", "context"}:
            table.add_row(name, value if isinstance(value, Text) else Text(value or "-"))
    return table


def describe(event: SessionEvent) -> str:
    """A one-line summary of the event's payload."""
    match event:
        case SessionCreated():
            text = (
                f"{event.channel.value} session of {event.agent_id} for {event.user_id} "
                f"(tenant {event.tenant_id})"
            )
        case MessageAdded():
            text = _describe_message(event)
        case TurnRecorded():
            text = _describe_turn(event)
        case ContextUpdated():
            parts = [f"{key}={_compact(value)}" for key, value in event.set.items()]
            parts += [f"-{key}" for key in event.removed]
            text = "context " + ", ".join(parts)
        case SessionInterrupted():
            text = f"{event.reason.value}: {event.detail}" if event.detail else event.reason.value
            text += _aborted(event.aborted_tool_calls)
        case SessionResumed():
            text = f"resume #{event.resume_count} after {event.seconds_interrupted:.1f} s"
        case SessionEnded():
            text = f"{event.status.value}: {event.reason}" if event.reason else event.status.value
            text += _aborted(event.aborted_tool_calls)
        case _:
            text = _compact(event.payload())
    return _one_line(text, limit=160)


def _describe_message(event: MessageAdded) -> str:
    if event.tool_calls:
        calls = ", ".join(
            f"{c.name}({', '.join(f'{k}={_compact(v)}' for k, v in c.arguments.items())}) [{c.id}]"
            for c in event.tool_calls
        )
        return f"assistant calls {calls}"
    if event.tool_call_id is not None:
        return f"tool [{event.tool_call_id}]: {event.content}"
    return f"{event.role.value}: {event.content}"


def _describe_turn(event: TurnRecorded) -> str:
    stages = [
        f"{name} {value:.0f}"
        for name, value in (
            ("stt", event.stt_ms),
            ("llm", event.llm_ms),
            ("tts", event.tts_ms),
            ("tool", event.tool_ms),
        )
        if value is not None
    ]
    text = f"{event.request_id} {event.duration_ms:.0f} ms"
    if stages:
        text += f" ({', '.join(stages)})"
    if event.input_tokens is not None or event.output_tokens is not None:
        text += f", tokens {event.input_tokens or 0} in / {event.output_tokens or 0} out"
    if event.error:
        text += f", ERROR {event.error_type or ''}".rstrip()
    return text


def _aborted(call_ids: tuple[str, ...]) -> str:
    return f"; aborted tool calls {', '.join(call_ids)}" if call_ids else ""


def status_table(statuses: Sequence[ProjectionStatus]) -> Table:
    table = Table(title="Projections", title_justify="left", box=box.SIMPLE_HEAD)
    kafka = any(s.feed == "kafka" for s in statuses)
    headers = ("projection", "generation", "position", "head", "lag") + (("feed",) if kafka else ())
    for header in headers:
        table.add_column(header, justify="left" if header in {"projection", "feed"} else "right")
    for s in statuses:
        if s.feed == "kafka":  # the log position is the last rebuild's; the group has the lag
            lag = Text("see --kafka", style="dim")
        else:
            lag = Text(str(s.lag_events), style="green" if s.lag_events == 0 else "yellow")
        row: list[str | Text] = [s.name, str(s.generation), str(s.cursor.position)]
        table.add_row(*row, str(s.head.position), lag, *((s.feed,) if kafka else ()))
    return table


def _positions(runner: ProjectionRunner) -> str:
    statuses = runner.status()
    head = statuses[0].head.position if statuses else 0
    positions = {s.cursor.position for s in statuses}
    if len(statuses) == 1:
        return f"at position {statuses[0].cursor.position} (log head {head})"
    if len(positions) == 1:
        return f"every view at position {positions.pop()} (log head {head})"
    listed = ", ".join(f"{s.name} at {s.cursor.position}" for s in statuses)
    return f"{listed} (log head {head})"


def _positions_of(log: EventLog, views: ViewStore, projections: Sequence[Projection]) -> str:
    return _positions(ProjectionRunner(log, views, projections))


def _cleanup_view_status(log: EventLog, views: ViewStore) -> ProjectionStatus:
    projection = next(p for p in all_projections() if SESSION_CLEANUP in p.tables)
    return ProjectionRunner(log, views, [projection]).status()[0]


def _lag_line(status: ProjectionStatus) -> str:
    where = (
        f"{status.name} view at position {status.cursor.position}, log head {status.head.position}"
    )
    if status.lag_events == 0:
        return f"{where}: up to date"
    return (
        f"{where}: {status.lag_events} events behind; sessions they touch are judged as of the "
        "view (run `sessionstore projections run` to catch up)"
    )


def _status_json(s: ProjectionStatus) -> dict[str, Any]:
    return {
        "name": s.name,
        "generation": s.generation,
        "position": s.cursor.position,
        "tx": s.cursor.tx,
        "head": s.head.position,
        "lag": s.lag_events,
        "feed": s.feed,
    }


def session_list_table(page: SessionPage, *, width: int) -> Table:
    """Full ids always (the other commands need them); narrower terminals leave out the
    tenant, user and creation time (160 columns show everything), then the agent (120)."""
    table = Table(
        title=f"Sessions ({len(page.items)}{' and more' if page.next_cursor else ''})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    headers = ["session", "tenant", "agent", "user", "status", "created", "last activity"]
    if width < 160:
        headers = [h for h in headers if h not in {"tenant", "user", "created"}]
    if width < 120:
        headers.remove("agent")
    for header in headers:
        title = f"{header} (UTC)" if header == "created" else header
        table.add_column(title, no_wrap=True, overflow="ellipsis")
    table.add_column("ver", justify="right", no_wrap=True)
    table.add_column("msgs", justify="right", no_wrap=True)
    for s in page.items:
        if s.end_status is not None:
            status = Text(s.end_status.value, style=_STATUS_STYLE.get(s.end_status, ""))
        else:
            style = "cyan" if s.status is SessionStatus.ACTIVE else "yellow"
            status = Text(s.status.value, style=style)
        values: dict[str, str | Text] = {
            "session": str(s.session_id),
            "tenant": s.tenant_id,
            "agent": s.agent_id,
            "user": s.user_id,
            "status": status,
            "created": _seconds(s.created_at),
            "last activity": _seconds(s.last_activity_at),
        }
        table.add_row(*(values[h] for h in headers), str(s.version), str(s.message_count))
    return table


def transcript_table(entries: Sequence[TranscriptEntry], *, title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("ver", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("message", overflow="fold")
    for entry in entries:
        table.add_row(
            str(entry.version) if entry.seq == 0 else f"{entry.version}.{entry.seq}",
            _time(entry.occurred_at, date=True),
            entry.role.value,
            Text(_entry_text(entry)),
        )
    return table


def _entry_text(entry: TranscriptEntry) -> str:
    if entry.tool_calls:
        text = "calls " + ", ".join(
            f"{call['name']}({_arguments(call['arguments'])}) [{call['id']}]"
            for call in entry.tool_calls
        )
        return f"{entry.content} {text}" if entry.content else text
    if entry.tool_call_id is not None:
        return f"[{entry.tool_call_id}] {entry.content}"
    return entry.content


def _arguments(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_compact(v)}" for k, v in arguments.items())


def _key_values(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        show_header=False,
        box=box.SIMPLE,
        min_width=len(title),  # so the title (with a full id) stays on one line
    )
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def session_metrics_table(m: SessionMetrics) -> Table:
    return _key_values(
        f"Metrics of session {m.session_id}",
        [
            ("tenant", m.tenant_id),
            ("agent", m.agent_id),
            ("requests", str(m.requests)),
            ("errors", f"{m.errors}{_rate(m.error_rate, 'requests')}"),
            ("mean time", _ms(m.mean_ms)),
            ("stages (mean)", _stages(m.stages)),
            ("tokens", f"{m.input_tokens} in, {m.output_tokens} out"),
            ("first turn", _time(m.first_turn_at, date=True) if m.first_turn_at else "-"),
            ("last turn", _time(m.last_turn_at, date=True) if m.last_turn_at else "-"),
        ],
    )


def agent_metrics_table(m: AgentMetrics) -> Table:
    days = f"{m.from_day or 'first day'} to {m.to_day or 'last day'} (UTC)"
    sessions = ", ".join(
        f"{n} {status}"
        for status, n in (
            ("started", m.sessions_started),
            ("completed", m.sessions_completed),
            ("failed", m.sessions_failed),
            ("expired", m.sessions_expired),
            ("abandoned", m.sessions_abandoned),
        )
    )
    return _key_values(
        f"Metrics of agent {m.agent_id}",
        [
            ("tenant", m.tenant_id or "all"),
            ("days", f"{days}; {m.days} with activity"),
            ("sessions", sessions),
            ("messages", str(m.messages)),
            ("turns", str(m.turns)),
            ("errors", f"{m.error_turns}{_rate(m.error_rate, 'turns')}"),
            ("interrupts", str(m.interrupts)),
            ("resumes", f"{m.resumes}{_rate(m.resume_rate, 'interrupts')}"),
            ("latency", f"p50 {_ms(m.p50_ms)}, p95 {_ms(m.p95_ms)}, p99 {_ms(m.p99_ms)}"),
            ("mean time", _ms(m.mean_ms)),
            ("stages (mean)", _stages(m.stages)),
            ("tokens", f"{m.input_tokens} in, {m.output_tokens} out"),
        ],
    )


def _rate(rate: float | None, of: str) -> str:
    return "" if rate is None else f" ({rate:.1%} of {of})"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _stages(stages: StageTimes) -> str:
    parts = [
        f"{name} {_ms(value)}"
        for name, value in (
            ("stt", stages.stt_ms),
            ("llm", stages.llm_ms),
            ("tts", stages.tts_ms),
            ("tool", stages.tool_ms),
        )
        if value is not None
    ]
    return ", ".join(parts) or "-"


def candidates_table(title: str, candidates: Sequence[CleanupCandidate], deadline: str) -> Table:
    table = Table(
        title=f"{title} ({len(candidates)})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    table.add_column("session", no_wrap=True)
    table.add_column("tenant", no_wrap=True, overflow="ellipsis")
    table.add_column("status", no_wrap=True)
    table.add_column("ver", no_wrap=True, justify="right")
    table.add_column("last activity", no_wrap=True)
    table.add_column("due since (UTC)", no_wrap=True)
    for c in candidates:
        due: datetime | None = getattr(c, deadline)
        table.add_row(
            str(c.session_id),
            c.tenant_id,
            c.status.value,
            str(c.version),
            _seconds(c.last_activity_at),
            _seconds(due) if due else "-",
        )
    return table


def render_candidates(out: Console, candidates: CleanupCandidates) -> None:
    for title, found, deadline in (
        ("Idle beyond their policy", candidates.idle, "idle_deadline"),
        ("Past their TTL", candidates.expirable, "expires_at"),
        ("Ended, past retention", candidates.past_retention, "retention_until"),
    ):
        if found:
            out.print(candidates_table(title, found, deadline))
        else:
            out.print(f"{title}: none", soft_wrap=True)


def render_expiry(out: Console, report: ExpiryReport) -> None:
    if report.results:
        table = Table(
            title="Cleanup", title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True
        )
        headers = ["session", "tenant", "ver", "reason", "outcome"]
        for header in headers:
            table.add_column(header, no_wrap=True, justify="right" if header == "ver" else "left")
        details = any(r.detail for r in report.results)
        if details:
            table.add_column("detail", overflow="fold")
        for r in report.results:
            row = [str(r.session_id), r.tenant_id, str(r.version), r.reason, r.outcome]
            table.add_row(*row, *([r.detail] if details else []))
        out.print(table)
    out.print(
        f"expired {report.expired} sessions; {report.already_done} already expired by another "
        f"run; {report.skipped} skipped (changed since the view was read)",
        soft_wrap=True,
    )
    if report.past_retention:
        out.print(
            f"{len(report.past_retention)} ended sessions are past their retention "
            "(listed by `cleanup --dry-run`; erasure is not available yet)",
            soft_wrap=True,
        )


def _candidates_json(candidates: CleanupCandidates) -> dict[str, Any]:
    return {
        "now": _jsonable(candidates.now),
        "idle": [_dataclass_json(c) for c in candidates.idle],
        "expirable": [_dataclass_json(c) for c in candidates.expirable],
        "past_retention": [_dataclass_json(c) for c in candidates.past_retention],
    }


def _report_json(report: ExpiryReport) -> dict[str, Any]:
    return {
        "now": _jsonable(report.now),
        "expired": report.expired,
        "already_done": report.already_done,
        "skipped": report.skipped,
        "results": [_dataclass_json(r) for r in report.results],
        "past_retention": [_dataclass_json(c) for c in report.past_retention],
    }


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


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _dataclass_json(value: Any) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in asdict(value).items()}


def session_json(s: Session) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(s, f.name)) for f in fields(s)}


def event_json(recorded: RecordedEvent) -> dict[str, Any]:
    event = recorded.event
    return {
        "position": recorded.position,
        "recorded_at": to_jsonable_python(recorded.recorded_at.astimezone(UTC)),
        "tenant_id": recorded.tenant_id,
        "type": event.topic,
        "class_version": event.class_version,
        **event.model_dump(mode="json"),
    }


def _jsonable(value: object) -> Any:
    # Session holds read-only mappings (MappingProxyType), which pydantic does not serialise.
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return to_jsonable_python(value)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _one_line(text: str, *, limit: int | None = None) -> str:
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _seconds(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _time(value: datetime, *, date: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f"
    return value.astimezone(UTC).strftime(fmt)[:-3]


# ---------------------------------------------------------------------------------------------
# Kafka: the relay and the Kafka-fed projector

relay_app = typer.Typer(
    help="Publish the event log to Kafka (run without a subcommand to start the relay).",
    invoke_without_command=True,
)
app.add_typer(relay_app, name="relay")


def _configure_logging() -> None:
    """Long-running commands log with timestamps; kafka-python's own chatter only when bad."""
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


@relay_app.callback()
def relay(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Publish what the log has now, then exit.")
    ] = False,
) -> None:
    """Follow the event log and produce every event to SESSIONSTORE_KAFKA_TOPIC (acks=all;
    the position moves only after the brokers acknowledged). Keeps retrying while the brokers
    are down; resumes from its saved position after a crash."""
    if ctx.invoked_subcommand is not None:
        return
    from sessionstore.adapters.kafka.relay import Relay, relay_positions

    out = _console()
    stop = threading.Event()
    with _reported_errors(), _opened() as (settings, log, _views), _stopped_by_signals(stop):
        relay = Relay(log, relay_positions(settings, log), settings)
        try:
            where = f"topic {relay.topic} on {settings.kafka_bootstrap_servers}"
            if once:
                relay.connect()
                published = relay.catch_up(stop)
                status = relay.status()
                out.print(
                    f"published {published} events to {where}; position "
                    f"{status.cursor.position}, lag {status.lag_events}",
                    soft_wrap=True,
                )
                return
            _configure_logging()
            out.print(
                f"relaying {settings.redacted_url()} to {where} (Ctrl-C to stop)", soft_wrap=True
            )
            waiter = open_waiter(settings, stop)
            try:
                relay.run(stop, waiter, report=lambda line: out.print(line, soft_wrap=True))
            finally:
                waiter.close()
            status = relay.status()
            out.print(
                f"stopped: position {status.cursor.position}, lag {status.lag_events}",
                soft_wrap=True,
            )
        finally:
            relay.close()


@relay_app.command("status")
def relay_status(as_json: JsonOption = False) -> None:
    """The relay's saved position, the log head and how many events wait to be published."""
    from sessionstore.adapters.kafka.relay import Relay, relay_positions

    with _reported_errors(), _opened() as (settings, log, _views):
        status = Relay(log, relay_positions(settings, log), settings).status()
    if as_json:
        _print_json(
            {
                "topic": status.topic,
                "position": status.cursor.position,
                "head": status.head.position,
                "lag_events": status.lag_events,
                "published": status.published,
                "updated_at": None
                if status.updated_at is None
                else to_jsonable_python(status.updated_at),
            }
        )
        return
    table = Table(box=box.SIMPLE)
    for column in ("topic", "position", "log head", "lag (events)", "published", "updated"):
        table.add_column(column)
    table.add_row(
        status.topic,
        str(status.cursor.position),
        str(status.head.position),
        str(status.lag_events),
        str(status.published),
        "never" if status.updated_at is None else _seconds(status.updated_at),
    )
    _console().print(table)


def _run_kafka_projector(once: bool) -> None:
    from sessionstore.adapters.kafka.worker import KafkaProjectionWorker
    from sessionstore.projections.feed import DeliveredFeed

    out = _console()
    stop = threading.Event()
    with _reported_errors(), _opened() as (settings, log, views), _stopped_by_signals(stop):
        worker = KafkaProjectionWorker(DeliveredFeed(log, views, all_projections()), settings)
        where = (
            f"topic {settings.kafka_topic} on {settings.kafka_bootstrap_servers} "
            f"(group {settings.kafka_group_id})"
        )
        try:
            if once:
                worker.catch_up(stop)
                out.print(f"caught up with {where}: {_worker_stats(worker)}", soft_wrap=True)
                return
            _configure_logging()
            out.print(
                f"applying {where} to the views of {settings.redacted_url()} (Ctrl-C to stop)",
                soft_wrap=True,
            )
            worker.run(stop, report=lambda line: out.print(line, soft_wrap=True))
            out.print(f"stopped: {_worker_stats(worker)}", soft_wrap=True)
        finally:
            worker.close()


def _worker_stats(worker: Any) -> str:
    s = worker.stats
    return (
        f"{s.received} messages received, {s.applied} events applied, {s.duplicates} "
        f"duplicates skipped, {s.healed} read from the log to fill gaps, {s.dead_lettered} "
        f"dead-lettered; partitions {sorted(s.partitions)}"
    )


if __name__ == "__main__":
    main()
