"""The embedded projector: a thread of the app that applies the log to the views (the default on
``memory://``, where nothing else can reach them)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sessionstore.adapters.settings import Settings
from sessionstore.domain.errors import ProjectionFedFromKafka, SessionStoreError
from sessionstore.projections.supervision import Backoff, Supervisor, cause

if TYPE_CHECKING:
    from sessionstore.adapters.http.deps import Context

logger = logging.getLogger("sessionstore.http")

PROJECTOR_POLL_SECONDS = 0.5
PROCESS_NAME = "embedded projector"
"""How the projector thread names itself in logs, ``/readyz`` and ``/metrics``."""


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
    """Apply the log to the views in a thread of the app, under ``ctx.projector`` (the
    supervisor ``/readyz`` and ``/metrics`` report): a failing database is retried with back-off
    and reported once per outage; a configuration error stops the thread (and is reported)."""
    nudge = Nudge(ctx.stop)
    ctx.nudge = nudge
    runner = ctx.runner()
    supervisor = ctx.projector or projector_supervisor(ctx.settings)
    ctx.projector = supervisor

    def run() -> None:
        try:
            runner.run(ctx.stop, nudge, poll_interval=PROJECTOR_POLL_SECONDS, supervisor=supervisor)
        except ProjectionFedFromKafka as e:
            logger.error("embedded projector off: %s (serve with --no-projector)", e.message)
        except SessionStoreError as e:
            logger.error("embedded projector stopped: %s", cause(e))
        except Exception:
            supervisor.stop("unexpected error (see the log)")
            logger.exception("embedded projector stopped by an unexpected error")

    thread = threading.Thread(target=run, name="sessionstore-projector", daemon=True)
    thread.start()
    return thread


def projector_supervisor(settings: Settings) -> Supervisor:
    return Supervisor(PROCESS_NAME, policy=Backoff(cap=settings.retry_max_seconds))
