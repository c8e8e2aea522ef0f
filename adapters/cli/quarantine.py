"""``projections quarantine``: the events the views could not apply; list and retry them."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from sessionstore.adapters.cli.common import (
    EXIT_REQUEST,
    JsonOption,
    _console,
    _opened,
    _reported_errors,
)
from sessionstore.adapters.cli.render_json import _print_json, _quarantined_json, _retry_json
from sessionstore.adapters.cli.render_views import quarantine_table, retry_table
from sessionstore.projections import all_projections
from sessionstore.projections.base import Quarantined
from sessionstore.projections.quarantine import retry
from sessionstore.projections.runner import select

quarantine_app = typer.Typer(
    help="Events a view could not apply (quarantined; their sessions are held in that view): "
    "list them, retry them after a fix.",
    no_args_is_help=True,
)

ProjectionOption = Annotated[
    str | None,
    typer.Option("--projection", help="Only this view (default: all).", show_default=False),
]
SessionOption = Annotated[
    UUID | None,
    typer.Option("--session", help="Only this session's events.", show_default=False),
]


@quarantine_app.command("list")
def quarantine_list(
    projection: ProjectionOption = None,
    session: SessionOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the quarantined events of the views' active generations, in log order.

    An event with an error is the first one its view could not apply; the session's later
    events wait behind it ("held behind event ...")."""
    with _reported_errors(), _opened() as (_settings, _log, views):
        rows: list[Quarantined] = []
        for chosen in select(all_projections(), [projection] if projection else []):
            generation = views.active_generation(chosen.name)
            rows += [
                q for q in views.quarantined(chosen.name, session) if q.generation == generation
            ]
    if as_json:
        _print_json([_quarantined_json(q) for q in rows])
        return
    out = _console()
    if not rows:
        out.print("no quarantined events", soft_wrap=True)
        return
    out.print(quarantine_table(rows))


@quarantine_app.command("retry")
def quarantine_retry(
    projection: ProjectionOption = None,
    session: SessionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply quarantined events again, each session in log order, after their cause is fixed.

    A session stops at the first event that fails again (it stays quarantined with the new
    error, its later events behind it). Exits 0 when nothing remains quarantined for the
    selection, 1 when some events still fail."""
    with _reported_errors(), _opened() as (_settings, log, views):
        chosen = select(all_projections(), [projection] if projection else [])
        results = retry(log, views, chosen, session_id=session)
    remaining = sum(r.remaining for r in results)
    if as_json:
        _print_json([_retry_json(r) for r in results])
    else:
        out = _console()
        out.print(retry_table(results))
        for r in results:
            for q in r.failing:
                out.print(
                    f"{r.projection}: event {q.event_id} (session {q.session_id} v{q.version}, "
                    f"position {q.position}) still fails: {q.error}",
                    soft_wrap=True,
                )
        released = sum(r.released for r in results)
        out.print(f"released {released} events; {remaining} remain quarantined", soft_wrap=True)
    if remaining:
        raise typer.Exit(EXIT_REQUEST)
