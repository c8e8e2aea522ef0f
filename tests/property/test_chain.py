"""Hash chain properties: an untouched history always verifies; flipping any single stored
byte of any event is reported at exactly that session and version."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from sessionstore.adapters.storage.chain import verify
from sessionstore.adapters.storage.memory.log import MemoryEventLog
from sessionstore.domain.store import SessionStore


def history(log: MemoryEventLog, sizes: list[int]) -> list:  # type: ignore[type-arg]
    store = SessionStore(log)
    sids = []
    for n, size in enumerate(sizes):
        sid = store.create(tenant_id=f"t{n}", user_id="u", agent_id="a").session_id
        for i in range(size):
            store.add_message(sid, role="user" if i % 2 == 0 else "assistant", content=f"m{i}")
        sids.append(sid)
    return sids


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    pick=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000)),
)
def test_any_flipped_byte_is_found_at_its_event(
    sizes: list[int], pick: tuple[int, int, int]
) -> None:
    log = MemoryEventLog()
    sids = history(log, sizes)
    assert verify(log).ok

    sid = sids[pick[0] % len(sids)]
    stream = log._streams[sid]
    index = pick[1] % len(stream)
    row = stream[index]
    state = bytearray(row.stored.state)
    state[pick[2] % len(state)] ^= 0x01
    tampered = replace(row, stored=replace(row.stored, state=bytes(state)))
    stream[index] = tampered
    log._log[row.position - 1] = tampered

    first = verify(log).first_break
    assert first is not None
    assert (first.session_id, first.version, first.kind) == (sid, index + 1, "hash-mismatch")
