"""The embedded projector: a thread of the app that applies the log to the views (the default on
``memory://``, where nothing else can reach them)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sessionstore.domain.errors import ProjectionFedFromKafka, StorageError
from sessionstore.events.codec import CodecError

if TYPE_CHECKING:
    from sessionstore.adapters.http.deps import Context

logger = logging.getLogger("sessionstore.http")

PROJECTOR_POLL_SECONDS = 0.5


class Nudge:
    """The embedded projector's waiter: woken by this process's appends, else polls."""

    def __init__(self, stop: threading.Event) -> None:
        self._event = threading.Event()
        self._stop = stop

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()

    def set(self) -> None:
        self._event.set()

    def close(self) -> None:
        self._event.set()


def start_projector(ctx: Context) -> threading.Thread:
    nudge = Nudge(ctx.stop)
    ctx.nudge = nudge
    runner = ctx.runner()

    def run() -> None:
        while not ctx.stop.is_set():
            try:
                runner.run(ctx.stop, nudge, poll_interval=PROJECTOR_POLL_SECONDS)
            except ProjectionFedFromKafka as e:
                logger.error("embedded projector off: %s (serve with --no-projector)", e.message)
                return
            except (StorageError, CodecError):
                logger.exception("embedded projector failed; retrying")
                ctx.stop.wait(PROJECTOR_POLL_SECONDS)

    thread = threading.Thread(target=run, name="sessionstore-projector", daemon=True)
    thread.start()
    return thread
