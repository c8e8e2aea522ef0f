"""The supervision of long-running loops (projections/supervision.py) with a fake clock: the
back-off policy, what resets it, what is reported when, and which errors are retried."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sessionstore.adapters.storage.postgres.refusals import misconfiguration
from sessionstore.domain.errors import (
    BrokerUnavailable,
    DatabaseMisconfigured,
    ProjectionFedFromKafka,
    ProjectionOutdated,
    SchemaNotReady,
    StorageError,
    StorageRejected,
)
from sessionstore.projections.supervision import (
    Backoff,
    ProcessState,
    Supervisor,
    cause,
    transient,
)

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
DOWN = StorageError("postgresql://u:***@db:5432/x (schema public): database error: refused")
BROKERS = BrokerUnavailable("k1:9092", "no broker answered")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t - 1000.0)


def supervised(**kwargs: object) -> tuple[Supervisor, Clock, list[str]]:
    clock, lines = Clock(), []
    supervisor = Supervisor(
        "projections run",
        report=lines.append,
        clock=clock,
        now=clock.now,
        rand=lambda: 0.5,  # no jitter: the middle of [0.8, 1.2]
        **kwargs,  # type: ignore[arg-type]
    )
    return supervisor, clock, lines


def test_the_back_off_doubles_from_a_fifth_of_a_second_up_to_its_cap() -> None:
    policy = Backoff()
    assert [policy.delay(n, 0.5) for n in range(1, 10)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0]
    )
    assert policy.delay(10_000, 0.5) == 30.0  # no overflow, however long the outage
    assert policy.delay(3, 0.0) == pytest.approx(0.8 * 0.8)  # jitter: -20 % ...
    assert policy.delay(3, 0.999999) == pytest.approx(0.8 * 1.2, rel=1e-5)  # ... to +20 %
    assert policy.delay(9, 0.999999) == 30.0  # never beyond the cap
    assert Backoff(cap=1.0).delay(5, 0.5) == 1.0


def test_failures_back_off_further_and_only_a_success_resets_the_streak() -> None:
    supervisor, _clock, _ = supervised()
    delays = [supervisor.failed(DOWN) for _ in range(4)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert supervisor.state.state == "retrying"
    assert supervisor.state.attempts == 4
    supervisor.succeeded()
    assert supervisor.state.state == "running"
    assert supervisor.failed(DOWN) == pytest.approx(0.2)
    assert supervisor.retries == 5  # the counter is never reset


def test_an_attempt_that_proves_nothing_does_not_reset_the_back_off() -> None:
    """The Kafka worker's empty poll: the step returns False, which is no success."""
    supervisor, _clock, _ = supervised()
    stop = threading.Event()
    outcomes: list[object] = [DOWN, False, False, DOWN, False, DOWN]
    waits: list[float] = []

    def step() -> bool:
        if not outcomes:
            stop.set()
            return False
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return bool(outcome)

    real_wait = stop.wait

    def wait(timeout: float | None = None) -> bool:
        if timeout is not None:
            waits.append(timeout)
        return real_wait(0)

    stop.wait = wait  # type: ignore[method-assign]
    supervisor.loop(step, stop)
    assert waits == pytest.approx([0.2, 0.4, 0.8])
    assert supervisor.state.attempts == 3


def test_a_streak_is_reported_when_it_starts_and_ends_and_reminded_rarely() -> None:
    supervisor, clock, lines = supervised(remind_every=300.0)
    supervisor.succeeded()
    assert lines == []  # starting → running says nothing
    supervisor.failed(DOWN, context=lambda: "12 events waiting")
    for _ in range(20):
        clock.t += 10
        supervisor.failed(DOWN)
    assert lines == [
        "projections run: database unavailable (postgresql://u:***@db:5432/x (schema public): "
        "database error: refused); 12 events waiting; retrying in 0.2 s, backing off up to 30 s"
    ]
    clock.t += 100  # 300 s since the first report
    supervisor.failed(DOWN)
    assert len(lines) == 2
    assert lines[1].startswith("projections run: still retrying after 5 min 0 s (22 failed")
    clock.t += 11
    supervisor.succeeded()
    assert lines[2] == (
        "projections run: database reachable again; recovered after 5 min 11 s, 22 failed attempts"
    )
    supervisor.succeeded()
    assert len(lines) == 3


