"""Hypothesis strategies for events, shared by the property and unit tests.

``STRATEGIES`` draws every event its class accepts (types only: NUL characters, lone
surrogates are impossible in Python strings drawn by codec="utf-8" but NUL is not, huge
token counts): what the codec must round-trip. ``CONTRACT_STRATEGIES`` draws only events that
satisfy the input contract (``domain.contract``): what every entry accepts and every backend
and view must then store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from sessionstore.domain.contract import MAX_TOKENS
from sessionstore.events.catalogue import (
    Channel,
    ContextUpdated,
    EndStatus,
    InterruptReason,
    MessageAdded,
    Modality,
    Role,
    SessionCreated,
    SessionEnded,
    SessionEvent,
    SessionInterrupted,
    SessionPolicy,
    SessionResumed,
    ToolCall,
    TurnRecorded,
)

offsets = st.sampled_from([0, 60, -300, 330, 525, 840]).map(
    lambda minutes: UTC if minutes == 0 else timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - bounds of st.datetimes are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=offsets,
)
milliseconds = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
positive_or_none = st.none() | st.integers(min_value=1, max_value=10**9)


def _json_objects(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | text
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )
    return st.dictionaries(text, values, max_size=5)


def event_strategies(
    *, within_contract: bool
) -> dict[type[SessionEvent], st.SearchStrategy[SessionEvent]]:
    """One strategy per event type (see the module docstring)."""
    # Text as agents send it: any Unicode that UTF-8 can carry (emoji, RTL, CJK, control
    # characters) and, outside the contract, NUL too.
    chars = st.characters(codec="utf-8", exclude_characters="\x00" if within_contract else "")
    text = st.text(chars, max_size=60)
    identifiers = st.text(chars, min_size=1, max_size=40)
    json_objects = _json_objects(text)
    token_counts = st.none() | st.integers(
        min_value=0, max_value=MAX_TOKENS if within_contract else 2**40
    )
    tool_calls = st.builds(ToolCall, id=identifiers, name=identifiers, arguments=json_objects)
    common: dict[str, Any] = {
        "session_id": st.uuids(),
        "version": st.integers(min_value=1, max_value=2**31),
        "occurred_at": aware_datetimes,
        "event_id": st.uuids(),
    }
    return {
        SessionCreated: st.builds(
            SessionCreated,
            **common,
            tenant_id=identifiers,
            user_id=identifiers,
            agent_id=identifiers,
            channel=st.sampled_from(Channel),
            metadata=json_objects,
            policy=st.builds(
                SessionPolicy,
                idle_timeout_seconds=positive_or_none,
                ttl_seconds=positive_or_none,
                retention_days=positive_or_none,
            ),
        ),
        MessageAdded: st.builds(
            MessageAdded,
            **common,
            message_id=identifiers,
            role=st.sampled_from(Role),
            content=text,
            tool_calls=st.lists(tool_calls, max_size=3).map(tuple),
            tool_call_id=st.none() | identifiers,
            input_tokens=token_counts,
            output_tokens=token_counts,
            modality=st.sampled_from(Modality),
            language=st.none() | st.text(chars, min_size=2, max_size=35),
        ),
        TurnRecorded: st.builds(
            TurnRecorded,
            **common,
            request_id=identifiers,
            duration_ms=milliseconds,
            stt_ms=st.none() | milliseconds,
            llm_ms=st.none() | milliseconds,
            tts_ms=st.none() | milliseconds,
            tool_ms=st.none() | milliseconds,
            input_tokens=token_counts,
            output_tokens=token_counts,
            error=st.booleans(),
            error_type=st.none() | identifiers,
        ),
        ContextUpdated: st.builds(
            ContextUpdated,
            **common,
            set=json_objects,
            removed=st.lists(text, max_size=4).map(tuple),
        ),
        SessionInterrupted: st.builds(
            SessionInterrupted,
            **common,
            reason=st.sampled_from(InterruptReason),
            detail=text,
            aborted_tool_calls=st.lists(identifiers, max_size=3).map(tuple),
        ),
        SessionResumed: st.builds(
            SessionResumed,
            **common,
            resume_count=st.integers(min_value=1, max_value=10**6),
            seconds_interrupted=st.floats(min_value=0, max_value=1e9, allow_nan=False),
        ),
        SessionEnded: st.builds(
            SessionEnded,
            **common,
            status=st.sampled_from(EndStatus),
            reason=text,
            aborted_tool_calls=st.lists(identifiers, max_size=3).map(tuple),
        ),
    }


STRATEGIES = event_strategies(within_contract=False)
CONTRACT_STRATEGIES = event_strategies(within_contract=True)
text = st.text(st.characters(codec="utf-8"), max_size=60)
identifiers = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
contract_identifiers = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40
)
