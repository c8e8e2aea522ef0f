"""``cleanup``: expire the sessions the cleanup view finds idle or past their TTL."""

from __future__ import annotations

from typing import Annotated

import typer

from sessionstore.adapters.bootstrap import open_queries
from sessionstore.adapters.cli.common import (
    JsonOption,
    TenantOption,
    _console,
    _opened,
    _reported_errors,
)
from sessionstore.adapters.cli.render_json import (
    _candidates_json,
    _print_json,
    _report_json,
    _status_json,
)
from sessionstore.adapters.cli.render_views import _lag_line, render_candidates, render_expiry
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import SessionStore, utc_now
from sessionstore.projections import all_projections
from sessionstore.projections.base import ProjectionStatus, ViewStore
from sessionstore.projections.expiry import expire_idle_sessions
from sessionstore.projections.runner import ProjectionRunner
from sessionstore.projections.tables import SESSION_CLEANUP


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


def _cleanup_view_status(log: EventLog, views: ViewStore) -> ProjectionStatus:
    projection = next(p for p in all_projections() if SESSION_CLEANUP in p.tables)
    return ProjectionRunner(log, views, [projection]).status()[0]
