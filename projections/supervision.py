"""Supervision of the long-running loops: one back-off policy, one state, one way to report.

Four loops run for as long as their process does: the log-fed runner (``projections run``),
the Kafka-fed worker (``projections run --source kafka``), the relay (``relay``) and the
projector thread of ``serve``. Each wraps its attempts in a ``Supervisor``:

- **Classify.** A transient error (the database or the brokers failing or unreachable, a
  SQLite write lock held past the busy timeout) is retried forever. A configuration error
  (``DatabaseMisconfigured``, ``SchemaNotReady``, ``ProjectionOutdated``,
  ``ProjectionFedFromKafka``) and anything unexpected stops the loop: retrying cannot fix it.
- **Back off.** Exponential with ±20 % jitter, capped (``Backoff``); the streak of failures,
  hence the delay, is reset only by an attempt that *succeeded*: one that used what failed and
  completed. Each loop says what counts (``Supervisor.loop``): a runner's or relay's completed
  step always read the database; a Kafka worker's empty poll does not count unless it has joined
  its consumer group (the brokers answer) and, after a failure, the database answers a probe.
- **Report once per change of state.** One line when a streak starts (or the failing dependency
  changes), one when it ends ("recovered after 41 s, 7 attempts"), and in between only a
  reminder every ``remind_every`` seconds (5 minutes). No traceback for a transient error.
- **Expose the state** (``ProcessState``: starting, running, retrying since/attempts/cause,
  stopped with a reason) to listeners: heartbeat rows, ``/readyz``, Prometheus.

This module does no I/O of its own besides logging, so every layer above may use it.
docs/decisions.md §23 has the reasoning.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from sessionstore.domain.errors import (
    BrokerUnavailable,
    DatabaseMisconfigured,
    ProjectionFedFromKafka,
    ProjectionOutdated,
    SchemaNotReady,
    SessionStoreError,
    StorageError,
)

logger = logging.getLogger("sessionstore.supervision")

State = Literal["starting", "running", "retrying", "stopped"]
T = TypeVar("T")

CONFIGURATION_ERRORS: tuple[type[Exception], ...] = (
    DatabaseMisconfigured,
    SchemaNotReady,
    ProjectionOutdated,
    ProjectionFedFromKafka,
)
"""Errors no retry fixes: the process stops with their message."""

DEFAULT_REMIND_SECONDS = 300.0
CAUSE_LENGTH = 400
"""Longest cause kept in a state (heartbeat rows and /readyz stay small)."""


def transient(error: BaseException) -> bool:
    """Whether retrying later may succeed: storage and broker failures except configuration."""
    if isinstance(error, CONFIGURATION_ERRORS):
        return False
    return isinstance(error, StorageError | BrokerUnavailable)


def dependency(error: BaseException) -> str:
    """What failed, as the operator knows it."""
    if isinstance(error, BrokerUnavailable):
        return f"Kafka brokers {error.bootstrap_servers}"
    return "database"


def cause(error: BaseException) -> str:
    """The error's message on one line, shortened. Messages carry redacted URLs only."""
    text = (
        error.message
        if isinstance(error, SessionStoreError)
        else f"{type(error).__name__}: {error}"
    )
    text = " ".join(text.split())
    return text if len(text) <= CAUSE_LENGTH else text[: CAUSE_LENGTH - 1] + "…"


