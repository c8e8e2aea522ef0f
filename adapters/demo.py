"""The demo: a few agent runtimes hold realistic voice and chat sessions against a SessionStore.

The simulation is planned first and executed second. Each session is a script of timed steps
(what the caller says, which tools the agent calls, how long each stage takes); the steps of all
sessions are then run in order of simulated time, so the global log interleaves the sessions the
way concurrent calls would. The store's clock is the simulated one, anchored so that the last
step happens "now": timestamps, turn latencies and interruption lengths are all consistent.

``--seed`` makes every choice (names, numbers, latencies, pauses, tool call ids) reproducible;
session ids stay random, so running the demo twice on one database adds new sessions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from pydantic import JsonValue

from sessionstore.adapters.bootstrap import open_log
from sessionstore.adapters.settings import Settings
from sessionstore.domain.errors import ConcurrencyConflict
from sessionstore.domain.ports import AppendResult, RecordedEvent
from sessionstore.domain.session import Session
from sessionstore.domain.store import SessionStore
from sessionstore.events.catalogue import Channel

DEFAULT_SESSIONS = 6
MAX_SESSIONS = 200

# ---------------------------------------------------------------------------------------------
# What the demo returns (the CLI renders it)


@dataclass(frozen=True, slots=True)
class DemoSession:
    """One simulated session: what it was meant to show, and its state read back from the log."""

    scenario: str
    state: Session


@dataclass(frozen=True, slots=True)
class DemoSummary:
    seed: int
    sessions: tuple[DemoSession, ...]
    highlight: DemoSession
    """The session with an interruption (and resume), whose full history is shown."""
    history: tuple[RecordedEvent, ...]
    notes: tuple[str, ...]
    """Notable things the runtimes did: aborted tool calls, replayed retries, conflicts."""
    started_at: datetime
    finished_at: datetime

    @property
    def events_appended(self) -> int:
        return sum(s.state.version for s in self.sessions)


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


RECEPTIONIST = Agent(
    agent_id="voice-receptionist",
    tenant_id="brightsmile-dental",
    channel=Channel.VOICE,
    system_prompt=(
        "You are the receptionist of BrightSmile Dental. Speak briefly and warmly. You can look "
        "up, list and move appointments. Never give medical advice."
    ),
    greeting="Good morning, BrightSmile Dental, this is Robin. How can I help you today?",
    policy={"idle_timeout_seconds": 120, "ttl_seconds": 1800, "retention_days": 90},
    uses_idempotency_keys=True,
)
SUPPORT = Agent(
    agent_id="chat-support",
    tenant_id="acme-shop",
    channel=Channel.TEXT,
    system_prompt=(
        "You are Acme Shop's support assistant. Use the order and payment tools; never invent "
        "order details. Hand over to a human when a tool fails twice."
    ),
    greeting=None,
    policy={"idle_timeout_seconds": 900, "retention_days": 30},
    uses_idempotency_keys=False,
)
BOOKING = Agent(
    agent_id="phone-booking",
    tenant_id="harbor-bistro",
    channel=Channel.PHONE,
    system_prompt=(
        "You take table reservations for Harbor Bistro by phone. Confirm day, time, party size "
        "and name before booking. Read back the reference number."
    ),
    greeting="Harbor Bistro, bookings. What can I do for you?",
    policy={"idle_timeout_seconds": 300, "ttl_seconds": 3600, "retention_days": 365},
    uses_idempotency_keys=True,
)

FIRST_NAMES = ("Dana", "Samir", "Mei", "Tomás", "Aisha", "Jonas", "Priya", "Liam", "Noor", "Elena")
LAST_NAMES = ("Whitfield", "Haddad", "Lin", "Ortega", "Okafor", "Berg", "Raman", "Novak", "Costa")


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool call the assistant makes; ``result`` None means the tool never answers."""

    name: str
    arguments: dict[str, JsonValue]
    result: dict[str, JsonValue] | None


