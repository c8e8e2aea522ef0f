"""``keys``: the HTTP API's keys (create, list, revoke); each maps to a tenant and a role."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Annotated

import typer
from pydantic_core import to_jsonable_python
from rich import box
from rich.table import Table

from sessionstore.adapters.bootstrap import open_log
from sessionstore.adapters.cli.common import (
    EXIT_REQUEST,
    JsonOption,
    _console,
    _fail,
    _reported_errors,
)
from sessionstore.adapters.cli.render_json import _print_json
from sessionstore.adapters.http.keys import KeyStore
from sessionstore.adapters.settings import load_settings

keys_app = typer.Typer(
    help="API keys of the HTTP API: each maps to a tenant and a role.", no_args_is_help=True
)


@contextmanager
def _keys() -> Iterator[KeyStore]:
    from sessionstore.adapters.http.app import key_store

    settings = load_settings()
    if settings.backend == "memory":
        _fail("API keys need a database: memory:// keeps nothing between commands", EXIT_REQUEST)
    log = open_log(settings)
    try:
        yield key_store(settings, log)
    finally:
        log.close()


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key acts for.")],
    role: Annotated[str, typer.Option("--role", help="agent, reader or admin.")],
    name: Annotated[str, typer.Option("--name", help="A label (who uses the key).")] = "",
) -> None:
    """Create a key and print it: it is shown only now (only a hash is stored)."""
    with _reported_errors(), _keys() as keys:
        info, token = keys.create(tenant, role, name)
    out = _console()
    out.print(
        f"created key {info.key_id} ({info.role.value} of tenant {info.tenant_id}); "
        "store it now, it is not shown again:",
        soft_wrap=True,
    )
    typer.echo(token)


@keys_app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """List keys (ids, tenants, roles, names; never the secrets)."""
    with _reported_errors(), _keys() as keys:
        listed = keys.list()
    if as_json:
        _print_json(
            [
                {
                    "key_id": k.key_id,
                    "tenant_id": k.tenant_id,
                    "role": k.role.value,
                    "name": k.name,
                    "created_at": to_jsonable_python(k.created_at),
                    "revoked_at": to_jsonable_python(k.revoked_at),
                }
                for k in listed
            ]
        )
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("key id", "tenant", "role", "name", "created (UTC)", "revoked"):
        table.add_column(column)
    for k in listed:
        table.add_row(
            k.key_id,
            k.tenant_id,
            k.role.value,
            k.name,
            k.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "" if k.revoked_at is None else k.revoked_at.astimezone(UTC).strftime("%Y-%m-%d"),
        )
    _console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
) -> None:
    """Revoke a key: servers refuse it within seconds (their cache of verified keys)."""
    with _reported_errors(), _keys() as keys:
        revoked = keys.revoke(key_id)
    if not revoked:
        _fail(f"no active key {key_id!r}", EXIT_REQUEST)
    _console().print(f"revoked key {key_id}", soft_wrap=True)