def _what(error: BaseException) -> str:
    if isinstance(error, BrokerUnavailable):
        return cause(error)  # "Kafka brokers host:port unavailable: ..."
    return f"database unavailable ({cause(error)})"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with jitter: ``base · factor^(n-1)`` after the n-th failure in a
    row, times a random factor in [1 - jitter, 1 + jitter], never more than ``cap`` seconds."""

    base: float = 0.2
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2

    def delay(self, failures: int, rand: float) -> float:
        """The pause after the ``failures``-th failure in a row; ``rand`` is uniform in [0, 1)."""
        exponent = min(max(failures, 1) - 1, 64)  # beyond 2^64 · base everything is capped
        raw = min(self.cap, self.base * self.factor**exponent)
        return min(self.cap, raw * (1 - self.jitter + 2 * self.jitter * rand))


@dataclass(frozen=True, slots=True)
class ProcessState:
    """Where a supervised loop is: ``starting`` (no attempt has succeeded yet), ``running``,
    ``retrying`` (since the first failure of the streak, ``attempts`` failures so far, ``detail``
    the last cause) or ``stopped`` (``detail`` the reason)."""

    state: State
    since: datetime
    attempts: int = 0
    detail: str = ""

    def describe(self) -> str:
        when = self.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if self.state == "retrying":
            return f"retrying since {when} ({self.attempts} attempts): {self.detail}"
        if self.state == "stopped":
            return f"stopped at {when}: {self.detail}"
        return f"{self.state} since {when}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Supervisor:
    """Runs a loop's attempts under the back-off policy and keeps its ``ProcessState``.

    ``report`` receives the lines worth an operator's attention (by default they are logged:
    failures as warnings, recoveries as info). ``clock``, ``now`` and ``rand`` are for tests.
    """

    def __init__(
        self,
        name: str,
        *,
        policy: Backoff | None = None,
        report: Callable[[str], None] | None = None,
        remind_every: float = DEFAULT_REMIND_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.policy = policy or Backoff()
        self._report = report
        self.remind_every = remind_every
        self._clock, self._now, self._rand = clock, now, rand
        self.state = ProcessState("starting", now())
        self.retries = 0
        """Failed attempts since the supervisor was made (a counter: never reset)."""
        self._failing_since = 0.0
        self._last_report = 0.0
        self._failing: str | None = None  # the dependency of the current streak
        self._listeners: list[Callable[[ProcessState], None]] = []

    # -- what the loops call ---------------------------------------------------------------------

    def succeeded(self) -> None:
        """An attempt completed: running (reporting the recovery if a streak ends)."""
        previous = self.state
        if previous.state == "running":
            return
        if previous.state == "retrying":
            elapsed = self._clock() - self._failing_since
            self._say(
                f"{self.name}: {self._failing} reachable again; recovered after "
                f"{_seconds(elapsed)}, {previous.attempts} failed attempts",
                logging.INFO,
            )
        self._failing = None
        self._set(ProcessState("running", self._now()))

    def failed(
        self, error: BaseException, *, context: Callable[[], str] | None = None
    ) -> float | None:
        """Record a failed attempt. Returns the seconds to wait before the next one, or None
        when ``error`` is not transient: the state is then ``stopped`` and the caller re-raises.
        ``context`` adds to the first report of a streak (e.g. "12 events waiting")."""
        if not transient(error):
            self.stop(cause(error))
            return None
        self.retries += 1
        now = self._clock()
        failing = dependency(error)
        previous = self.state
        attempts = previous.attempts + 1 if previous.state == "retrying" else 1
        delay = self.policy.delay(attempts, self._rand())
        if previous.state != "retrying" or failing != self._failing:
            if previous.state != "retrying":
                self._failing_since = now
            self._failing = failing
            extra = _safely(context)
            self._say(
                f"{self.name}: {_what(error)}{'; ' + extra if extra else ''}; retrying in "
                f"{delay:.1f} s, backing off up to {self.policy.cap:g} s",
                logging.WARNING,
            )
            self._last_report = now
        elif now - self._last_report >= self.remind_every:
            self._say(
                f"{self.name}: still retrying after {_seconds(now - self._failing_since)} "
                f"({attempts} failed attempts): {_what(error)}",
                logging.WARNING,
            )
            self._last_report = now
        since = previous.since if previous.state == "retrying" else self._now()
        self._set(ProcessState("retrying", since, attempts, cause(error)))
        return delay

    def stop(self, reason: str) -> None:
        """The loop ends for good (a configuration error, or the process is stopping)."""
        self._set(ProcessState("stopped", self._now(), self.state.attempts, reason))

    def call(self, action: Callable[[], T], stop: threading.Event) -> T | None:
        """Run ``action`` until it returns (its result) or ``stop`` is set (None), waiting the
        back-off between transient failures; anything else propagates."""
        while not stop.is_set():
            try:
                result = action()
            except Exception as e:
                delay = self.failed(e)
                if delay is None:
                    raise
                stop.wait(delay)
                continue
            self.succeeded()
            return result
        return None

    def loop(
        self,
        step: Callable[[], bool],
        stop: threading.Event,
        *,
        context: Callable[[], str] | None = None,
    ) -> None:
        """Repeat ``step`` until ``stop``. It returns True when the attempt succeeded (it used
        what may fail and completed), False when it proves nothing either way (an empty poll);
        it raises on failure. Configuration errors propagate."""
        while not stop.is_set():
            try:
                succeeded = step()
            except Exception as e:
                delay = self.failed(e, context=context)
                if delay is None:
                    raise
                stop.wait(delay)
                continue
            if succeeded:
                self.succeeded()

    # -- who watches -----------------------------------------------------------------------------

    @property
    def retrying(self) -> bool:
        return self.state.state == "retrying"

    def watch(self, listener: Callable[[ProcessState], None]) -> None:
        """Call ``listener`` with the new state on every change of state (in the loop's
        thread; it must not block)."""
        self._listeners.append(listener)

    def _set(self, state: ProcessState) -> None:
        self.state = state
        for listener in self._listeners:
            listener(state)

    def _say(self, line: str, level: int) -> None:
        if self._report is not None:
            self._report(line)
        else:
            logger.log(level, line)


def _safely(context: Callable[[], str] | None) -> str:
    """Extra words for a report, if they can be had (the database may be down)."""
    if context is None:
        return ""
    try:
        return context()
    except Exception:  # noqa: BLE001 - a report must never fail the loop
        return ""


def _seconds(value: float) -> str:
    seconds = max(0, round(value))
    if seconds < 120:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
