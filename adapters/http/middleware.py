"""The app's middleware: Prometheus metrics (one registry per app) with the request counter,
and the request body limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionstore.adapters.http.problems import problem_response

# ---------------------------------------------------------------------------------------------
# Prometheus metrics (one registry per app, so apps in one process do not share counters)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sessionstore_http_requests",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.appends = Counter(
            "sessionstore_append_requests",
            "Append requests by command and HTTP status",
            ["command", "status"],
            registry=self.registry,
        )
        self.append_seconds = Histogram(
            "sessionstore_append_duration_seconds",
            "Time to decide and append one command (store call only)",
            ["command"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.conflicts = Counter(
            "sessionstore_append_conflicts",
            "Appends refused because the session had moved on (stale If-Match, or contention)",
            ["command"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "sessionstore_projection_lag_events",
            "Events in the log the projection has still to apply",
            ["projection"],
            registry=self.registry,
        )
        self.position = Gauge(
            "sessionstore_projection_position",
            "Log position the projection has applied up to",
            ["projection"],
            registry=self.registry,
        )
        self.quarantined = Gauge(
            "sessionstore_projection_quarantined_events",
            "Events the projection could not apply and holds in quarantine (with the later "
            "events of their sessions)",
            ["projection"],
            registry=self.registry,
        )
        self.head = Gauge(
            "sessionstore_log_head_position",
            "Position of the last event in the log",
            registry=self.registry,
        )
        self.process_up = Gauge(
            "sessionstore_process_up",
            "1 while a supervised loop of this process runs normally, 0 while it retries a "
            "failing database (or has stopped)",
            ["process"],
            registry=self.registry,
        )
        self.process_retries = Counter(
            "sessionstore_process_retries",
            "Failed attempts of a supervised loop of this process (each one retried after a "
            "back-off)",
            ["process"],
            registry=self.registry,
        )


def count_requests(
    metrics: Metrics,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        return response

    return middleware


# ---------------------------------------------------------------------------------------------
# Request body limit


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, before anything parses them.

    The body is read (at most ``limit`` bytes of it) and replayed to the app, so a body without
    a Content-Length (chunked) is bounded too."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send, bad=not length.isdigit())
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send, bad=False)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, *, bad: bool) -> None:
        if bad:
            response = problem_response(
                "bad-request", "Content-Length is not a number", instance=scope.get("path")
            )
        else:
            response = problem_response(
                "body-too-large",
                f"the request body exceeds the limit of {self.limit} bytes",
                context={"limit": self.limit},
                instance=scope.get("path"),
            )
        await response(scope, receive, send)