# ---------------------------------------------------------------------------------------------
# The runtime of one session: plans its steps, then executes them against the store


@dataclass(order=True)
class _Step:
    at: float
    session: int
    seq: int
    run: Callable[[], None] = field(compare=False)


class _Simulation:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible demo, not cryptography
        self.steps: list[_Step] = []
        self.notes: list[str] = []
        self.store: SessionStore | None = None

    def the_store(self) -> SessionStore:
        if self.store is None:
            msg = "steps run only after the plan is complete"
            raise RuntimeError(msg)
        return self.store


class _Runtime:
    """The agent runtime of one session, as the simulation plans it and then runs it.

    Plan-time fields (``t``, counters) advance while the script is written; ``version`` is
    run-time: the last version this runtime was told about, as a real runtime would track it.
    """

    def __init__(
        self, sim: _Simulation, index: int, agent: Agent, user_id: str, start: float
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
        self.sim.steps.append(_Step(self.t, self.index, self._seq, run))
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
            self.wait(_speaking_seconds(agent.greeting))

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
            self.wait(_speaking_seconds(text))
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
                self.message("tool", _json(tool.result or {}), tool_call_id=call_id)
        llm += self.llm_pass()
        self.message("assistant", reply, retry_lost_ack=retry_lost_ack)
        tts = round(self.rng.uniform(110, 260), 1) if voice else 0.0
        self.wait(tts / 1000)
        self.record_turn(stt=stt, llm=llm, tts=tts, tool=tool_ms, reply=reply)
        if voice:
            self.wait(_speaking_seconds(reply))  # the caller listens to the answer

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


# ---------------------------------------------------------------------------------------------
# Scenarios: one function per kind of session


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _phone(rng: random.Random) -> str:
    return f"+1-555-01{rng.randrange(0, 100):02d}"  # 555-01xx: reserved for fiction


def booking_dropped_call(sim: _Simulation, index: int, start: float) -> tuple[str, _Runtime]:
    """Table booking by phone; the call drops while the booking tool runs; the caller rings back."""
    rng = sim.rng
    first, last = _person(rng)
    phone = _phone(rng)
    party = rng.randrange(2, 7)
    day = rng.choice(("Friday", "Saturday"))
    asked, offered = rng.choice((("19:30", "20:15"), ("20:00", "20:45"), ("19:00", "19:45")))
    ref = f"R-{rng.randrange(1000, 9999)}"
    r = _Runtime(sim, index, BOOKING, f"caller:{phone}", start)
    r.create({"caller": phone, "line": "main", "locale": "en-US"})
    r.turn(
        f"Hi, I'd like a table for {party} on {day} at {asked}.",
        f"{day} at {asked} is fully booked, but I can offer {offered}. Would that work?",
        tools=[
            Tool(
                "check_availability",
                {"day": day, "time": asked, "party_size": party},
                {"available": False, "alternatives": [offered]},
            )
        ],
    )
    r.context({"party_size": party, "day": day, "time": offered})
    r.wait(1.0, 2.5)
    r.user_says(f"{offered} is fine. The name is {last}.")
    r.context({"guest_name": last, "pending_action": "create_reservation"})
    r.wait(0.5, 0.9)
    (call_id,) = r.call_tools(
        [
            Tool(
                "create_reservation",
                {"day": day, "time": offered, "party_size": party, "name": last, "phone": phone},
                None,
            )
        ]
    )
    r.wait(0.3, 0.8)
    r.interrupt("disconnect", "carrier dropped the call while create_reservation was running")
    r.note(
        f"the call dropped while tool call {call_id} (create_reservation) was open; "
        "SessionInterrupted records it as aborted, so the transcript stays valid for an LLM"
    )
    r.wait(25, 70)  # the caller rings back
    r.resume()
    r.context({"reconnected": True})
    r.turn(
        "Hi, sorry, I got cut off. Did the booking go through?",
        f"Yes, it did: a table for {party} on {day} at {offered} under {last}, reference {ref}.",
        tools=[
            Tool(
                "find_reservation",
                {"name": last, "day": day},
                {"found": True, "reservation_id": ref, "time": offered, "party_size": party},
            )
        ],
    )
    r.context({"reservation_id": ref}, remove=["pending_action"])
    r.turn("Perfect, thank you!", f"You're welcome, {first}. See you on {day}!")
    r.wait(1.0, 2.0)
    r.end("completed", f"reservation {ref} confirmed")
    return "table booking; the call drops mid tool call, the caller rings back", r


def support_payment_failure(sim: _Simulation, index: int, start: float) -> tuple[str, _Runtime]:
    """Chat support; the payment tool hangs, the watchdog ends the session as failed."""
    rng = sim.rng
    order = str(rng.randrange(80000, 99999))
    card = str(rng.randrange(1000, 9999))
    r = _Runtime(sim, index, SUPPORT, f"cust_{rng.randrange(10000, 99999)}", start)
    r.create({"page": f"/orders/{order}", "locale": "en-GB", "plan": "plus"})
    r.turn(
        f"Hi, my order #{order} still hasn't shipped. Can you check what's going on?",
        f"Order #{order} is on hold because the payment was declined. I can retry the charge "
        f"on your card ending {card}. Shall I?",
        tools=[
            Tool(
                "get_order",
                {"order_id": order},
                {"status": "payment_pending", "reason": "card_declined", "items": 2},
            )
        ],
    )
    r.context({"order_id": order, "order_status": "payment_pending"})
    r.user_says("Yes please, retry it.")
    llm = r.llm_pass()
    r.call_tools([Tool("retry_payment", {"order_id": order, "card_last4": card}, None)])
    r.wait(25, 28)
    r.watchdog_reads()
    r.wait(2, 3)
    r.record_turn(llm=llm, tool=30000.0, error_type="tool_timeout")
    r.wait(0.5, 1.5)
    r.watchdog_ends("failed", "payment gateway timed out; handed over to a human agent")
    return "order support; the payment tool hangs and the watchdog fails the session", r


def receptionist_silence(sim: _Simulation, index: int, start: float) -> tuple[str, _Runtime]:
    """Voice call; the caller goes silent; the session expires past its idle timeout."""
    rng = sim.rng
    first, last = _person(rng)
    r = _Runtime(sim, index, RECEPTIONIST, f"patient:{rng.randrange(1000, 9999)}", start)
    r.create({"caller": _phone(rng), "line": "front-desk"})
    r.turn(
        "Hi, are you open on Saturday?",
        "We are: Saturdays from 8 until 1. Would you like me to book you in?",
    )
    r.context({"caller_name": f"{first} {last}", "intent": "opening_hours"})
    r.wait(20, 21)
    r.interrupt("timeout", "no speech from the caller for 20 s")
    r.wait(121, 130)
    r.end("expired", "interrupted longer than the idle timeout (120 s); closed by cleanup")
    return "opening hours; the caller goes silent and the session expires", r


def support_abandoned(sim: _Simulation, index: int, start: float) -> tuple[str, _Runtime]:
    """Chat support with an LLM timeout (error turn), then the user closes the window."""
    rng = sim.rng
    country, code = rng.choice((("Norway", "NO"), ("Iceland", "IS"), ("Switzerland", "CH")))
    weight = rng.choice((1, 2, 5))
    r = _Runtime(sim, index, SUPPORT, f"cust_{rng.randrange(10000, 99999)}", start)
    r.create({"page": "/help/shipping", "locale": "en-GB"})
    r.user_says(f"Do you ship to {country}?")
    r.wait(30.0)
    r.record_turn(llm=30000.0, error_type="llm_timeout")
    r.note("the LLM timed out after 30 s: recorded as an error turn, then retried")
    r.wait(1.0, 2.0)
    llm = r.llm_pass()
    reply = f"Yes, we ship to {country}. Delivery takes 5-7 working days."
    r.message("assistant", reply)
    r.record_turn(llm=llm, reply=reply)
    price = f"€{rng.randrange(12, 40)}.50"
    r.turn(
        f"How much is shipping for {weight} kg?",
        f"Shipping {weight} kg to {country} costs {price}, tracked, 5-7 working days.",
        tools=[
            Tool(
                "shipping_quote",
                {"country": code, "weight_kg": weight},
                {"price": price, "days": "5-7", "tracked": True},
            )
        ],
    )
    r.context({"last_topic": "shipping_quote", "country": code})
    r.wait(40, 90)
    r.end("abandoned", "user closed the chat window without replying")
    return "shipping question; an LLM timeout, then the user leaves", r


def receptionist_reschedule(sim: _Simulation, index: int, start: float) -> tuple[str, _Runtime]:
    """Voice call: the caller barges in on the slot list; a lost ack is retried and replayed."""
    rng = sim.rng
    first, last = _person(rng)
    appointment = f"A-{rng.randrange(1000, 9999)}"
    slots = sorted(rng.sample(["13:30", "14:15", "15:00", "15:45", "16:30"], 3))
    chosen = slots[1]
    r = _Runtime(sim, index, RECEPTIONIST, f"patient:{rng.randrange(1000, 9999)}", start)
    r.create({"caller": _phone(rng), "line": "front-desk"})
    r.turn(
        f"Hi, this is {first} {last}. I need to move my cleaning on Tuesday.",
        "I see your cleaning with Dr. Patel on Tuesday at 9. Which day would suit you better?",
        tools=[
            Tool(
                "find_appointment",
                {"patient": f"{first} {last}", "day": "Tuesday"},
                {"appointment_id": appointment, "time": "09:00", "with": "Dr. Patel"},
            )
        ],
    )
    r.context({"patient": f"{first} {last}", "appointment_id": appointment})
    # This answer is cut short: the caller talks over it while it is being spoken.
    stt = r.user_says("Thursday afternoon, if possible.")
    llm = r.llm_pass()
    ids = r.call_tools([Tool("list_slots", {"day": "Thursday", "after": "12:00"}, None)])
    tool_ms = round(rng.uniform(90, 400), 1)
    r.wait(tool_ms / 1000)
    r.message("tool", _json({"slots": [*slots]}), tool_call_id=ids[0])
    llm += r.llm_pass()
    reply = f"On Thursday I have {slots[0]}, {slots[1]} or {slots[2]}. Which would you"
    r.message("assistant", reply)
    tts = round(rng.uniform(110, 260), 1)
    r.wait(tts / 1000)
    r.record_turn(stt=stt, llm=llm, tts=tts, tool=tool_ms, reply=reply)
    r.wait(1.2, 1.8)
    r.interrupt("barge_in", "caller spoke over the slot list")
    r.wait(0.3, 0.7)
    r.resume()
    r.turn(
        f"{chosen}, please.",
        f"Done: your cleaning is now on Thursday at {chosen}. We'll text you a reminder.",
        tools=[
            Tool(
                "move_appointment",
                {"appointment_id": appointment, "day": "Thursday", "time": chosen},
                {"ok": True},
            )
        ],
        retry_lost_ack=True,
    )
    r.context({"rescheduled_to": f"Thursday {chosen}"})
    r.turn("Great, thanks. Bye!", "Goodbye, and see you on Thursday!")
    r.end("completed", f"appointment {appointment} moved to Thursday {chosen}")
    return "rescheduling; the caller barges in, a lost ack is retried", r


def support_in_progress(sim: _Simulation, index: int, start: float) -> tuple[str, _Runtime]:
    """Chat support still going on when the demo stops (status active)."""
    rng = sim.rng
    order = str(rng.randrange(80000, 99999))
    r = _Runtime(sim, index, SUPPORT, f"cust_{rng.randrange(10000, 99999)}", start)
    r.create({"page": "/help/returns", "locale": "en-US"})
    r.turn(
        "What's your return policy for shoes?",
        "Unworn shoes can be returned within 30 days for a full refund. Returns are free.",
        tools=[
            Tool(
                "search_help_center",
                {"query": "return policy shoes"},
                {"article": "returns-101", "snippet": "30 days, unworn, free returns"},
            )
        ],
    )
    r.turn(
        f"OK. Can I return the sneakers from order #{order}?",
        f"Yes, order #{order} was delivered 9 days ago, so it's eligible. Shall I start a return?",
        tools=[
            Tool(
                "get_order",
                {"order_id": order},
                {"status": "delivered", "delivered_days_ago": 9, "items": 1},
            )
        ],
    )
    r.context({"order_id": order, "intent": "return"})
    return "returns question; still in progress", r


Scenario = Callable[[_Simulation, int, float], tuple[str, _Runtime]]

SCENARIOS: tuple[Scenario, ...] = (
    booking_dropped_call,
    support_payment_failure,
    receptionist_silence,
    support_abandoned,
    receptionist_reschedule,
    support_in_progress,
)
"""In this order the first four already end with each status: completed, failed, expired,
abandoned. More sessions than scenarios repeat them with new callers."""


# ---------------------------------------------------------------------------------------------
# Running it


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 1_000_000)


