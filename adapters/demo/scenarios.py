"""The demo's agents and scenarios: one function per kind of session, each writing its script."""

from __future__ import annotations

import random
from collections.abc import Callable

from sessionstore.adapters.demo.runtime import Agent, Runtime, Simulation, Tool, compact_json
from sessionstore.events.catalogue import Channel

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


# ---------------------------------------------------------------------------------------------
# Scenarios: one function per kind of session


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _phone(rng: random.Random) -> str:
    return f"+1-555-01{rng.randrange(0, 100):02d}"  # 555-01xx: reserved for fiction


def booking_dropped_call(sim: Simulation, index: int, start: float) -> tuple[str, Runtime]:
    """Table booking by phone; the call drops while the booking tool runs; the caller rings back."""
    rng = sim.rng
    first, last = _person(rng)
    phone = _phone(rng)
    party = rng.randrange(2, 7)
    day = rng.choice(("Friday", "Saturday"))
    asked, offered = rng.choice((("19:30", "20:15"), ("20:00", "20:45"), ("19:00", "19:45")))
    ref = f"R-{rng.randrange(1000, 9999)}"
    r = Runtime(sim, index, BOOKING, f"caller:{phone}", start)
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


def support_payment_failure(sim: Simulation, index: int, start: float) -> tuple[str, Runtime]:
    """Chat support; the payment tool hangs, the watchdog ends the session as failed."""
    rng = sim.rng
    order = str(rng.randrange(80000, 99999))
    card = str(rng.randrange(1000, 9999))
    r = Runtime(sim, index, SUPPORT, f"cust_{rng.randrange(10000, 99999)}", start)
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


def receptionist_silence(sim: Simulation, index: int, start: float) -> tuple[str, Runtime]:
    """Voice call; the caller goes silent; the session expires past its idle timeout."""
    rng = sim.rng
    first, last = _person(rng)
    r = Runtime(sim, index, RECEPTIONIST, f"patient:{rng.randrange(1000, 9999)}", start)
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


def support_abandoned(sim: Simulation, index: int, start: float) -> tuple[str, Runtime]:
    """Chat support with an LLM timeout (error turn), then the user closes the window."""
    rng = sim.rng
    country, code = rng.choice((("Norway", "NO"), ("Iceland", "IS"), ("Switzerland", "CH")))
    weight = rng.choice((1, 2, 5))
    r = Runtime(sim, index, SUPPORT, f"cust_{rng.randrange(10000, 99999)}", start)
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


def receptionist_reschedule(sim: Simulation, index: int, start: float) -> tuple[str, Runtime]:
    """Voice call: the caller barges in on the slot list; a lost ack is retried and replayed."""
    rng = sim.rng
    first, last = _person(rng)
    appointment = f"A-{rng.randrange(1000, 9999)}"
    slots = sorted(rng.sample(["13:30", "14:15", "15:00", "15:45", "16:30"], 3))
    chosen = slots[1]
    r = Runtime(sim, index, RECEPTIONIST, f"patient:{rng.randrange(1000, 9999)}", start)
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
    r.message("tool", compact_json({"slots": [*slots]}), tool_call_id=ids[0])
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


def support_in_progress(sim: Simulation, index: int, start: float) -> tuple[str, Runtime]:
    """Chat support still going on when the demo stops (status active)."""
    rng = sim.rng
    order = str(rng.randrange(80000, 99999))
    r = Runtime(sim, index, SUPPORT, f"cust_{rng.randrange(10000, 99999)}", start)
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


Scenario = Callable[[Simulation, int, float], tuple[str, Runtime]]

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
