"""API keys: tenant + role per key, only a hash of the secret stored, revocable.

A key looks like ``ssk_<key id>_<secret>``. The key id (12 hex characters) is public and
indexes the row; the secret (32 random bytes, URL-safe base64) is checked against its SHA-256
with a constant-time comparison. Keys are random, so a fast hash is enough (no password
stretching needed); the secret is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sessionstore.adapters.storage.sql.log import SQLRunner
from sessionstore.domain.errors import InvalidInput

PREFIX = "ssk"


class Role(StrEnum):
    AGENT = "agent"  # append to and read its tenant's sessions
    READER = "reader"  # read its tenant's sessions
    ADMIN = "admin"  # everything an agent may, plus operations (rebuilds)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant the key belongs to and what it may do."""

    key_id: str
    tenant_id: str
    role: Role

    def may_append(self) -> bool:
        return self.role in (Role.AGENT, Role.ADMIN)

    def may_operate(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    tenant_id: str
    role: Role
    name: str
    created_at: datetime
    revoked_at: datetime | None


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_key() -> tuple[str, str, bytes]:
    """(key id, the full key to hand out, the hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}_{key_id}_{secret}", _hash(secret)


def split_key(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 12 or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyStore:
    """API keys in the store's own database, with a short cache of verified keys."""

    CACHE_SECONDS = 5.0
    """How long a verified key is trusted without re-reading it (bounds revocation delay)."""

    def __init__(self, db: SQLRunner | None) -> None:
        self._db = db
        self._memory: dict[str, tuple[bytes, str, Role, str, datetime, datetime | None]] = {}
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._hashes: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def create(self, tenant_id: str, role: str, name: str = "") -> tuple[KeyInfo, str]:
        """Create a key; returns its info and the key itself (shown only now)."""
        if not tenant_id or len(tenant_id) > 200:
            raise InvalidInput([{"field": "tenant_id", "message": "must be 1 to 200 characters"}])
        try:
            parsed = Role(role)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise InvalidInput([{"field": "role", "message": f"must be one of {roles}"}]) from None
        key_id, token, secret_hash = new_key()
        now = datetime.now(UTC)
        if self._db is None:
            with self._lock:
                self._memory[key_id] = (secret_hash, tenant_id, parsed, name, now, None)
        else:
            p = self._db.placeholder
            self._db._write(
                "INSERT INTO api_keys (key_id, secret_hash, tenant_id, role, name) "
                f"VALUES ({p}, {p}, {p}, {p}, {p})",
                [key_id, secret_hash, tenant_id, parsed.value, name],
            )
        return KeyInfo(key_id, tenant_id, parsed, name, now, None), token

    def list(self) -> list[KeyInfo]:
        if self._db is None:
            with self._lock:
                return [
                    KeyInfo(k, t, r, n, c, rv) for k, (_, t, r, n, c, rv) in self._memory.items()
                ]
        rows = self._db._raw(
            "SELECT key_id, tenant_id, role, name, created_at, revoked_at FROM api_keys "
            "ORDER BY created_at, key_id",
            [],
        )
        return [
            KeyInfo(
                r[0], r[1], Role(r[2]), r[3], _time(r[4]), None if r[5] is None else _time(r[5])
            )
            for r in rows
        ]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if there is no such (unrevoked) key."""
        with self._lock:
            self._cache.pop(key_id, None)
        if self._db is None:
            with self._lock:
                found = self._memory.get(key_id)
                if found is None or found[5] is not None:
                    return False
                self._memory[key_id] = (*found[:5], datetime.now(UTC))
                return True
        p = self._db.placeholder
        before = self._db._raw(f"SELECT revoked_at FROM api_keys WHERE key_id = {p}", [key_id])
        if not before or before[0][0] is not None:
            return False
        now = datetime.now(UTC)
        stamp: object = now if p == "%s" else now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._db._write(f"UPDATE api_keys SET revoked_at = {p} WHERE key_id = {p}", [stamp, key_id])
        return True

    def authenticate(self, token: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key."""
        parts = split_key(token)
        if parts is None:
            return None
        key_id, secret = parts
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self.CACHE_SECONDS:
            principal = cached[1]
            stored_hash = self._stored_hash(key_id)
            if stored_hash is not None and hmac.compare_digest(stored_hash, _hash(secret)):
                return principal
            return None
        row = self._lookup(key_id)
        if row is None:
            return None
        secret_hash, tenant_id, role, revoked = row
        if revoked or not hmac.compare_digest(secret_hash, _hash(secret)):
            return None
        principal = Principal(key_id, tenant_id, role)
        with self._lock:
            self._cache[key_id] = (now, principal)
            self._hashes[key_id] = secret_hash
        return principal

    def _stored_hash(self, key_id: str) -> bytes | None:
        with self._lock:
            return self._hashes.get(key_id)

    def _lookup(self, key_id: str) -> tuple[bytes, str, Role, bool] | None:
        if self._db is None:
            with self._lock:
                found = self._memory.get(key_id)
            if found is None:
                return None
            return found[0], found[1], found[2], found[5] is not None
        p = self._db.placeholder
        rows = self._db._raw(
            f"SELECT secret_hash, tenant_id, role, revoked_at FROM api_keys WHERE key_id = {p}",
            [key_id],
        )
        if not rows:
            return None
        r = rows[0]
        return bytes(r[0]), r[1], Role(r[2]), r[3] is not None


def _time(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
