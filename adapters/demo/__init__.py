"""The demo: simulated agent runtimes holding voice and chat sessions (``sessionstore demo``).

``simulation`` plans and runs the sessions, ``scenarios`` holds the agents and their scripts and
``runtime`` is what one simulated agent runtime does against the store.
"""

from sessionstore.adapters.demo.scenarios import SCENARIOS
from sessionstore.adapters.demo.simulation import (
    DEFAULT_SESSIONS,
    MAX_SESSIONS,
    DemoSession,
    DemoSummary,
    new_seed,
    run_demo,
    simulate,
)

__all__ = [
    "DEFAULT_SESSIONS",
    "MAX_SESSIONS",
    "SCENARIOS",
    "DemoSession",
    "DemoSummary",
    "new_seed",
    "run_demo",
    "simulate",
]
