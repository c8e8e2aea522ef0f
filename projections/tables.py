"""The view tables, declared once for every backend (see ``projections.base.Table``)."""

from __future__ import annotations

from sessionstore.projections.base import Column, Table


def _c(name: str, type_: str, *, null: bool = False) -> Column:
    return Column(name, type_, nullable=null)  # type: ignore[arg-type]


SESSION_STATE = Table(
    name="session_state",
    columns=(
        _c("session_id", "uuid"),
        _c("tenant_id", "text"),
        _c("user_id", "text"),
        _c("agent_id", "text"),
        _c("channel", "text"),
        _c("status", "text"),
        _c("end_status", "text", null=True),
        _c("end_reason", "text", null=True),
        _c("created_at", "timestamp"),
        _c("last_activity_at", "timestamp"),
        _c("interrupted_at", "timestamp", null=True),
        _c("ended_at", "timestamp", null=True),
        _c("version", "int"),
        _c("last_position", "int"),
        _c("message_count", "int"),
        _c("turn_count", "int"),
        _c("error_turn_count", "int"),
        _c("interrupt_count", "int"),
        _c("resume_count", "int"),
        _c("input_tokens", "int"),
        _c("output_tokens", "int"),
        _c("open_tool_calls", "json"),  # [{"id", "name", "arguments"}] still unanswered
        _c("last_message_role", "text", null=True),
        _c("last_message_preview", "text", null=True),
        _c("context", "json"),
        _c("metadata", "json"),
        _c("policy", "json"),  # {"idle_timeout_seconds", "ttl_seconds", "retention_days"}
    ),
    key=("session_id",),
    indexes=(
        ("tenant_id", "created_at", "session_id"),
        ("tenant_id", "status", "created_at", "session_id"),
        ("tenant_id", "user_id", "created_at", "session_id"),
        ("tenant_id", "agent_id", "created_at", "session_id"),
        ("last_activity_at",),
        ("created_at", "session_id"),  # listing across tenants (operators, the CLI)
    ),
)

TRANSCRIPT = Table(
    name="transcript",
    columns=(
        _c("session_id", "uuid"),
        _c("version", "int"),  # the version of the event that produced the entry
        _c("seq", "int"),  # 0 for a message; 1.. for each tool call an interrupt/end aborted
        _c("position", "int"),
        _c("tenant_id", "text"),
        _c("message_id", "text", null=True),
        _c("role", "text"),
        _c("content", "text"),
        _c("tool_calls", "json"),  # [] or [{"id", "name", "arguments"}]
        _c("tool_call_id", "text", null=True),
        _c("aborted", "bool"),  # true: a synthetic tool result recording an aborted call
        _c("occurred_at", "timestamp"),
        _c("input_tokens", "int", null=True),
        _c("output_tokens", "int", null=True),
        _c("modality", "text"),  # MessageAdded v2: text, audio or image ("text" for v1 rows)
        _c("language", "text", null=True),  # MessageAdded v2: BCP 47 tag, if known
    ),
    key=("session_id", "version", "seq"),
)

SESSION_METRICS = Table(
    name="session_metrics",
    columns=(
        _c("session_id", "uuid"),
        _c("tenant_id", "text"),
        _c("agent_id", "text"),
        _c("requests", "int"),  # TurnRecorded events
        _c("errors", "int"),
        _c("total_ms", "float"),
        _c("stt_ms", "float"),
        _c("stt_count", "int"),
        _c("llm_ms", "float"),
        _c("llm_count", "int"),
        _c("tts_ms", "float"),
        _c("tts_count", "int"),
        _c("tool_ms", "float"),
        _c("tool_count", "int"),
        _c("input_tokens", "int"),
        _c("output_tokens", "int"),
        _c("first_turn_at", "timestamp", null=True),
        _c("last_turn_at", "timestamp", null=True),
    ),
    key=("session_id",),
)

AGENT_DAILY_METRICS = Table(
    name="agent_daily_metrics",
    columns=(
        _c("tenant_id", "text"),
        _c("agent_id", "text"),
        _c("day", "date"),  # UTC day of the events counted
        _c("sessions_started", "int"),
        _c("sessions_completed", "int"),
        _c("sessions_failed", "int"),
        _c("sessions_expired", "int"),
        _c("sessions_abandoned", "int"),
        _c("messages", "int"),
        _c("turns", "int"),
        _c("error_turns", "int"),
        _c("interrupts", "int"),
        _c("resumes", "int"),
        _c("total_ms", "float"),
        _c("stt_ms", "float"),
        _c("stt_count", "int"),
        _c("llm_ms", "float"),
        _c("llm_count", "int"),
        _c("tts_ms", "float"),
        _c("tts_count", "int"),
        _c("tool_ms", "float"),
        _c("tool_count", "int"),
        _c("input_tokens", "int"),
        _c("output_tokens", "int"),
        _c("latency_histogram", "json"),  # counts per bucket of projections.metrics.BUCKETS_MS
    ),
    key=("tenant_id", "agent_id", "day"),
    indexes=(("agent_id", "day"),),
)

SESSION_CLEANUP = Table(
    name="session_cleanup",
    columns=(
        _c("session_id", "uuid"),
        _c("tenant_id", "text"),
        _c("status", "text"),
        _c("version", "int"),
        _c("last_activity_at", "timestamp"),
        # The session's policy (from SessionCreated), kept so each event can move the deadlines.
        _c("idle_timeout_seconds", "int", null=True),
        _c("retention_days", "int", null=True),
        _c("idle_deadline", "timestamp", null=True),  # not ended: last activity + idle timeout
        _c("expires_at", "timestamp", null=True),  # not ended: created + ttl
        _c("retention_until", "timestamp", null=True),  # ended: ended + retention days
    ),
    key=("session_id",),
    indexes=(("idle_deadline",), ("expires_at",), ("retention_until",)),
)
