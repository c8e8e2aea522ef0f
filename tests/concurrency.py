"""Helpers for tests that race real threads against a real database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_together(*calls: Callable[[], T]) -> list[T | BaseException]:
    """Run the calls in threads released at the same instant; return results or exceptions."""
    barrier = threading.Barrier(len(calls))

    def release_then(call: Callable[[], T]) -> T | BaseException:
        barrier.wait()
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - the test inspects what each thread got
            return e

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(release_then, calls))
