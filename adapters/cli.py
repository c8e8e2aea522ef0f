"""The ``sessionstore`` command line: typer wiring and rich rendering; the work happens elsewhere.

Every command reads its settings when it runs (nothing connects at import time). Errors that
sessionstore raises on purpose end the command with one red line on stderr and an exit code:
1 for a bad request (unknown session, malformed id, ...), 2 for invalid settings (typer uses 2
for command-line usage errors too), 3 when the database fails or its schema is not ready.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, NoReturn

import typer
from pydantic_core import to_jsonable_python
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from adapters.bootstrap import build_store, migrate
from adapters.demo import DEFAULT_SESSIONS, MAX_SESSIONS, DemoSummary, run_demo
from adapters.settings import Settings, SettingsError, load_settings
from domain.errors import SessionStoreError, StorageError
from domain.ports import RecordedEvent
from domain.session import Session, SessionStatus
from domain.store import SessionStore
from events.catalogue import (
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
from events.codec import CodecError

EXIT_REQUEST = 1
"""The request was wrong: unknown session, malformed id or input, invalid transition."""
EXIT_SETTINGS = 2
"""A SESSIONSTORE_* variable is invalid (typer exits with 2 on usage errors as well)."""
EXIT_STORAGE = 3
"""The database failed, cannot be reached, has no (current) schema, or holds an unreadable row."""

app = typer.Typer(
    name="sessionstore",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals could hold the database password
)
session_app = typer.Typer(
    help="Read one session: its current state or its event history.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema: apply the versioned migrations.", no_args_is_help=True)
app.add_typer(session_app, name="session")
app.add_typer(db_app, name="db")

SessionIdArg = Annotated[str, typer.Argument(help="The session's id (a UUID).", show_default=False)]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")
]


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
    render_demo(out, summary, settings)


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
def _reported_errors() -> Iterator[None]:
    """Expected errors become one red line on stderr and an exit code, never a traceback."""
    try:
        yield
    except SettingsError as e:
        _fail(str(e), EXIT_SETTINGS)
    except (StorageError, CodecError) as e:
        _fail(str(e), EXIT_STORAGE)
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


def _time(value: datetime, *, date: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f"
    return value.astimezone(UTC).strftime(fmt)[:-3]


if __name__ == "__main__":
    main()
