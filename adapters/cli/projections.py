"""``projections``: the views' status and lag; run them (from the log or Kafka); rebuild."""

from __future__ import annotations

import threading
from enum import StrEnum
from functools import partial
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from sessionstore.adapters.bootstrap import open_waiter
from sessionstore.adapters.cli.common import (
    JsonOption,
    _configure_logging,
    _console,
    _opened,
    _progress_bar,
    _reported_errors,
    _stopped_by_signals,
)
from sessionstore.adapters.cli.quarantine import quarantine_app
from sessionstore.adapters.cli.render_json import (
    _dataclass_json,
    _print_json,
    _status_json,
    process_json,
)
from sessionstore.adapters.cli.render_views import (
    _positions,
    _positions_of,
    processes_table,
    quarantine_note,
    status_table,
)
from sessionstore.adapters.cli.supervised import console_supervisor, heartbeat, opened_retrying
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.adapters.storage.processes import KAFKA_WORKER, RUNNER, process_table
from sessionstore.domain.errors import StorageError
from sessionstore.domain.ports import LOG_START
from sessionstore.projections import all_projections
from sessionstore.projections.runner import ProjectionRunner, rebuild, select
from sessionstore.projections.supervision import cause

projections_app = typer.Typer(
    help="The views queries read: their status and lag, run them, rebuild them.",
    no_args_is_help=True,
)


@projections_app.command("status")
def projections_status(
    as_json: JsonOption = False,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka",
            help="Also show the Kafka-fed workers' consumer group lag per partition (asks the "
            "brokers).",
        ),
    ] = False,
) -> None:
    """Show each view's generation, log position, the log head and the lag (events to apply),
    and the runners and Kafka-fed workers that feed them: their state (running, retrying with
    the last error, stopped with the reason), since when, and whether their heartbeat is stale."""
    from sessionstore.adapters.kafka.worker import PartitionLag, group_lag

    lags: list[PartitionLag] = []
    with _reported_errors(), _opened() as (settings, log, views):
        statuses = ProjectionRunner(log, views, all_projections()).status()
        processes = process_table(settings, log).rows([RUNNER, KAFKA_WORKER])
        if kafka:
            lags = group_lag(settings)
    if as_json:
        # Each view lists the processes that feed it: log-fed runners or Kafka-fed workers.
        out: Any = [
            _status_json(s)
            | {
                "processes": [
                    process_json(p)
                    for p in processes
                    if p.kind == (KAFKA_WORKER if s.feed == "kafka" else RUNNER)
                ]
            }
            for s in statuses
        ]
        if kafka:
            out = {
                "projections": out,
                "kafka": {
                    "topic": settings.kafka_topic,
                    "group": settings.kafka_group_id,
                    "partitions": [_dataclass_json(p) | {"lag": p.lag} for p in lags],
                    "lag": sum(p.lag for p in lags),
                },
            }
        _print_json(out)
        return
    console = _console()
    console.print(status_table(statuses))
    note = quarantine_note(statuses)
    if note:
        console.print(note, style="red", soft_wrap=True)
    if processes:  # the healthy table without runners stays as it always was
        console.print(processes_table(processes))
    if kafka:
        table = Table(
            title=f"Kafka group {settings.kafka_group_id}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        for header in ("partition", "committed", "end", "lag"):
            table.add_column(header, justify="right")
        for p in lags:
            style = "green" if p.lag == 0 else "yellow"
            committed = "-" if p.committed is None else str(p.committed)
            table.add_row(str(p.partition), committed, str(p.end), Text(str(p.lag), style=style))
        console.print(table)
        console.print(f"total lag: {sum(p.lag for p in lags)} messages", soft_wrap=True)


class Source(StrEnum):
    """Where ``projections run`` reads events from."""

    LOG = "log"
    KAFKA = "kafka"


@projections_app.command("run")
def projections_run(
    once: Annotated[
        bool, typer.Option("--once", help="Catch up (with the log or the topic), then exit.")
    ] = False,
    source: Annotated[
        Source,
        typer.Option(
            "--source",
            help="log: read the event log (one runner). kafka: consume the relay's topic in "
            "the consumer group SESSIONSTORE_KAFKA_GROUP_ID (run several to share partitions).",
        ),
    ] = Source.LOG,
) -> None:
    """Apply events to every view: catch up, then keep applying new events until Ctrl-C.

    Without --once it rides out database (and broker) failures: it reports once when they start
    and once when they end, and retries with back-off; only a configuration error ends it."""
    if source is Source.KAFKA:
        _run_kafka_projector(once)
        return
    if not once:
        _run_live()
        return
    out = _console()
    stop = threading.Event()
    with _reported_errors(), _opened() as (_settings, log, views), _stopped_by_signals(stop):
        runner = ProjectionRunner(log, views, all_projections())
        _catch_up(out, runner, stop)


def _catch_up(out: Any, runner: ProjectionRunner, stop: threading.Event) -> None:
    runner.check_tables()  # refuses outdated or Kafka-fed views before any progress bar
    behind = runner.log.count_after(min(s.cursor for s in runner.status()))
    with _progress_bar(out) as bar:
        task = bar.add_task("catching up", total=behind)
        applied = runner.catch_up(progress=partial(bar.advance, task), stop=stop)
    done = "stopped" if stop.is_set() else "caught up"
    out.print(f"{done}: {applied} events read; {_positions(runner)}", soft_wrap=True)
    _report_quarantine(out, runner)


def _run_live() -> None:
    out = _console()
    stop = threading.Event()
    with _reported_errors(), _stopped_by_signals(stop):
        settings = load_settings()
        _configure_logging()
        supervisor = console_supervisor("projections run", out, settings)
        with opened_retrying(settings, supervisor, stop) as opened:
            if opened is None:
                return
            log, views = opened
            with heartbeat(settings, log, RUNNER, supervisor):
                runner = ProjectionRunner(log, views, all_projections())
                supervisor.call(lambda: _catch_up(out, runner, stop), stop)
                if stop.is_set():
                    return
                waiter = open_waiter(settings, stop)
                try:
                    out.print("applying new events as they arrive (Ctrl-C to stop)", soft_wrap=True)
                    runner.run(stop, waiter, supervisor=supervisor)
                finally:
                    waiter.close()
                out.print(f"stopped: {_positions_if_known(runner)}", soft_wrap=True)


def _positions_if_known(runner: ProjectionRunner) -> str:
    try:
        return _positions(runner)
    except StorageError as e:
        return f"positions unknown ({cause(e)})"


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[
        str | None,
        typer.Argument(help="The projection to rebuild (default: all).", show_default=False),
    ] = None,
) -> None:
    """Rebuild views from position 0 into fresh tables; switch over when caught up.

    Queries keep reading the current tables until the switch, so they answer throughout.
    """
    out = _console()
    with _reported_errors(), _opened() as (_settings, log, views):
        chosen = select(all_projections(), [name] if name else [])
        names = ", ".join(p.name for p in chosen)
        with _progress_bar(out) as bar:
            # One pass over the log feeds every chosen projection's new generation.
            task = bar.add_task(f"rebuilding {names}", total=log.count_after(LOG_START))
            applied = rebuild(log, views, chosen, progress=partial(bar.advance, task))
        for projection in chosen:
            out.print(
                f"rebuilt {projection.name}: generation {views.active_generation(projection.name)}",
                soft_wrap=True,
            )
        out.print(f"{applied} events read; {_positions_of(log, views, chosen)}", soft_wrap=True)
        _report_quarantine(out, ProjectionRunner(log, views, chosen))


