"""``audit``: history, past states, diffs, export/import, tamper evidence."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Protocol, cast

import typer
from rich import box
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table
from rich.text import Text

from sessionstore.adapters import audit
from sessionstore.adapters.bootstrap import open_log
from sessionstore.adapters.cli.common import (
    EXIT_TAMPERED,
    InstantOption,
    JsonOption,
    SessionIdArg,
    TenantOption,
    _console,
    _fail,
    _progress_bar,
    _reported_errors,
)
from sessionstore.adapters.cli.render import _compact, _time, events_table, session_table
from sessionstore.adapters.cli.render_json import (
    _checkpoint_json,
    _jsonable,
    _print_json,
    event_json,
    session_json,
)
from sessionstore.adapters.settings import load_settings
from sessionstore.adapters.storage.chain import Auditable, create_checkpoint, verify
from sessionstore.domain.audit import diff, state_as_of
from sessionstore.domain.errors import SessionNotFound, StorageError
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import parse_session_id

audit_app = typer.Typer(
    help="Audit the log: history, state as of a version or time, diffs, export/import, "
    "tamper checks.",
    no_args_is_help=True,
)


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
        limits = load_settings().limits
        with file.open("rb") as f:
            lines = sum(1 for _ in f)
        # Bytes, not text: a line that is not UTF-8 is reported with its number by the import.
        with file.open("rb") as f, _progress_bar(out) as bar:
            checking = bar.add_task("checking", total=lines)
            writing: list[TaskID] = []  # shown only once every line has passed the checks

            def written(n: int) -> None:
                if not writing:
                    writing.append(bar.add_task("writing", total=max(0, lines - 2)))
                bar.advance(writing[0], n)

            summary = audit.import_log(
                log,
                f,
                limits=limits,
                on_line=partial(bar.advance, checking),
                on_written=written,
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