def simulate(
    store_for: Callable[[Callable[[], datetime]], SessionStore],
    *,
    sessions: int = DEFAULT_SESSIONS,
    seed: int,
    now: datetime | None = None,
) -> DemoSummary:
    """Plan ``sessions`` sessions, then run them on the store ``store_for(clock)`` returns.

    The simulated traffic ends at ``now`` (default: the real current time).
    """
    if not 1 <= sessions <= MAX_SESSIONS:
        msg = f"sessions must be between 1 and {MAX_SESSIONS}, got {sessions}"
        raise ValueError(msg)
    sim = _Simulation(seed)
    planned: list[tuple[str, _Runtime]] = []
    start = 0.0
    for index in range(sessions):
        planned.append(SCENARIOS[index % len(SCENARIOS)](sim, index, start))
        start += sim.rng.uniform(4, 25)  # calls and chats arrive a few seconds apart
    sim.steps.sort()
    span = sim.steps[-1].at
    finished_at = (now or datetime.now(UTC)).astimezone(UTC)
    started_at = finished_at - timedelta(seconds=span)
    clock = _SimClock(started_at)
    store = store_for(clock)
    sim.store = store
    try:
        for step in sim.steps:
            clock.offset = step.at
            step.run()
        results = tuple(DemoSession(scenario, store.get(r.session_id)) for scenario, r in planned)
        highlight = next(
            (s for s in results if s.state.interrupt_count and s.state.resume_count), results[0]
        )
        history = tuple(store.history(highlight.state.session_id))
    finally:
        store.close()
    return DemoSummary(
        seed=seed,
        sessions=results,
        highlight=highlight,
        history=history,
        notes=tuple(sim.notes),
        started_at=started_at,
        finished_at=finished_at,
    )


def run_demo(
    settings: Settings, *, sessions: int = DEFAULT_SESSIONS, seed: int | None = None
) -> DemoSummary:
    """Run the demo on the configured backend, whose schema must already be migrated."""

    def store_for(clock: Callable[[], datetime]) -> SessionStore:
        # Same wiring as bootstrap.build_store, plus the simulated clock.
        return SessionStore(
            open_log(settings), limits=settings.limits, clock=clock, cache_size=settings.cache_size
        )

    return simulate(store_for, sessions=sessions, seed=new_seed() if seed is None else seed)


class _SimClock:
    """The store's clock during the demo: the anchor plus the current step's offset."""

    def __init__(self, anchor: datetime) -> None:
        self.anchor = anchor
        self.offset = 0.0

    def __call__(self) -> datetime:
        return self.anchor + timedelta(seconds=self.offset)


def _speaking_seconds(text: str) -> float:
    return round(len(text.split()) / 2.6, 2)  # about 155 words a minute


def _json(value: dict[str, JsonValue]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
