"""Connection failures the server itself reports as configuration, which no retry fixes.

The server refuses a connection with SQLSTATE 3D000 (the database does not exist), 28P01
(password authentication failed) or 28000 (the role does not exist, no pg_hba.conf entry, an
ident/peer/certificate refusal). libpq does not hand the SQLSTATE of a refused *connection* to
psycopg (``OperationalError.sqlstate`` is None then), only the server's message, so those are
recognised by the server's (English) wording; under another ``lc_messages`` they are taken for
transient failures and retried, which is the safe side. Errors on an established connection
carry their SQLSTATE and are checked by it.

A pool that cannot connect says only "couldn't get a connection after N sec" (psycopg_pool logs
the reason and keeps trying); ``probe`` makes one direct connection to learn the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing import persistence as es
from psycopg_pool import ConnectionPool, PoolTimeout

MISCONFIGURED_SQLSTATES = frozenset({"3D000", "28P01", "28000"})

_REFUSALS = re.compile(
    r'database "[^"]*" does not exist'
    r'|role "[^"]*" does not exist'
    r'|password authentication failed for user "[^"]*"'
    r"|no pg_hba\.conf entry for [^\n]*"
    r'|\w+ authentication failed for user "[^"]*"'
)


def misconfiguration(error: BaseException) -> str | None:
    """The server's reason if ``error`` (or what caused it) is a refusal no retry fixes."""
    found: BaseException | None = error
    for _ in range(4):  # the error, the library's cause, psycopg's, the probe's
        if found is None:
            return None
        if isinstance(found, psycopg.Error):
            if found.sqlstate in MISCONFIGURED_SQLSTATES:
                return " ".join(str(found).split())
            match = _REFUSALS.search(str(found))
            if match:
                return f"the server refused the connection: {match.group(0)}"
        found = found.__cause__
    return None


def probe(kwargs: dict[str, Any], timeout: float) -> psycopg.Error | None:
    """Connect once, directly: the error that stops a connection now, or None if it works."""
    params = {k: kwargs[k] for k in ("dbname", "host", "port", "user", "password") if k in kwargs}
    try:
        conn = psycopg.connect(**params, connect_timeout=max(1, round(timeout)))
    except psycopg.Error as e:
        return e
    conn.close()
    return None


@contextmanager
def explained(pool: ConnectionPool[Any]) -> Iterator[None]:
    """Around the datastore's ``get_connection``: when the pool times out, say why (the
    direct connection's error, which ``misconfiguration`` can read) instead of just "timeout"."""
    try:
        yield
    except es.OperationalError as e:
        if not isinstance(e.__cause__, PoolTimeout):
            raise
        kwargs = pool.kwargs() if callable(pool.kwargs) else pool.kwargs
        reason = probe(kwargs or {}, pool.timeout)
        if reason is None:
            raise  # the server answers: the pool was just busy
        raise es.OperationalError(f"cannot connect: {reason}") from reason
