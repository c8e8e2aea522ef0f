"""The simulated agent runtime: plans one session's timed steps, then runs them on a store.

Plan-time fields advance while a scenario (``scenarios.py``) writes its script; the steps of all
sessions are run afterwards in order of simulated time (``simulation.py``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from pydantic import JsonValue

from sessionstore.domain.errors import ConcurrencyConflict
from sessionstore.domain.ports import AppendResult
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import Channel

# ---------------------------------------------------------------------------------------------
# Agents


@dataclass(frozen=True, slots=True)
class Agent:
    agent_id: str
    tenant_id: str
    channel: Channel
    system_prompt: str
    greeting: str | None
    policy: dict[str, int]
    uses_idempotency_keys: bool
    """Voice runtimes retry after timeouts, so they key every append. The chat runtime is the
    single writer of its sessions and instead passes ``expected_version`` on every append."""

    @property
    def is_voice(self) -> bool:
        return self.channel is not Channel.TEXT


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool call the assistant makes; ``result`` None means the tool never answers."""

    name: str
    arguments: dict[str, JsonValue]
    result: dict[str, JsonValue] | None


# ---------------------------------------------------------------------------------------------
# The runtime of one session: plans its steps, then executes them against the store


@dataclass(order=True)
class Step:
    at: float
    session: int
    seq: int
    run: Callable[[], None] = field(compare=False)


class Simulation:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible demo, not cryptography
        self.steps: list[Step] = []
        self.notes: list[str] = []
        self.store: SessionStore | None = None

    def the_store(self) -> SessionStore:
        if self.store is None:
            msg = "steps run only after the plan is complete"
            raise RuntimeError(msg)
        return self.store