def test_a_change_of_failing_dependency_is_reported_but_keeps_the_streak() -> None:
    supervisor, clock, lines = supervised()
    supervisor.failed(DOWN)
    clock.t += 1
    supervisor.failed(BROKERS)
    supervisor.failed(BROKERS)
    assert len(lines) == 2
    assert lines[1].startswith("projections run: Kafka brokers k1:9092 unavailable: no broker")
    assert supervisor.state.attempts == 3
    assert supervisor.state.since == T0
    supervisor.succeeded()
    assert lines[2].startswith("projections run: Kafka brokers k1:9092 reachable again;")


def test_the_state_says_since_when_how_many_attempts_and_why() -> None:
    supervisor, clock, _ = supervised()
    seen: list[ProcessState] = []
    supervisor.watch(seen.append)
    supervisor.failed(DOWN)
    clock.t += 5
    supervisor.failed(DOWN)
    assert supervisor.state.describe() == (
        "retrying since 2026-11-24 06:00:00Z (2 attempts): "
        "postgresql://u:***@db:5432/x (schema public): database error: refused"
    )
    supervisor.succeeded()
    assert [s.state for s in seen] == ["retrying", "retrying", "running"]
    assert seen[-1].since == T0 + timedelta(seconds=5)


@pytest.mark.parametrize(
    "error",
    [
        DatabaseMisconfigured('x: the server refused the connection: database "x" does not exist'),
        SchemaNotReady("x has no sessionstore schema"),
        ProjectionOutdated("metrics"),
        ProjectionFedFromKafka("metrics", 1),
        KeyError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_configuration_errors_and_bugs_stop_instead_of_retrying(error: Exception) -> None:
    supervisor, _clock, lines = supervised()
    assert not transient(error)
    assert supervisor.failed(error) is None
    assert supervisor.state.state == "stopped"
    assert supervisor.state.detail == cause(error)
    assert lines == []  # the caller raises it: the command prints it once, with its exit code
    stop = threading.Event()

    def step() -> bool:
        raise error

    with pytest.raises(type(error)):
        supervisor.loop(step, stop)


@pytest.mark.parametrize(
    "error",
    [
        DOWN,
        BROKERS,
        StorageError("SQLite file x: database error: database is locked"),
        StorageRejected("x: value rejected: too big"),
    ],
    ids=["database", "brokers", "sqlite-locked", "rejected"],
)
def test_storage_and_broker_failures_are_transient(error: Exception) -> None:
    assert transient(error)


def test_a_cause_is_one_line_and_bounded() -> None:
    error = StorageError("line one\n\tline two " + "x" * 1000)
    text = cause(error)
    assert "\n" not in text
    assert text.startswith("line one line two xx")
    assert len(text) == 400


def test_call_returns_the_result_once_an_attempt_succeeds() -> None:
    supervisor, _clock, lines = supervised()
    results = iter([DOWN, DOWN, "opened"])

    def action() -> str:
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    stop = threading.Event()
    stop.wait = lambda timeout=None: False  # type: ignore[method-assign]
    assert supervisor.call(action, stop) == "opened"
    assert supervisor.state.state == "running"
    assert len(lines) == 2  # failing, recovered
    stop.set()
    assert supervisor.call(action, stop) is None  # stopped before any attempt


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            'FATAL:  database "nope" does not exist',
            'database "nope" does not exist',
        ),
        (
            'connection failed: connection to server at "db", port 5432 failed: FATAL:  '
            'password authentication failed for user "app"',
            'password authentication failed for user "app"',
        ),
        (
            'connection failed: ... FATAL:  role "ghost" does not exist',
            'role "ghost" does not exist',
        ),
        (
            'connection failed: ... FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app"',
            'no pg_hba.conf entry for host "10.0.0.1", user "app"',
        ),
    ],
)
def test_connection_refusals_the_server_reports_as_configuration(message: str, reason: str) -> None:
    found = misconfiguration(psycopg.OperationalError(message))
    assert found == f"the server refused the connection: {reason}"


def test_a_refused_or_dropped_connection_is_not_configuration() -> None:
    for message in (
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused',
        "consuming input failed: server closed the connection unexpectedly",
        "terminating connection due to administrator command",
    ):
        assert misconfiguration(psycopg.OperationalError(message)) is None
