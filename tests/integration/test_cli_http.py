"""`sessionstore keys ...` and `sessionstore serve` as a user runs them (real console script)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_cli import CONSOLE_SCRIPT, clean_env

TOKEN = re.compile(r"\bssk_[0-9a-f]{12}_[A-Za-z0-9_-]+")


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(CONSOLE_SCRIPT), *args],
        env=clean_env(SESSIONSTORE_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert run(url, "db", "migrate").returncode == 0

    created = run(url, "keys", "create", "--tenant", "acme", "--role", "agent", "--name", "bot")
    assert created.returncode == 0, created.stderr
    token = TOKEN.search(created.stdout)
    assert token is not None
    key_id = token.group(0).split("_")[1]

    listed = json.loads(run(url, "keys", "list", "--json").stdout)
    assert [(k["key_id"], k["tenant_id"], k["role"], k["revoked_at"]) for k in listed] == [
        (key_id, "acme", "agent", None)
    ]
    assert token.group(0) not in run(url, "keys", "list").stdout  # the secret is never shown

    bad_role = run(url, "keys", "create", "--tenant", "acme", "--role", "root")
    assert bad_role.returncode == 1
    assert "role" in bad_role.stderr

    assert run(url, "keys", "revoke", key_id).returncode == 0
    again = run(url, "keys", "revoke", key_id)
    assert again.returncode == 1
    assert key_id in again.stderr
    assert json.loads(run(url, "keys", "list", "--json").stdout)[0]["revoked_at"] is not None


def test_serve_on_the_embedded_default_prints_a_dev_key_and_requires_it(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
        [str(CONSOLE_SCRIPT), "serve", "--port", str(port), "--no-projector"],
        cwd=tmp_path,
        env=clean_env(),  # no URL: the embedded SQLite default in the working directory
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        output, token = "", None
        deadline = time.monotonic() + 60
        while token is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                pytest.fail(f"serve exited before printing a key:\n{output}")
            output += line
            found = TOKEN.search(line)
            token = found.group(0) if found else None
        assert token is not None, output
        assert "ADMIN key" in output
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if server.poll() is not None:
                        pytest.fail(f"serve exited:\n{output}")
                    continue
            refused = client.post("/v1/sessions", json={"user_id": "u", "agent_id": "a"})
            assert refused.status_code == 401
            assert refused.headers["content-type"].startswith("application/problem+json")
            created = client.post(
                "/v1/sessions",
                json={"user_id": "u", "agent_id": "a"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert created.status_code == 201, created.text
            assert created.json()["version"] == 1
        assert (tmp_path / "sessionstore.db").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
