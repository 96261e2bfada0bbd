"""Shared pytest fixtures: a CLI runner that runs the real ``shoal`` console script."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SHOAL = Path(sys.executable).parent / "shoal"

RunShoal = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_shoal() -> RunShoal:
    """Run ``shoal ARGS...`` as a real process; returns the completed process."""

    def run(
        *args: str | Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(SHOAL), *map(str, args)]
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", "--regid=65534", "--clear-groups", *cmd]
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    return run
