"""``metrics``: turn metrics per session and per agent, from the metrics view."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from sessionstore.adapters.cli.common import (
    JsonOption,
    SessionIdArg,
    TenantOption,
    _console,
    _queries,
    _reported_errors,
    parse_day,
)
from sessionstore.adapters.cli.render_json import _dataclass_json, _print_json
from sessionstore.adapters.cli.render_views import agent_metrics_table, session_metrics_table

metrics_app = typer.Typer(
    help="Turn metrics from the metrics view: per session, per agent.", no_args_is_help=True
)


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
