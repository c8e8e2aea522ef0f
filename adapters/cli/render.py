"""Rich rendering of sessions and their events (tables, one-line summaries), and the formats
of times, durations and values every table shares."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sessionstore.adapters.demo import DemoSummary
from sessionstore.adapters.settings import Settings
from sessionstore.domain.ports import RecordedEvent
from sessionstore.domain.session import Session, SessionStatus
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
from sessionstore.projections.queries import AgentMetrics, SessionPage, TranscriptEntry

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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


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
