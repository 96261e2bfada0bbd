"""Processes a run starts: each logs to its own file, and every one is stopped at the end
(SIGTERM, then SIGKILL), whatever happened."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from shoal.errors import ShoalError
from shoal.testing import stop_processes, wait_listening


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int | None = None,
        ready: Callable[[subprocess.Popen[bytes]], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv``; with ``port``, wait until it listens on 127.0.0.1:port; with
        ``ready``, until that returns (it raises ``RuntimeError`` if the process is not)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        self.running[name] = proc
        if port is not None or ready is not None:
            try:
                if port is not None:
                    wait_listening(port, proc, name)
                if ready is not None:
                    ready(proc)
            except RuntimeError:
                raise ShoalError(
                    f"{name} did not start (exit code {proc.poll()})",
                    f"see {self.logs / f'{name}.log'}",
                ) from None
        return proc

    def stop_all(self) -> None:
        stop_processes(list(self.running.values()))
        self.running.clear()
