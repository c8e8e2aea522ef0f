"""A throwaway PostgreSQL cluster that tests may stop and start again (same port, same data).

The shared server (SESSIONSTORE_TEST_DATABASE_URL) must never be stopped: other clients use it.
Tests that take PostgreSQL away from a running process use this cluster instead: ``initdb``
into a temporary directory (as the ``postgres`` OS user when the tests run as root: initdb
refuses root; ``scripts/ensure-postgres.sh`` does the same), trust authentication, a free port
on 127.0.0.1, no fsync. One cluster serves the whole run (``pg_cluster``, started on first use,
stopped and deleted at the end even when tests fail); ``cluster`` hands it to a test and makes
sure it is running again afterwards, whatever the test did to it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sessionstore.adapters.bootstrap import migrate
from sessionstore.adapters.settings import Settings, load_settings
from tests.kafka_broker import free_port

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
START_SECONDS = 60


class Cluster:
    """One PostgreSQL cluster in its own directory; ``stop`` and ``start`` keep port and data."""

    def __init__(self) -> None:
        if not BINARIES:
            pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql", pytrace=False)
        self.bin = BINARIES[-1]
        self.root = Path(tempfile.mkdtemp(prefix="sessionstore-cluster-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = START_SECONDS) -> None:
        done = subprocess.run(  # noqa: S603 - the cluster's own binaries, fixed arguments
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            msg = f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr}\n{log}"
            raise RuntimeError(msg)

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(START_SECONDS), "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, the port closes."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        cluster.init()
        cluster.start()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        cluster.destroy()
        pytest.fail(f"could not start a throwaway PostgreSQL cluster: {e}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def cluster(pg_cluster: Cluster) -> Iterator[Cluster]:
    """The throwaway cluster, running again after the test whatever the test did."""
    try:
        yield pg_cluster
    finally:
        if not pg_cluster.running:
            pg_cluster.start()


def cluster_schema(cluster: Cluster, **overrides: object) -> Settings:
    """Settings for a fresh, migrated schema of the throwaway cluster."""
    settings = load_settings(
        database_url=cluster.url, database_schema=f"t_{uuid.uuid4().hex[:16]}", **overrides
    )
    migrate(settings)
    return settings


def drop_cluster_schema(settings: Settings) -> None:
    with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(settings.database_schema)
            )
        )
