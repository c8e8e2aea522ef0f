"""``serve``: the HTTP API; on the embedded default, a first admin key too."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from sessionstore.adapters.bootstrap import migrate, open_log
from sessionstore.adapters.cli.common import (
    _configure_logging,
    _console,
    _print_migrations,
    _reported_errors,
    _stopped_by_signals,
)
from sessionstore.adapters.cli.supervised import console_supervisor
from sessionstore.adapters.http.keys import KeyStore
from sessionstore.adapters.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

DEV_TENANT = "dev"


def serve(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default SESSIONSTORE_HTTP_HOST)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port to listen on (default SESSIONSTORE_HTTP_PORT)."),
    ] = None,
    projector: Annotated[
        bool,
        typer.Option(
            "--projector/--no-projector",
            help="Also apply the log to the views in this process (off when a separate "
            "`sessionstore projections run` does it).",
        ),
    ] = True,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs). Every request needs an API key.

    On the embedded default (SQLite) the schema is migrated first, and if the database has no
    API key yet an admin key for tenant "dev" is created and printed, once. A database that
    does not answer yet is waited for; the embedded projector rides out later outages and
    /readyz reports them.
    """
    import uvicorn

    out = _console()
    stop = threading.Event()
    with _reported_errors():
        settings = load_settings()
        _configure_logging()
        # An unreachable database at start is waited for (reported once, retried with back-off)
        # like one lost later; a configuration error ends the command.
        starting = console_supervisor("serve", out, settings)
        with _stopped_by_signals(stop):
            api = starting.call(lambda: _prepare(out, settings, projector=projector), stop)
        if api is None:
            return
        where = f"http://{host or settings.http_host}:{port or settings.http_port}"
        out.print(f"serving {settings.redacted_url()} on {where} (docs: {where}/docs)")
        uvicorn.run(
            api, host=host or settings.http_host, port=port or settings.http_port, log_level="info"
        )


def _prepare(out: Console, settings: Settings, *, projector: bool) -> FastAPI:
    """Migrate (SQLite), make sure a key exists or say so, and build the app."""
    from sessionstore.adapters.http.app import create_app, key_store

    if settings.backend == "sqlite":
        _print_migrations(out, settings, migrate(settings))
    log = open_log(settings)
    try:
        keys = key_store(settings, log)
        if settings.backend != "postgres" and not keys.list():
            _print_dev_key(out, keys, settings)
        elif not any(k.revoked_at is None for k in keys.list()):
            out.print(
                "[yellow]no API key exists: every request will be refused; create one with "
                "`sessionstore keys create --tenant T --role admin`[/]",
                soft_wrap=True,
            )
        # memory:// keeps its keys in this process: the app must use this very key store.
        return create_app(
            settings,
            keys=keys if settings.backend == "memory" else None,
            project=projector,
        )
    finally:
        log.close()


def _print_dev_key(out: Console, keys: KeyStore, settings: Settings) -> None:
    _info, token = keys.create(DEV_TENANT, "admin", name="dev key created by serve")
    out.print(
        "\n[bold yellow]" + "!" * 78 + "[/]\n"
        f"[bold yellow]No API key existed in {settings.redacted_url()}: created an ADMIN key "
        f'for tenant "{DEV_TENANT}".[/]\n'
        "[bold yellow]It is shown only now. Use it as  Authorization: Bearer <key>[/]\n\n"
        f"    [bold]{token}[/]\n\n"
        "[bold yellow]Revoke it (`sessionstore keys revoke`) before exposing this server.[/]\n"
        "[bold yellow]" + "!" * 78 + "[/]\n",
        soft_wrap=True,
    )
