"""Command models: the shape of every request, and the fingerprints idempotency relies on."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar
from uuid import UUID

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from sessionstore.domain.commands import (
    AddMessage,
    Command,
    CreateSession,
    End,
    Interrupt,
    RecordTurn,
    Resume,
    UpdateContext,
)
from sessionstore.events.catalogue import (
    Channel,
    EndStatus,
    Modality,
    Role,
    SessionPolicy,
    ToolCall,
)

CREATE = {"tenant_id": "acme", "user_id": "u-1", "agent_id": "bot"}
CALL = {"id": "call-1", "name": "get_weather", "arguments": {"city": "Zürich"}}


def problems(error: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) of each problem pydantic reports."""
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in error.errors()]


# ---------------------------------------------------------------------------------------------
# CreateSession


def test_create_session_defaults_to_text_an_empty_metadata_and_the_default_policy() -> None:
    command = CreateSession(**CREATE)

    assert command.channel is Channel.TEXT
    assert command.metadata == {}
    assert command.policy == SessionPolicy(idle_timeout_seconds=1800)
    assert command.session_id is None


def test_create_session_accepts_a_client_chosen_id_as_text() -> None:
    command = CreateSession(**CREATE, session_id="6f1c1b3e-6c39-4d55-9a3f-53a9b7a0d3c1")

    assert command.session_id == UUID("6f1c1b3e-6c39-4d55-9a3f-53a9b7a0d3c1")


