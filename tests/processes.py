"""Long-running sessionstore commands as real processes, for the resilience tests: started with
``SESSIONSTORE_*`` settings, their output captured to a file, stopped with SIGTERM (as a
supervisor stops them), killed if they do not stop. ``eventually`` waits on a condition with a
deadline (never a fixed sleep)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionstore.adapters.settings import Settings

SESSIONSTORE = [sys.executable, "-m", "sessionstore"]
ROOT = Path(__file__).parent.parent


def env_of(settings: Settings, **extra: object) -> dict[str, str]:
    """The settings (and ``extra`` ones) as SESSIONSTORE_* variables, for a CLI process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
    for name, value in (settings.model_dump() | extra).items():
        env[f"SESSIONSTORE_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "400"  # one report per line, however long
    return env


def eventually(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Wait until ``condition()`` is truthy (checked every 50 ms) and return it; fail after
    ``timeout`` seconds. Exceptions from the condition count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = condition()
        except Exception as e:  # noqa: BLE001 - e.g. the database is not back yet
            last, value = e, None
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}{detail}", pytrace=False)
        time.sleep(0.05)


class Command:
    """One sessionstore command running in the background."""

    def __init__(self, args: list[str], env: dict[str, str], output: Path) -> None:
        self.args, self.output = args, output
        with output.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
                [*SESSIONSTORE, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def lines(self, *words: str) -> list[str]:
        """The output lines containing every one of ``words``."""
        return [line for line in self.text().splitlines() if all(w in line for w in words)]

    def says(self, *words: str) -> bool:
        return bool(self.lines(*words))

    def reported(self, *words: str, timeout: float = 60) -> None:
        """Wait until a line with ``words`` appears; fail at once if the process exits."""

        def seen() -> bool:
            if self.says(*words):
                return True
            if not self.alive:
                pytest.fail(
                    f"{' '.join(self.args)} exited with {self.process.returncode} before "
                    f"reporting {words}:\n{self.text()}",
                    pytrace=False,
                )
            return False

        eventually(seen, timeout, f"{' '.join(self.args)} to report {words}")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code (killed after ``timeout`` seconds)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            pytest.fail(f"{' '.join(self.args)} did not stop on SIGTERM:\n{self.text()}")

    def exit_code(self, timeout: float) -> int:
        """Wait for the command to end by itself."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            pytest.fail(f"{' '.join(self.args)} did not end within {timeout}s:\n{self.text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def reported_once(command: Command, failing: str) -> None:
    """One line when the command started failing, one when it recovered, no traceback."""
    text = command.text()
    assert "Traceback" not in text, text
    assert len(command.lines(failing)) == 1, text
    assert len(command.lines("recovered after")) == 1, text
    assert len(command.lines("retrying in")) == 1, text
