"""A real HTTP API server process for the tests, with keys and (optionally) a live projector.

The server runs ``tests/integration/http_launcher.py`` (uvicorn serving ``create_app``) in a
child process on a free loopback port, with ``SESSIONSTORE_*`` variables pointing at the test's
database. API keys are created beforehand, straight in that database, with ``KeyStore``. A
projection runner can follow the log in a thread of the test process, as a separate projector
process would in production, so reads through the views (and ``min_position`` waits) work.

Fixtures (module scope: starting a process and migrating a schema costs about a second, so a
test module shares one server per backend; tests use their own sessions and user ids):
``http_server`` (with a projector) and ``http_server_without_projector`` (nothing applies the
log to the views), each parametrised over SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sessionstore.adapters.bootstrap import migrate, open_log, open_views, open_waiter
from sessionstore.adapters.http.keys import KeyStore
from sessionstore.adapters.settings import Settings, load_settings
from sessionstore.projections import all_projections
from sessionstore.projections.runner import ProjectionRunner
from tests.fix_db import drop_schema

LAUNCHER = Path(__file__).parent / "integration" / "http_launcher.py"
ROOT = Path(__file__).parent.parent
STARTUP_SECONDS = 30.0
ROLES = ("agent", "reader", "admin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
    env.update(
        SESSIONSTORE_DATABASE_URL=settings.database_url,
        SESSIONSTORE_DATABASE_SCHEMA=settings.database_schema,
        SESSIONSTORE_POOL_MAX_SIZE=str(settings.pool_max_size),
        SESSIONSTORE_MAX_CONTENT_BYTES=str(settings.max_content_bytes),
        SESSIONSTORE_MAX_JSON_BYTES=str(settings.max_json_bytes),
        SESSIONSTORE_HTTP_WAIT_SECONDS=str(settings.http_wait_seconds),
        PYTHONPATH=str(ROOT),
    )
    return env


@contextmanager
def running_server(settings: Settings, log_path: Path) -> Iterator[str]:
    """Start the server, wait until ``/healthz`` answers 200, yield its base URL, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own launcher, fixed arguments
            [sys.executable, str(LAUNCHER), str(port)],
            env=server_env(settings),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(process, url, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx.Client(base_url=url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            # Waiting on the process doubles as the pause between polls: an early exit ends it.
            try:
                code = process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(
                f"the API server exited with {code} before answering /healthz:\n"
                + log_path.read_text(errors="replace"),
                pytrace=False,
            )
    pytest.fail(
        f"the API server did not answer /healthz within {STARTUP_SECONDS}s:\n"
        + log_path.read_text(errors="replace"),
        pytrace=False,
    )


@contextmanager
def live_projector(settings: Settings) -> Iterator[None]:
    """A projection runner following the log in a thread, until the block ends."""
    log = open_log(settings)
    views = open_views(settings)
    stop = threading.Event()
    waiter = open_waiter(settings, stop)
    runner = ProjectionRunner(log, views, all_projections(), batch_size=200)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(stop, waiter, poll_interval=0.02)
        except Exception as e:  # noqa: BLE001 - reported when the block ends, with the event
            failures.append(e)

    thread = threading.Thread(target=run, name="test-projector", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        waiter.close()
        views.close()
        log.close()
    assert not failures, f"the projector failed: {failures[0]!r}"


@dataclass
class Server:
    """A running API server and the keys to call it with."""

    url: str
    settings: Settings
    log_path: Path
    tenants: tuple[str, str]
    keys: dict[tuple[str, str], str] = field(default_factory=dict)
    """``(tenant, role) -> bearer token`` for both tenants and every role."""
    revoked: str = ""
    """A key of the first tenant (role agent) that was revoked before the server started."""
    key_ids: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, role: str = "agent", tenant: int = 0) -> str:
        return self.keys[(self.tenants[tenant], role)]

    def client(self, role: str = "agent", tenant: int = 0, timeout: float = 15.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(role, tenant)}"},
            timeout=timeout,
        )

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")


def create_keys(settings: Settings, server: Server) -> None:
    log = open_log(settings)
    try:
        keys = KeyStore(log)  # type: ignore[arg-type]  # both SQL logs have the helpers
        for tenant in server.tenants:
            for role in ROLES:
                info, token = keys.create(tenant, role, name=f"test {role}")
                server.keys[(tenant, role)] = token
                server.key_ids[(tenant, role)] = info.key_id
        info, server.revoked = keys.create(server.tenants[0], "agent", name="revoked")
        assert keys.revoke(info.key_id)
    finally:
        log.close()


@contextmanager
def database(kind: str, pg_url: str, tmp: Path, **overrides: object) -> Iterator[Settings]:
    """A fresh, migrated database of ``kind`` (sqlite or postgres), dropped afterwards."""
    if kind == "sqlite":
        settings = load_settings(database_url=f"sqlite:///{tmp / 'events.db'}", **overrides)
        migrate(settings)
        yield settings
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    settings = load_settings(
        database_url=pg_url, database_schema=schema, pool_max_size=12, **overrides
    )
    migrate(settings)
    try:
        yield settings
    finally:
        drop_schema(pg_url, schema)


@contextmanager
def api_server(
    kind: str, pg_url: str, tmp: Path, *, projector: bool, **overrides: object
) -> Iterator[Server]:
    with database(kind, pg_url, tmp, **overrides) as settings:
        suffix = uuid.uuid4().hex[:8]
        server = Server(
            url="", settings=settings, log_path=tmp / "server.log",
            tenants=(f"acme-{suffix}", f"globex-{suffix}"),
        )  # fmt: skip
        create_keys(settings, server)
        with running_server(settings, server.log_path) as url:
            server.url = url
            if projector:
                with live_projector(settings):
                    yield server
            else:
                yield server


BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


def _pg_url_if(kind: str, request: pytest.FixtureRequest) -> str:
    if kind != "postgres":
        return ""
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture(scope="module", params=BACKENDS)
def http_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server on a fresh database with a live projector, shared by the module's tests."""
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(f"http-{kind}")
    with api_server(kind, _pg_url_if(kind, request), tmp, projector=True) as server:
        yield server


@pytest.fixture(scope="module", params=BACKENDS)
def http_server_without_projector(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server on a fresh database that nothing projects: views stay empty."""
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(f"http-bare-{kind}")
    pg_url = _pg_url_if(kind, request)
    # A short read-your-writes wait: these tests expect it to run out.
    with api_server(kind, pg_url, tmp, projector=False, http_wait_seconds=1.0) as server:
        yield server
