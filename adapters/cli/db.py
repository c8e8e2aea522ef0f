"""``db``: the database schema and its versioned migrations."""

from __future__ import annotations

import typer

from sessionstore.adapters.bootstrap import migrate
from sessionstore.adapters.cli.common import _console, _print_migrations, _reported_errors
from sessionstore.adapters.settings import load_settings

db_app = typer.Typer(help="Database schema: apply the versioned migrations.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations (safe to run again: then it says it is up to date)."""
    out = _console()
    with _reported_errors():
        settings = load_settings()
        _print_migrations(out, settings, migrate(settings))


@db_app.command("init")
def db_init() -> None:
    """Create the schema on a new database: the same as `db migrate`."""
    db_migrate()
