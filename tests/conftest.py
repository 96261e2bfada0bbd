"""Shared pytest fixtures: a CLI runner that runs the real ``shoal`` console script."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def aria2_webseed_download(torrent: Path, out: Path) -> None:
    """Debian's aria2c downloads ``torrent`` into ``out`` with DHT, LSD and PEX off, so its
    only sources are the torrent's web seeds (and tracker, when it has one)."""
    r = subprocess.run(
        [
            "aria2c",
            "-q",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--seed-time=0",
            f"--dir={out}",
            str(torrent),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def quiet_lt_session(flags: int | None = None) -> Any:
    """A libtorrent session on a free loopback port with every discovery off (peers are
    connected by hand), for tests that need a plain BitTorrent client."""
    import libtorrent as lt

    from shoal.testing import free_port

    settings = {
        "listen_interfaces": f"127.0.0.1:{free_port()}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
    }
    return lt.session(settings) if flags is None else lt.session(settings, flags)