@pytest.mark.parametrize("field", ["tenant_id", "user_id", "agent_id"])
@pytest.mark.parametrize("bad", ["", "x" * 201, 7, None])
def test_create_session_needs_ids_of_one_to_two_hundred_characters(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        CreateSession(**{**CREATE, field: bad})

    assert [loc for loc, _ in problems(info.value)] == [field]


def test_an_id_of_exactly_two_hundred_characters_is_fine() -> None:
    assert CreateSession(**{**CREATE, "user_id": "u" * 200}).user_id == "u" * 200


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("channel", "fax"),
        ("session_id", "not-a-uuid"),
        ("metadata", ["not", "a", "mapping"]),
        ("policy", {"idle_timeout_seconds": 0}),
        ("policy", {"ttl_seconds": -1}),
        ("policy", {"retention_days": 0}),
        ("policy", {"idle_minutes": 5}),
    ],
)
def test_create_session_rejects_bad_fields(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        CreateSession(**{**CREATE, field: bad})

    assert all(loc.startswith(field) for loc, _ in problems(info.value))


def test_a_policy_without_idle_timeout_is_allowed() -> None:
    command = CreateSession(**CREATE, policy={"idle_timeout_seconds": None, "ttl_seconds": 60})

    assert command.policy.idle_timeout_seconds is None
    assert command.policy.ttl_seconds == 60


def test_unknown_fields_are_an_error_not_silently_dropped() -> None:
    with pytest.raises(ValidationError) as info:
        CreateSession(**CREATE, tenant="typo")  # type: ignore[call-arg]

    assert problems(info.value)[0][0] == "tenant"


def test_commands_are_frozen() -> None:
    command = CreateSession(**CREATE)

    with pytest.raises(ValidationError):
        command.user_id = "someone-else"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# AddMessage


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_a_plain_message_needs_a_role_and_content(role: str) -> None:
    command = AddMessage(role=role, content="hello")

    assert command.role is Role(role)
    assert command.tool_calls == ()
    assert command.tool_call_id is None


@pytest.mark.parametrize("role", ["", "robot", "USER", None, 1])
def test_the_role_must_be_one_of_the_four_roles(role: Any) -> None:
    with pytest.raises(ValidationError) as info:
        AddMessage(role=role, content="hello")

    assert problems(info.value)[0][0] == "role"


@pytest.mark.parametrize("content", ["", "   ", "\n\t"])
@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_empty_or_blank_content_is_rejected(role: str, content: str) -> None:
    with pytest.raises(ValidationError, match="content must not be empty"):
        AddMessage(role=role, content=content)


def test_empty_content_is_rejected_for_tool_results_too() -> None:
    with pytest.raises(ValidationError, match="content must not be empty"):
        AddMessage(role="tool", content="", tool_call_id="call-1")


@pytest.mark.parametrize("content", [42, None, ["hello"], {"text": "hello"}, b"hello"])
def test_content_must_be_text(content: Any) -> None:
    with pytest.raises(ValidationError) as info:
        AddMessage(role="user", content=content)

    assert problems(info.value)[0][0] == "content"


def test_an_assistant_message_may_carry_only_tool_calls() -> None:
    command = AddMessage(role="assistant", tool_calls=[CALL])

    assert command.content == ""
    assert command.tool_calls == (ToolCall(**CALL),)


@pytest.mark.parametrize("role", ["system", "user", "tool"])
def test_only_assistant_messages_may_carry_tool_calls(role: str) -> None:
    extra = {"tool_call_id": "call-0"} if role == "tool" else {}

    with pytest.raises(ValidationError, match=f"only allowed on assistant messages, not {role}"):
        AddMessage(role=role, content="x", tool_calls=[CALL], **extra)


def test_a_tool_message_must_name_the_call_it_answers() -> None:
    with pytest.raises(ValidationError, match="needs tool_call_id"):
        AddMessage(role="tool", content="42")


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_only_tool_messages_may_name_a_tool_call_id(role: str) -> None:
    with pytest.raises(ValidationError, match=f"only allowed on tool messages, not {role}"):
        AddMessage(role=role, content="x", tool_call_id="call-1")


def test_tool_call_ids_must_be_unique_within_a_message() -> None:
    with pytest.raises(ValidationError, match="tool call ids must be unique"):
        AddMessage(role="assistant", tool_calls=[CALL, {**CALL, "name": "other"}])


@pytest.mark.parametrize(
    "call",
    [
        {"id": "", "name": "f"},
        {"id": "c", "name": ""},
        {"id": "c"},
        {"id": "c", "name": "f", "arguments": "not-a-dict"},
        {"id": "c", "name": "f", "extra": 1},
        "call-1",
    ],
)
def test_tool_calls_must_have_the_openai_shape(call: Any) -> None:
    with pytest.raises(ValidationError) as info:
        AddMessage(role="assistant", tool_calls=[call])

    assert problems(info.value)[0][0].startswith("tool_calls.0")


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens"])
@pytest.mark.parametrize("bad", [-1, "many", 1.5])
def test_token_counts_are_non_negative_integers(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        AddMessage(role="user", content="x", **{field: bad})

    assert problems(info.value)[0][0] == field


def test_a_tool_result_with_its_call_id_and_token_counts_is_valid() -> None:
    command = AddMessage(
        role="tool", content='{"temp": 21}', tool_call_id="call-1", input_tokens=0, output_tokens=3
    )

    assert (command.tool_call_id, command.input_tokens, command.output_tokens) == ("call-1", 0, 3)


def test_a_message_is_text_in_an_unknown_language_unless_told_otherwise() -> None:
    command = AddMessage(role="user", content="hi")

    assert (command.modality, command.language) == (Modality.TEXT, None)


@pytest.mark.parametrize("modality", ["text", "audio", "image"])
@pytest.mark.parametrize("language", ["en", "de-CH", "zh-Hant-TW", "es-419", "sl-rozaj-biske"])
def test_a_message_may_say_how_it_was_expressed_and_in_which_language(
    modality: str, language: str
) -> None:
    command = AddMessage(role="user", content="hi", modality=modality, language=language)

    assert (command.modality, command.language) == (Modality(modality), language)


@pytest.mark.parametrize("bad", ["video", "TEXT", "", None, 1])
def test_the_modality_must_be_text_audio_or_image(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        AddMessage(role="user", content="hi", modality=bad)

    assert [loc for loc, _ in problems(info.value)] == ["modality"]


@pytest.mark.parametrize(
    "bad",
    ["e", "e1", "en_US", "en-", "-en", "en--US", "en US", "x-private", "de-CH-1", "a" * 36],
)
def test_the_language_must_be_a_bcp47_tag(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        AddMessage(role="user", content="hi", language=bad)

    assert [loc for loc, _ in problems(info.value)] == ["language"]


def test_the_language_must_be_text() -> None:
    with pytest.raises(ValidationError) as info:
        AddMessage(role="user", content="hi", language=["en"])

    assert [loc for loc, _ in problems(info.value)] == ["language"]


def test_a_message_without_the_v2_fields_keeps_the_fingerprint_it_had_before_them() -> None:
    """An idempotency key stored by the code before ``modality`` and ``language`` existed must
    still recognise the retry of the same request after an upgrade."""
    before_v2 = hashlib.sha256(b'add_message:{"content":"hi","role":"user","tool_calls":[]}')

    assert AddMessage(role="user", content="hi").fingerprint() == before_v2.hexdigest()
    assert AddMessage(role="user", content="hi", modality="text").fingerprint() == (
        before_v2.hexdigest()
    )


# ---------------------------------------------------------------------------------------------
# RecordTurn


def test_a_turn_needs_a_request_id_and_a_duration() -> None:
    command = RecordTurn(request_id="req-1", duration_ms=0)

    assert (command.duration_ms, command.error, command.error_type) == (0.0, False, None)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("request_id", ""),
        ("duration_ms", -0.5),
        ("duration_ms", float("nan")),
        ("duration_ms", float("inf")),
        ("duration_ms", "fast"),
        ("stt_ms", -1),
        ("llm_ms", float("inf")),
        ("tts_ms", -1),
        ("tool_ms", float("nan")),
        ("input_tokens", -3),
    ],
)
def test_a_turn_rejects_bad_measurements(field: str, bad: Any) -> None:
    fields: dict[str, Any] = {"request_id": "r", "duration_ms": 10, field: bad}

    with pytest.raises(ValidationError) as info:
        RecordTurn(**fields)

    assert problems(info.value)[0][0] == field


def test_an_error_type_needs_the_error_flag() -> None:
    with pytest.raises(ValidationError, match="error_type is only allowed when error is true"):
        RecordTurn(request_id="r", duration_ms=1, error_type="timeout")


def test_a_failed_turn_may_name_its_error_type() -> None:
    command = RecordTurn(request_id="r", duration_ms=1, error=True, error_type="llm_timeout")

    assert (command.error, command.error_type) == (True, "llm_timeout")


# ---------------------------------------------------------------------------------------------
# UpdateContext


def test_a_context_update_must_set_or_remove_something() -> None:
    with pytest.raises(ValidationError, match="must set or remove at least one key"):
        UpdateContext()


def test_a_key_cannot_be_set_and_removed_at_once() -> None:
    with pytest.raises(ValidationError, match="keys both set and removed: a, b"):
        UpdateContext(set={"b": 1, "a": 2, "c": 3}, remove=("a", "b"))


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_context_keys_have_one_to_two_hundred_characters(key: str) -> None:
    with pytest.raises(ValidationError):
        UpdateContext(set={key: 1})
    with pytest.raises(ValidationError):
        UpdateContext(remove=(key,))


def test_context_values_may_be_any_json_including_null() -> None:
    command = UpdateContext(set={"a": None, "b": [1, 2.5, "x", True, {"c": None}]})

    assert command.set == {"a": None, "b": [1, 2.5, "x", True, {"c": None}]}


def test_context_values_must_be_json() -> None:
    with pytest.raises(ValidationError):
        UpdateContext(set={"a": object()})


# ---------------------------------------------------------------------------------------------
# Interrupt, Resume, End


def test_an_interrupt_needs_a_known_reason() -> None:
    assert Interrupt(reason="barge_in").detail == ""
    with pytest.raises(ValidationError) as info:
        Interrupt(reason="coffee_break")

    assert problems(info.value)[0][0] == "reason"


def test_details_and_reasons_are_limited_to_two_thousand_characters() -> None:
    assert len(Interrupt(reason="error", detail="d" * 2000).detail) == 2000
    with pytest.raises(ValidationError):
        Interrupt(reason="error", detail="d" * 2001)
    with pytest.raises(ValidationError):
        End(reason="r" * 2001)


def test_end_defaults_to_completed() -> None:
    assert End().status is EndStatus.COMPLETED


@pytest.mark.parametrize("status", ["", "done", "ended"])
def test_end_needs_a_known_status(status: str) -> None:
    with pytest.raises(ValidationError):
        End(status=status)


def test_resume_takes_no_fields() -> None:
    with pytest.raises(ValidationError):
        Resume(reason="back")  # type: ignore[call-arg]


# ---------------------------------------------------------------------------------------------
# Fingerprints: a retry is recognised, a different request is not


def test_the_same_request_has_the_same_fingerprint() -> None:
    first = AddMessage(role="assistant", content="x", tool_calls=[CALL], output_tokens=5)
    again = AddMessage(role="assistant", content="x", tool_calls=[CALL], output_tokens=5)

    assert first.fingerprint() == again.fingerprint()
    assert len(first.fingerprint()) == 64


def test_equal_requests_with_keys_in_another_order_have_the_same_fingerprint() -> None:
    first = UpdateContext(set={"a": 1, "b": {"x": 1, "y": 2}})
    again = UpdateContext(set={"b": {"y": 2, "x": 1}, "a": 1})

    assert first == again
    assert first.fingerprint() == again.fingerprint()


def test_an_omitted_optional_field_and_an_explicit_none_are_the_same_request() -> None:
    assert (
        AddMessage(role="user", content="x").fingerprint()
        == AddMessage(role="user", content="x", input_tokens=None, message_id=None).fingerprint()
    )


def test_a_default_spelled_out_is_the_same_request() -> None:
    assert End().fingerprint() == End(status="completed", reason="").fingerprint()
    assert (
        CreateSession(**CREATE).fingerprint()
        == CreateSession(**CREATE, channel="text", metadata={}).fingerprint()
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (AddMessage(role="user", content="x"), AddMessage(role="user", content="y")),
        (AddMessage(role="user", content="x"), AddMessage(role="system", content="x")),
        (
            AddMessage(role="user", content="x"),
            AddMessage(role="user", content="x", message_id="m"),
        ),
        (
            AddMessage(role="user", content="x"),
            AddMessage(role="user", content="x", input_tokens=0),
        ),
        (
            AddMessage(role="user", content="x"),
            AddMessage(role="user", content="x", modality="audio"),
        ),
        (
            AddMessage(role="user", content="x"),
            AddMessage(role="user", content="x", language="en"),
        ),
        (UpdateContext(set={"a": None}), UpdateContext(set={"a": "None"})),
        (UpdateContext(set={"a": None}), UpdateContext(remove=("a",))),
        (UpdateContext(set={"a": 1}), UpdateContext(set={"a": 1.5})),
        (UpdateContext(set={"a": [1, 2]}), UpdateContext(set={"a": [2, 1]})),
        (RecordTurn(request_id="r", duration_ms=1), RecordTurn(request_id="r", duration_ms=2)),
        (End(status="completed"), End(status="failed")),
        (End(reason="a"), End(reason="b")),
        (Interrupt(reason="timeout"), Interrupt(reason="error")),
        (CreateSession(**CREATE), CreateSession(**{**CREATE, "user_id": "u-2"})),
        (
            CreateSession(**CREATE),
            CreateSession(**CREATE, policy={"idle_timeout_seconds": None}),
        ),
        (
            CreateSession(**CREATE),
            CreateSession(**CREATE, session_id="6f1c1b3e-6c39-4d55-9a3f-53a9b7a0d3c1"),
        ),
    ],
    ids=[
        "content",
        "role",
        "message id",
        "token count given",
        "modality",
        "language",
        "null vs string",
        "set null vs remove",
        "int vs float",
        "list order",
        "duration",
        "end status",
        "end reason",
        "interrupt reason",
        "user",
        "policy",
        "client-chosen id",
    ],
)
def test_different_requests_have_different_fingerprints(first: Command, second: Command) -> None:
    assert first != second
    assert first.fingerprint() != second.fingerprint()


def test_the_command_name_is_part_of_the_fingerprint() -> None:
    class Pause(Resume):
        name: ClassVar[str] = "pause"

    assert Pause() == Pause()
    assert Pause().model_dump() == Resume().model_dump()
    assert Pause().fingerprint() != Resume().fingerprint()


def test_every_command_has_its_own_stable_name() -> None:
    names = [c.name for c in (CreateSession, AddMessage, RecordTurn, UpdateContext)]
    names += [c.name for c in (Interrupt, Resume, End)]

    assert names == [
        "create",
        "add_message",
        "record_turn",
        "update_context",
        "interrupt",
        "resume",
        "end",
    ]


json_keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(json_keys, children, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(json_keys, json_values, min_size=1, max_size=6), st.randoms())
def test_equal_context_updates_always_have_equal_fingerprints(
    values: dict[str, Any], random: Any
) -> None:
    shuffled = list(values.items())
    random.shuffle(shuffled)

    first, again = UpdateContext(set=values), UpdateContext(set=dict(shuffled))

    assert first == again
    assert first.fingerprint() == again.fingerprint()


@given(json_values, json_values)
def test_different_context_values_never_share_a_fingerprint(a: Any, b: Any) -> None:
    assume(a != b)

    assert UpdateContext(set={"k": a}).fingerprint() != UpdateContext(set={"k": b}).fingerprint()


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("duration_ms", "5"),
        ("llm_ms", "120.5"),
        ("input_tokens", "12"),
        ("input_tokens", 12.0),
        ("request_id", 7),
        ("error", "yes"),
        ("error", 1),
    ],
)
def test_wrong_types_are_rejected_not_converted(field: str, bad: Any) -> None:
    fields: dict[str, Any] = {"request_id": "r1", "duration_ms": 10}
    fields[field] = bad
    with pytest.raises(ValidationError) as info:
        RecordTurn(**fields)

    assert problems(info.value)[0][0] == field


def test_an_integer_is_still_a_fine_number_of_milliseconds() -> None:
    assert RecordTurn(request_id="r1", duration_ms=10, llm_ms=7).llm_ms == 7.0
