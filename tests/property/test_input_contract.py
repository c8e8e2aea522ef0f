"""The input contract is enough: whatever it accepts can be stored everywhere.

Hypothesis throws adversarial requests at a real store on SQLite and on a real PostgreSQL:
text with NUL, lone surrogates and characters from every Unicode plane; integers and floats at
and beyond every edge; JSON nested around the depth limit and wide. For each request:

- refused: it is ``InvalidInput`` (or a subclass) naming fields, and the log is unchanged;
- accepted: the event is in the log, every view applies it (the runner catches up to the log
  head and quarantines nothing), the session reads back from the views, the event survives the trip
  through a Kafka message, and an export of the session imports into a second database with
  the same stored hashes.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from psycopg import sql

from sessionstore.adapters.audit import export, import_log
from sessionstore.adapters.bootstrap import build_store, migrate, open_log, open_views
from sessionstore.adapters.kafka.messages import decode, encode
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.domain.contract import MAX_TOKENS, MAX_TURN_MS
from sessionstore.domain.errors import InvalidInput
from sessionstore.domain.ports import EventLog
from sessionstore.domain.store import SessionStore
from sessionstore.events.codec import EventCodec
from sessionstore.projections import all_projections
from sessionstore.projections.base import ViewStore
from sessionstore.projections.runner import ProjectionRunner

pytestmark = pytest.mark.slow

# -- adversarial values -------------------------------------------------------------------------

SPECIAL_CHARACTERS = [
    "\x00",
    "\ud800",
    "\udfff",
    "\ud83d",
    "\x7f",
    "\u2028",
    "\ufeff",
    "\uffff",
    "\U0001f600",
    "\U0010ffff",
    "\U000e0001",
    "'",
    '"',
    "\\",
    "%",
]
characters = st.one_of(
    st.characters(),  # every plane
    st.characters(codec="utf-8"),
    st.sampled_from(SPECIAL_CHARACTERS),
)
texts = st.text(characters, max_size=24)
identifiers = st.text(characters, min_size=1, max_size=12)
INTEGER_EDGES = [
    0,
    -1,
    MAX_TOKENS,
    MAX_TOKENS + 1,
    2**31,
    2**53 + 1,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**29,
]
FLOAT_EDGES = [
    0.0,
    -0.0,
    5e-324,
    1e308,
    -1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    MAX_TURN_MS,
    MAX_TURN_MS * 1.0001,
]
integers = st.one_of(st.sampled_from(INTEGER_EDGES), st.integers())
floats = st.one_of(st.sampled_from(FLOAT_EDGES), st.floats())
scalars = st.none() | st.booleans() | integers | floats | texts


def nested(depth: int, leaf: object) -> object:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


json_values = st.one_of(
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=8,
    ),
    st.builds(nested, st.integers(min_value=28, max_value=36), scalars),
    st.dictionaries(st.text(max_size=6), st.integers(), min_size=0, max_size=300),
)
json_objects = st.dictionaries(texts, json_values, max_size=4)

Request = Callable[[SessionStore, uuid.UUID], object]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, Request]:
    """One adversarial request against a fresh active session, with a label for the report."""
    kind = draw(st.sampled_from(["create", "message", "tools", "context", "turn", "end"]))
    if kind == "create":
        fields = {
            "tenant_id": draw(identifiers),
            "user_id": draw(identifiers),
            "agent_id": draw(identifiers),
            "metadata": draw(json_objects),
        }
        return kind, lambda s, _sid: s.create(**fields)
    if kind == "message":
        message = {
            "content": draw(texts.filter(str.strip)),
            "message_id": draw(st.none() | identifiers),
            "input_tokens": draw(st.none() | integers),
        }
        return kind, lambda s, sid: s.add_message(sid, role="user", **message)
    if kind == "tools":
        call = {"id": draw(identifiers), "name": draw(identifiers), "arguments": draw(json_objects)}
        return kind, lambda s, sid: s.add_message(sid, role="assistant", tool_calls=[call])
    if kind == "context":
        update = draw(json_objects.filter(bool))
        return kind, lambda s, sid: s.update_context(sid, set=update)
    if kind == "turn":
        turn = {
            "request_id": draw(identifiers),
            "duration_ms": draw(floats),
            "llm_ms": draw(st.none() | floats),
            "output_tokens": draw(st.none() | integers),
        }
        return kind, lambda s, sid: s.record_turn(sid, **turn)
    reason = draw(texts)
    return kind, lambda s, sid: s.end(sid, status="failed", reason=reason)


# -- the databases ------------------------------------------------------------------------------


@dataclass
class Backend:
    settings: Settings
    store: SessionStore
    views: ViewStore
    target: EventLog
    """A second database of the same backend that exports are imported into."""

    def runner(self) -> ProjectionRunner:
        return ProjectionRunner(self.store.log, self.views, all_projections())


def _open(source: Settings, target: Settings) -> Iterator[Backend]:
    migrate(source)
    migrate(target)
    backend = Backend(source, build_store(source), open_views(source), open_log(target))
    try:
        yield backend
    finally:
        backend.store.close()
        backend.views.close()
        backend.target.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    if request.param == "sqlite":
        folder: Path = tmp_path_factory.mktemp("contract")
        yield from _open(
            load_settings(database_url=f"sqlite:///{folder / 'source.db'}"),
            load_settings(database_url=f"sqlite:///{folder / 'target.db'}"),
        )
        return
    url: str = request.getfixturevalue("pg_url")
    schemas = [f"t_{uuid.uuid4().hex[:16]}" for _ in range(2)]
    try:
        yield from _open(
            *(load_settings(database_url=url, database_schema=schema) for schema in schemas)
        )
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


CODEC = EventCodec()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_what_the_contract_accepts_every_backend_and_view_stores(
    backend: Backend, request: tuple[str, Request]
) -> None:
    kind, call = request
    store, log = backend.store, backend.store.log
    sid = store.create(tenant_id="t", user_id="u", agent_id="a").session_id
    head = log.head()
    try:
        call(store, sid)
    except InvalidInput as refused:
        errors = refused.errors
        note(f"{kind} refused: {errors}")
        assert errors
        assert all(e["field"] for e in errors)
        assert log.head() == head, "a refused request must write nothing"
        return
    note(f"{kind} accepted")
    assert log.count_after(head) == 1
    # Every view applies it (on PostgreSQL a NUL or an out-of-range integer would fail here).
    backend.runner().catch_up()
    statuses = backend.runner().status()
    assert all(s.lag_events == 0 for s in statuses)
    assert all(s.quarantined == 0 for s in statuses), "accepted input must never be quarantined"
    touched = log.read_log(head)
    # It travels through Kafka unchanged, and passes the consumer's contract check.
    for recorded in touched:
        message = encode(recorded)
        assert decode(message.value, CODEC, message.key, limits=store.limits) == recorded
    # An export of each touched session imports into a second database, hashes intact.
    for session_id in {r.event.session_id for r in touched}:
        out = io.StringIO()
        export(log, out, session_id=session_id)
        # split("\n"), not splitlines(): text may hold U+2028 and other line separators,
        # which JSON leaves unescaped; only "\n" ends an export line (as `audit import` reads).
        lines = out.getvalue().split("\n")[:-1]
        import_log(backend.target, lines, limits=store.limits)
        assert [r.hash for r in backend.target.stored_rows(session_id)] == [
            r.hash for r in log.stored_rows(session_id)
        ]


def test_the_strategies_reach_both_outcomes(backend: Backend) -> None:
    """A guard on the generator: refused and accepted requests both occur (else the property
    above could pass by refusing everything)."""
    outcomes: dict[bool, int] = {True: 0, False: 0}

    @settings(max_examples=40, deadline=None, database=None)
    @given(request=requests())
    def probe(request: tuple[str, Request]) -> None:
        _kind, call = request
        sid = backend.store.create(tenant_id="t", user_id="u", agent_id="a").session_id
        try:
            call(backend.store, sid)
        except InvalidInput:
            outcomes[False] += 1
        else:
            outcomes[True] += 1

    probe()
    assert outcomes[True] > 0
    assert outcomes[False] > 0
