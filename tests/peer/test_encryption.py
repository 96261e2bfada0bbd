"""Issue 31, item 3: BitTorrent protocol encryption as a setting. Two agents with
``--encryption require`` and an origin with it: the second agent's pull completes over
BitTorrent (HTTP capped to a trickle), and a libtorrent peer that speaks plaintext only
cannot connect to an agent, while one that encrypts can."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from shoal.encryption import lt_settings
from shoal.testing import free_port, stop_processes, wait_listening
from tests.conftest import SHOAL
from tests.peer.conftest import MODEL, Fleet
from tests.peer.test_agent import api_pull, start_agent


@pytest.fixture
def encrypted(tmp_path: Path) -> Iterator[tuple[Fleet, list[subprocess.Popen[str]]]]:
    f = Fleet(tmp_path)
    f.add_model("demo:v1", MODEL)
    procs: list[subprocess.Popen[str]] = []
    try:
        f.start_coordinator()
        procs.append(
            subprocess.Popen(
                [
                    *(str(SHOAL), "seed", str(f.pubs["demo:v1"].out), "--host", "127.0.0.1"),
                    *("--port", str(f.http_port), "--bt-listen", f"127.0.0.1:{f.bt_port}"),
                    *("--coordinator", f.coord_url, "--token", "edge"),
                    *("--encryption", "require"),
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        wait_listening(f.http_port, procs[-1], "shoal seed")
        yield f, procs
    finally:
        stop_processes([*procs, *(p for p in (f.coordinator,) if p is not None)])


def peer_session(mode: str) -> Any:
    s = lt.session(
        {
            "listen_interfaces": f"127.0.0.1:{free_port()}",
            "enable_lsd": False,
            "enable_dht": False,
            "enable_outgoing_utp": False,  # agents speak TCP only
            "enable_incoming_utp": False,
        }
    )
    s.apply_settings(lt_settings(mode))  # type: ignore[arg-type]
    return s


def connects(mode: str, torrent: bytes, port: int, save: Path) -> bool:
    """Whether a libtorrent session in ``mode`` gets pieces from 127.0.0.1:``port``."""
    s = peer_session(mode)
    atp = lt.add_torrent_params()
    atp.ti, atp.save_path = lt.torrent_info(lt.bdecode(torrent)), str(save)
    h = s.add_torrent(atp)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        h.connect_peer(("127.0.0.1", port))
        if h.status().total_payload_download > 0:
            return True
        time.sleep(0.5)
    return False


def test_require_between_two_agents_and_no_plaintext_peer(
    encrypted: tuple[Fleet, list[subprocess.Popen[str]]], tmp_path: Path
) -> None:
    f, procs = encrypted
    common = ["--coordinator", f.coord_url, "--token", "fleet", "--encryption", "require"]
    a_port, b_port = free_port(), free_port()
    a, a_url, a_token = start_agent(tmp_path / "a", "--port", str(a_port), *common)
    procs.append(a)
    assert api_pull(a_url, a_token, "demo:v1")["state"] == "done"
    # the second agent takes its bytes over BitTorrent: HTTP is capped to a trickle
    b, b_url, b_token = start_agent(
        tmp_path / "b", "--port", str(b_port), "--http-rate", "1K", *common
    )
    procs.append(b)
    done = api_pull(b_url, b_token, "demo:v1")
    assert done["state"] == "done", done
    result: Any = done["result"]
    assert int(result["bytes_peer"]) >= sum(MODEL.values()) // 2, result
    f.check_held(tmp_path / "b", "demo:v1")
    torrent = f.pubs["demo:v1"].torrent_path.read_bytes()
    assert not connects("off", torrent, a_port, tmp_path / "plain")  # plaintext only: refused
    assert connects("require", torrent, a_port, tmp_path / "rc4")  # the control