def _report_quarantine(out: Any, runner: ProjectionRunner) -> None:
    note = quarantine_note(runner.status())
    if note:
        out.print(note, style="red", soft_wrap=True)


def _run_kafka_projector(once: bool) -> None:
    from sessionstore.adapters.kafka.worker import KafkaProjectionWorker
    from sessionstore.projections.feed import DeliveredFeed

    out = _console()
    stop = threading.Event()
    if once:
        with _reported_errors(), _opened() as (settings, log, views), _stopped_by_signals(stop):
            worker = KafkaProjectionWorker(DeliveredFeed(log, views, all_projections()), settings)
            try:
                worker.catch_up(stop)
                out.print(
                    f"caught up with {_topic_of(settings)}: {_worker_stats(worker)}",
                    soft_wrap=True,
                )
            finally:
                worker.close()
        return
    with _reported_errors(), _stopped_by_signals(stop):
        settings = load_settings()
        _configure_logging()
        supervisor = console_supervisor("projections run --source kafka", out, settings)
        with opened_retrying(settings, supervisor, stop) as opened:
            if opened is None:
                return
            log, views = opened
            worker = KafkaProjectionWorker(DeliveredFeed(log, views, all_projections()), settings)
            try:
                with heartbeat(settings, log, KAFKA_WORKER, supervisor):
                    out.print(
                        f"applying {_topic_of(settings)} to the views of "
                        f"{settings.redacted_url()} (Ctrl-C to stop)",
                        soft_wrap=True,
                    )
                    worker.run(stop, supervisor=supervisor)
                    out.print(f"stopped: {_worker_stats(worker)}", soft_wrap=True)
            finally:
                worker.close()


def _topic_of(settings: Settings) -> str:
    return (
        f"topic {settings.kafka_topic} on {settings.kafka_bootstrap_servers} "
        f"(group {settings.kafka_group_id})"
    )


projections_app.add_typer(quarantine_app, name="quarantine")


def _worker_stats(worker: Any) -> str:
    s = worker.stats
    return (
        f"{s.received} messages received, {s.applied} events applied, {s.duplicates} "
        f"duplicates skipped, {s.healed} read from the log to fill gaps, {s.dead_lettered} "
        f"dead-lettered, {s.quarantined} quarantined; partitions {sorted(s.partitions)}"
    )