class Runtime:
    """The agent runtime of one session, as the simulation plans it and then runs it.

    Plan-time fields (``t``, counters) advance while the script is written; ``version`` is
    run-time: the last version this runtime was told about, as a real runtime would track it.
    """

    def __init__(
        self, sim: Simulation, index: int, agent: Agent, user_id: str, start: float
    ) -> None:
        self.sim, self.index, self.agent, self.user_id = sim, index, agent, user_id
        self.rng = sim.rng
        self.session_id = uuid4()
        self.t = start
        self.version = 0
        self._seq = 0
        self._requests = 0
        self._messages = 0
        self._turns = 0
        self._watchdog_seen = 0

    @property
    def short(self) -> str:
        return str(self.session_id)[:8]

    # --- planning helpers -------------------------------------------------------------------

    def wait(self, low: float, high: float | None = None) -> None:
        self.t += low if high is None else self.rng.uniform(low, high)

    def _schedule(self, run: Callable[[], None]) -> None:
        self._seq += 1
        self.sim.steps.append(Step(self.t, self.index, self._seq, run))
        self.t += 0.001  # each step of a session strictly after the previous one

    def _append(
        self,
        operation: str,
        *,
        expect: bool | None = None,
        retry_lost_ack: bool = False,
        **fields: Any,
    ) -> None:
        """Schedule one append, made the way this agent's runtime makes them.

        Idempotency keys are fixed at plan time (one per logical request), so a retry reuses
        its key. ``expected_version`` is read at run time from what the runtime last saw.
        """
        self._requests += 1
        key = f"{self.session_id}:{self._requests}" if self.agent.uses_idempotency_keys else None
        use_expected = not self.agent.uses_idempotency_keys if expect is None else expect
        if retry_lost_ack and key is None:
            msg = "only a runtime that sends idempotency keys can retry safely"
            raise ValueError(msg)

        def run() -> None:
            options: dict[str, Any] = {"idempotency_key": key}
            if use_expected:
                options["expected_version"] = self.version
            method = getattr(self.sim.the_store(), operation)
            result: AppendResult = method(self.session_id, **fields, **options)
            self.version = result.version
            if retry_lost_ack:
                # The acknowledgement "got lost": the runtime retries the identical request with
                # the same key. The store answers with the first result and appends nothing.
                retry: AppendResult = method(self.session_id, **fields, idempotency_key=key)
                self.sim.notes.append(
                    f"{self.short} {self.agent.agent_id}: {operation} was retried with the same "
                    f"idempotency key after a lost acknowledgement: replayed={retry.replayed}, "
                    f"version still {retry.version}, nothing appended twice"
                )

        self._schedule(run)

    # --- what an agent runtime does ---------------------------------------------------------

    def create(self, metadata: dict[str, JsonValue]) -> None:
        agent = self.agent
        key = f"{self.session_id}:create" if agent.uses_idempotency_keys else None

        def run() -> None:
            result = self.sim.the_store().create(
                tenant_id=agent.tenant_id,
                user_id=self.user_id,
                agent_id=agent.agent_id,
                channel=agent.channel.value,
                metadata=metadata,
                policy=agent.policy,
                session_id=self.session_id,
                idempotency_key=key,
            )
            self.version = result.version

        self._schedule(run)
        self.message("system", agent.system_prompt)
        if agent.greeting:
            self.wait(0.4, 0.9)
            self.message("assistant", agent.greeting)
            self.wait(speaking_seconds(agent.greeting))

    def message(
        self,
        role: str,
        content: str = "",
        *,
        tool_calls: Sequence[dict[str, JsonValue]] = (),
        tool_call_id: str | None = None,
        retry_lost_ack: bool = False,
    ) -> None:
        self._messages += 1
        self._append(
            "add_message",
            role=role,
            content=content,
            tool_calls=list(tool_calls),
            tool_call_id=tool_call_id,
            message_id=f"msg-{self._messages:03d}",
            retry_lost_ack=retry_lost_ack,
        )

    def user_says(self, text: str) -> float:
        """The caller speaks (or types) ``text``; returns the speech-to-text latency in ms."""
        if self.agent.is_voice:
            self.wait(speaking_seconds(text))
            stt = round(self.rng.uniform(160, 420), 1)
            self.wait(stt / 1000)
        else:
            self.wait(len(text) / 6 + self.rng.uniform(2, 8))  # typing
            stt = 0.0
        self.message("user", text)
        return stt

    def call_tools(self, tools: Sequence[Tool]) -> list[str]:
        """An assistant message requesting ``tools``; returns the tool call ids."""
        ids = [f"call_{self.rng.getrandbits(48):012x}" for _ in tools]
        calls: list[dict[str, JsonValue]] = [
            {"id": call_id, "name": tool.name, "arguments": tool.arguments}
            for call_id, tool in zip(ids, tools, strict=True)
        ]
        self.message("assistant", tool_calls=calls)
        return ids

    def turn(
        self,
        user: str,
        reply: str,
        *,
        tools: Sequence[Tool] = (),
        retry_lost_ack: bool = False,
    ) -> None:
        """One complete exchange: user message, tool calls and results, reply, TurnRecorded."""
        voice = self.agent.is_voice
        stt = self.user_says(user)
        llm = tool_ms = 0.0
        if tools:
            llm += self.llm_pass()
            ids = self.call_tools(tools)
            for call_id, tool in zip(ids, tools, strict=True):
                took = round(self.rng.uniform(90, 650), 1)
                tool_ms += took
                self.wait(took / 1000)
                self.message("tool", compact_json(tool.result or {}), tool_call_id=call_id)
        llm += self.llm_pass()
        self.message("assistant", reply, retry_lost_ack=retry_lost_ack)
        tts = round(self.rng.uniform(110, 260), 1) if voice else 0.0
        self.wait(tts / 1000)
        self.record_turn(stt=stt, llm=llm, tts=tts, tool=tool_ms, reply=reply)
        if voice:
            self.wait(speaking_seconds(reply))  # the caller listens to the answer

    def llm_pass(self) -> float:
        low, high = (380, 950) if self.agent.is_voice else (650, 2300)
        took = round(self.rng.uniform(low, high), 1)
        self.wait(took / 1000)
        return took

    def record_turn(
        self,
        *,
        stt: float = 0.0,
        llm: float = 0.0,
        tts: float = 0.0,
        tool: float = 0.0,
        reply: str = "",
        error_type: str | None = None,
    ) -> None:
        self._turns += 1
        overhead = round(self.rng.uniform(12, 60), 1)
        voice = self.agent.is_voice
        self._append(
            "record_turn",
            request_id=f"req-{self._turns:03d}",
            duration_ms=round(stt + llm + tts + tool + overhead, 1),
            stt_ms=stt if voice else None,
            llm_ms=llm or None,
            tts_ms=tts if voice and tts else None,
            tool_ms=tool or None,
            input_tokens=420 + 55 * self._messages + self.rng.randrange(0, 40),
            output_tokens=max(8, round(len(reply.split()) * 1.35)) if reply else 0,
            error=error_type is not None,
            error_type=error_type,
        )

    def context(self, set_: dict[str, JsonValue], remove: Sequence[str] = ()) -> None:
        self._append("update_context", set=set_, remove=list(remove))

    def interrupt(self, reason: str, detail: str) -> None:
        self._append("interrupt", reason=reason, detail=detail)

    def resume(self) -> None:
        # A reconnecting runtime says which version it saw: a stale view must not resume.
        self._append("resume", expect=True)

    def end(self, status: str, reason: str) -> None:
        self._append("end", status=status, reason=reason, expect=True)

    def note(self, text: str) -> None:
        self._schedule(lambda: self.sim.notes.append(f"{self.short} {self.agent.agent_id}: {text}"))

    def watchdog_reads(self) -> None:
        def run() -> None:
            self._watchdog_seen = self.sim.the_store().get(self.session_id).version

        self._schedule(run)

    def watchdog_ends(self, status: str, reason: str) -> None:
        """A supervisor process ends the session, passing the version it read earlier."""

        def run() -> None:
            store = self.sim.the_store()
            try:
                store.end(
                    self.session_id, status=status, reason=reason,
                    expected_version=self._watchdog_seen,
                )  # fmt: skip
            except ConcurrencyConflict as conflict:
                current = store.get(self.session_id)
                result = store.end(
                    self.session_id, status=status, reason=reason,
                    expected_version=current.version,
                )  # fmt: skip
                self.sim.notes.append(
                    f"{self.short} {self.agent.agent_id}: watchdog's end with expected_version "
                    f"{conflict.expected_version} was rejected (session at "
                    f"{conflict.actual_version}: the agent had appended meanwhile); it re-read "
                    f"the state and ended at version {result.version}"
                )

        self._schedule(run)


class SimClock:
    """The store's clock during the demo: the anchor plus the current step's offset."""

    def __init__(self, anchor: datetime) -> None:
        self.anchor = anchor
        self.offset = 0.0

    def __call__(self) -> datetime:
        return self.anchor + timedelta(seconds=self.offset)


def speaking_seconds(text: str) -> float:
    return round(len(text.split()) / 2.6, 2)  # about 155 words a minute


def compact_json(value: dict[str, JsonValue]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
