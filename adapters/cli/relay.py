"""``relay``: publish the event log to Kafka, and show the relay's position."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic_core import to_jsonable_python
from rich import box
from rich.table import Table

from sessionstore.adapters.bootstrap import open_waiter
from sessionstore.adapters.cli.common import (
    JsonOption,
    _configure_logging,
    _console,
    _opened,
    _reported_errors,
    _stopped_by_signals,
)
from sessionstore.adapters.cli.render import _seconds
from sessionstore.adapters.cli.render_json import _print_json, process_json
from sessionstore.adapters.cli.render_views import processes_table
from sessionstore.adapters.cli.supervised import console_supervisor, heartbeat, opened_retrying
from sessionstore.adapters.settings import load_settings
from sessionstore.adapters.storage.processes import RELAY, process_table
from sessionstore.domain.errors import StorageError
from sessionstore.projections.supervision import cause

if TYPE_CHECKING:
    from sessionstore.adapters.kafka.relay import Relay

relay_app = typer.Typer(
    help="Publish the event log to Kafka (run without a subcommand to start the relay).",
    invoke_without_command=True,
)


@relay_app.callback()
def relay(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Publish what the log has now, then exit.")
    ] = False,
) -> None:
    """Follow the event log and produce every event to SESSIONSTORE_KAFKA_TOPIC (acks=all;
    the position moves only after the brokers acknowledged). Keeps retrying while the brokers
    or the database are down, reporting once when that starts and once when it ends; resumes
    from its saved position after a crash."""
    if ctx.invoked_subcommand is not None:
        return
    from sessionstore.adapters.kafka.relay import Relay, relay_positions

    out = _console()
    stop = threading.Event()
    if once:
        with _reported_errors(), _opened() as (settings, log, _views), _stopped_by_signals(stop):
            relay = Relay(log, relay_positions(settings, log), settings)
            try:
                relay.connect()
                published = relay.catch_up(stop)
                status = relay.status()
                dead = len(relay.dead_letters)
                out.print(
                    f"published {published - dead} events to {_where(relay)}"
                    + (f" ({dead} dead-lettered)" if dead else "")
                    + f"; position {status.cursor.position}, lag {status.lag_events}",
                    soft_wrap=True,
                )
            finally:
                relay.close()
        return
    with _reported_errors(), _stopped_by_signals(stop):
        settings = load_settings()
        _configure_logging()
        supervisor = console_supervisor("relay", out, settings)
        with opened_retrying(settings, supervisor, stop) as opened:
            if opened is None:
                return
            log, _views = opened
            relay = Relay(log, relay_positions(settings, log), settings)
            try:
                with heartbeat(settings, log, RELAY, supervisor):
                    out.print(
                        f"relaying {settings.redacted_url()} to {_where(relay)} (Ctrl-C to stop)",
                        soft_wrap=True,
                    )
                    waiter = open_waiter(settings, stop)
                    try:
                        relay.run(
                            stop,
                            waiter,
                            report=lambda line: out.print(line, soft_wrap=True),
                            supervisor=supervisor,
                        )
                    finally:
                        waiter.close()
                    out.print(f"stopped: {_position_if_known(relay)}", soft_wrap=True)
            finally:
                relay.close()


def _where(relay: Relay) -> str:
    return f"topic {relay.topic} on {relay.bootstrap_servers}"


def _position_if_known(relay: Relay) -> str:
    try:
        status = relay.status()
    except StorageError as e:
        return f"position unknown ({cause(e)})"
    return f"position {status.cursor.position}, lag {status.lag_events}"


@relay_app.command("status")
def relay_status(as_json: JsonOption = False) -> None:
    """The relay's saved position, the log head, how many events wait to be published and how
    many it sent to the dead-letter topic (rows it could not decode or encode), and the running
    relay processes: their state, last error and whether their heartbeat is stale."""
    from sessionstore.adapters.kafka.relay import Relay, relay_positions

    with _reported_errors(), _opened() as (settings, log, _views):
        status = Relay(log, relay_positions(settings, log), settings).status()
        processes = process_table(settings, log).rows([RELAY])
    if as_json:
        _print_json(
            {
                "topic": status.topic,
                "position": status.cursor.position,
                "head": status.head.position,
                "lag_events": status.lag_events,
                "published": status.published,
                "dead_lettered": status.dead_lettered,
                "updated_at": None
                if status.updated_at is None
                else to_jsonable_python(status.updated_at),
                "processes": [process_json(p) for p in processes],
            }
        )
        return
    table = Table(box=box.SIMPLE)
    columns = ("topic", "position", "log head", "lag (events)", "published", "dead-lettered")
    for column in (*columns, "updated"):
        table.add_column(column)
    table.add_row(
        status.topic,
        str(status.cursor.position),
        str(status.head.position),
        str(status.lag_events),
        str(status.published),
        str(status.dead_lettered),
        "never" if status.updated_at is None else _seconds(status.updated_at),
    )
    console = _console()
    console.print(table)
    if processes:
        console.print(processes_table(processes, title="Relay processes"))
