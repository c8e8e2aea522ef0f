"""API keys on every backend: only a hash stored, tenant and role kept, revocation honoured."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessionstore.adapters.bootstrap import open_log
from sessionstore.adapters.http.keys import KeyStore, Principal, Role, split_key
from sessionstore.adapters.settings import Settings
from sessionstore.domain.errors import InvalidInput


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def keys(request: pytest.FixtureRequest) -> Iterator[KeyStore]:
    if request.param == "memory":
        yield KeyStore(None)
        return
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    settings: Settings = request.getfixturevalue(
        "pg_settings" if request.param == "postgres" else "sqlite_settings"
    )
    log = open_log(settings)
    yield KeyStore(log)  # type: ignore[arg-type]
    log.close()


def test_a_created_key_authenticates_as_its_tenant_and_role(keys: KeyStore) -> None:
    info, token = keys.create("acme", "agent", name="voice bot")
    assert token.startswith(f"ssk_{info.key_id}_")
    assert keys.authenticate(token) == Principal(info.key_id, "acme", Role.AGENT)
    listed = keys.list()
    assert [(k.key_id, k.tenant_id, k.role, k.name, k.revoked_at) for k in listed] == [
        (info.key_id, "acme", Role.AGENT, "voice bot", None)
    ]
    # Only a hash is stored: nothing listed contains the secret.
    secret = split_key(token)
    assert secret is not None
    assert secret[1] not in repr(listed)


def test_wrong_malformed_and_unknown_keys_are_refused(keys: KeyStore) -> None:
    info, token = keys.create("acme", "reader")
    assert keys.authenticate(token) is not None
    assert keys.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert keys.authenticate(f"ssk_{info.key_id}_") is None
    assert keys.authenticate("ssk_000000000000_whatever") is None
    assert keys.authenticate("Bearer nonsense") is None
    assert keys.authenticate("") is None


def test_a_revoked_key_no_longer_authenticates(keys: KeyStore) -> None:
    info, token = keys.create("acme", "admin")
    assert keys.authenticate(token) is not None  # now cached
    assert keys.revoke(info.key_id) is True
    assert keys.authenticate(token) is None  # revocation drops the cached key at once
    assert keys.revoke(info.key_id) is False
    assert keys.list()[0].revoked_at is not None


def test_bad_roles_and_tenants_are_invalid_input(keys: KeyStore) -> None:
    with pytest.raises(InvalidInput) as caught:
        keys.create("acme", "superuser")
    assert caught.value.errors[0]["field"] == "role"
    with pytest.raises(InvalidInput):
        keys.create("", "agent")
    assert keys.list() == []
