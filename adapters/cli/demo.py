"""``sessionstore demo``: simulate sessions, then show what the log and the views recorded."""

from __future__ import annotations

from typing import Annotated

import typer

from sessionstore.adapters.bootstrap import migrate, open_log, open_queries, open_views
from sessionstore.adapters.cli.common import _console, _print_migrations, _reported_errors
from sessionstore.adapters.cli.render import demo_metrics_table, render_demo
from sessionstore.adapters.demo import DEFAULT_SESSIONS, MAX_SESSIONS, DemoSummary, run_demo
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.projections import all_projections
from sessionstore.projections.queries import AgentMetrics
from sessionstore.projections.runner import ProjectionRunner


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
