"""Rich rendering of what the views report: projection status and positions, metrics,
cleanup candidates and results."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sessionstore.adapters.cli.render import _ms, _seconds, _time
from sessionstore.adapters.storage.processes import COMMANDS, ProcessRow
from sessionstore.domain.ports import EventLog
from sessionstore.projections.base import Projection, ProjectionStatus, Quarantined, ViewStore
from sessionstore.projections.expiry import ExpiryReport
from sessionstore.projections.quarantine import RetryResult
from sessionstore.projections.queries import (
    AgentMetrics,
    CleanupCandidate,
    CleanupCandidates,
    SessionMetrics,
    StageTimes,
)
from sessionstore.projections.runner import ProjectionRunner


def status_table(statuses: Sequence[ProjectionStatus]) -> Table:
    table = Table(title="Projections", title_justify="left", box=box.SIMPLE_HEAD)
    kafka = any(s.feed == "kafka" for s in statuses)
    # The quarantine column only when a view holds events in quarantine, so the healthy table
    # stays as it always was.
    quarantine = any(s.quarantined for s in statuses)
    headers = (
        ("projection", "generation", "position", "head", "lag")
        + (("quarantined",) if quarantine else ())
        + (("feed",) if kafka else ())
    )
    for header in headers:
        table.add_column(header, justify="left" if header in {"projection", "feed"} else "right")
    for s in statuses:
        if s.feed == "kafka":  # the log position is the last rebuild's; the group has the lag
            lag = Text("see --kafka", style="dim")
        else:
            lag = Text(str(s.lag_events), style="green" if s.lag_events == 0 else "yellow")
        row: list[str | Text] = [s.name, str(s.generation), str(s.cursor.position)]
        row += [str(s.head.position), lag]
        if quarantine:
            row.append(Text(str(s.quarantined), style="red" if s.quarantined else "green"))
        table.add_row(*row, *((s.feed,) if kafka else ()))
    return table


def processes_table(rows: Sequence[ProcessRow], title: str = "Processes") -> Table:
    """The status rows of running processes: state since when, the last error (or why it
    stopped), and how long ago the row was written (stale: three heartbeats missed)."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("process", "instance", "state", "since (UTC)", "heartbeat", "detail"):
        table.add_column(header)
    styles = {"running": "green", "starting": "yellow", "retrying": "yellow", "stopped": "red"}
    for row in rows:
        state = Text(row.state, style=styles.get(row.state, ""))
        if row.state == "retrying":
            state.append(f" ({row.attempts} attempts)")
        age = f"{row.age_seconds:.0f} s ago"
        heartbeat = Text(f"{age}, stale", style="red") if row.stale else Text(age)
        table.add_row(
            COMMANDS.get(row.kind, row.kind),
            row.instance,
            state,
            _seconds(row.since),
            heartbeat,
            row.detail,
        )
    return table


def quarantine_note(statuses: Sequence[ProjectionStatus]) -> str | None:
    """One line saying which views hold quarantined events and what to run, or None."""
    held = [s for s in statuses if s.quarantined]
    if not held:
        return None
    listed = ", ".join(f"{s.name} {s.quarantined}" for s in held)
    return (
        f"quarantined events (not applied; their sessions are held in those views): {listed}; "
        "see `sessionstore projections quarantine list`"
    )


def quarantine_table(rows: Sequence[Quarantined]) -> Table:
    table = Table(
        title=f"Quarantined events ({len(rows)})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    for header in ("projection", "gen", "position", "session", "ver", "type", "since (UTC)"):
        right = header in {"gen", "position", "ver"}
        table.add_column(header, no_wrap=True, justify="right" if right else "left")
    table.add_column("error", overflow="fold")
    for q in rows:
        error = Text(q.error, style="red") if q.held_behind is None else Text(q.error, style="dim")
        table.add_row(
            q.projection,
            str(q.generation),
            str(q.position),
            str(q.session_id),
            str(q.version),
            q.topic,
            _seconds(q.quarantined_at) if q.quarantined_at else "-",
            error,
        )
    return table


def retry_table(results: Sequence[RetryResult]) -> Table:
    table = Table(title="Quarantine retry", title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("projection", "generation", "released", "remaining"):
        table.add_column(header, justify="left" if header == "projection" else "right")
    for r in results:
        remaining = Text(str(r.remaining), style="red" if r.remaining else "green")
        table.add_row(r.projection, str(r.generation), str(r.released), remaining)
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
