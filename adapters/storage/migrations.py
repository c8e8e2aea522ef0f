"""Versioned schema migrations shared by the SQL backends: one file per step, applied in order.

Each backend keeps ``NNNN_name.sql`` files in its ``migrations`` package; a ``schema_migrations``
table records which ran. Migrations are applied by one explicit command (``sessionstore db
migrate``) under a database-wide lock, never implicitly by racing application processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from sessionstore.domain.errors import DatabaseMisconfigured, SchemaNotReady

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def discover(package: str) -> list[Migration]:
    """The migrations shipped in ``package``, in version order, checked to be contiguous."""
    found = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            msg = f"migrations in {package} are not contiguous at {migration.label}"
            raise RuntimeError(msg)
    return found


def check_version(applied: int | None, migrations: list[Migration], where: str) -> None:
    """Raise unless the database is at exactly the schema version this code was built for."""
    latest = migrations[-1].version if migrations else 0
    if applied is None:
        raise SchemaNotReady(f"{where} has no sessionstore schema")
    if applied < latest:
        raise SchemaNotReady(f"{where} is at schema version {applied}, this code needs {latest}")
    if applied > latest:
        msg = (
            f"{where} is at schema version {applied}, newer than this code's {latest}: "
            "upgrade sessionstore"
        )
        raise DatabaseMisconfigured(msg, applied=applied, latest=latest)
