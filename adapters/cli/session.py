"""``session`` and ``sessions``: read one session (state, events, messages); list sessions."""

from __future__ import annotations

import json
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

import typer

from sessionstore.adapters.cli.common import (
    JsonOption,
    SessionIdArg,
    TenantOption,
    _console,
    _queries,
    _reported_errors,
    _store,
    parse_duration,
)
from sessionstore.adapters.cli.render import (
    events_table,
    session_list_table,
    session_table,
    transcript_table,
)
from sessionstore.adapters.cli.render_json import (
    _dataclass_json,
    _print_json,
    event_json,
    session_json,
)
from sessionstore.projections.queries import MAX_PAGE_SIZE

session_app = typer.Typer(
    help="Read one session: its current state, its event history or its messages.",
    no_args_is_help=True,
)
sessions_app = typer.Typer(help="Find sessions in the session state view.", no_args_is_help=True)


class StatusChoice(StrEnum):
    """What ``sessions list --status`` accepts: a session status or an end status."""

    ACTIVE = "active"
    INTERRUPTED = "interrupted"
    ENDED = "ended"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    ABANDONED = "abandoned"


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
