"""The root app: ``--version`` and every command and group, in the order help lists them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from sessionstore.adapters.cli.audit import audit_app
from sessionstore.adapters.cli.cleanup import cleanup
from sessionstore.adapters.cli.db import db_app
from sessionstore.adapters.cli.demo import demo
from sessionstore.adapters.cli.keys import keys_app
from sessionstore.adapters.cli.metrics import metrics_app
from sessionstore.adapters.cli.projections import projections_app
from sessionstore.adapters.cli.relay import relay_app
from sessionstore.adapters.cli.serve import serve
from sessionstore.adapters.cli.session import session_app, sessions_app

app = typer.Typer(
    name="sessionstore",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals could hold the database password
)


def main() -> None:
    """Console script entry point (``sessionstore``)."""
    app()


def _version(show: bool) -> None:
    if show:
        try:
            typer.echo(f"sessionstore {version('sessionstore')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("sessionstore (not installed)")
        raise typer.Exit


@app.callback()
def _root(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Event-sourced session store for conversational AI agents (chat and voice bots).

    Configure with SESSIONSTORE_* environment variables; the default database is the SQLite
    file sessionstore.db in the working directory.
    """


# The order here is the order of `sessionstore --help`: typer lists the commands, then the groups.
app.command()(demo)
app.command()(cleanup)
app.command()(serve)
app.add_typer(session_app, name="session")
app.add_typer(sessions_app, name="sessions")
app.add_typer(metrics_app, name="metrics")
app.add_typer(projections_app, name="projections")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(relay_app, name="relay")
