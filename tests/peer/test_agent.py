"""``shoal agent`` as a real process: it seeds what the store holds to a real libtorrent
leecher, and its local API checks the token and the Host header."""

from __future__ import annotations

import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import libtorrent as lt
import pytest

from peer.agent import host_allowed
from shoal.testing import free_port, wait_listening
from tests.conftest import SHOAL
from tests.peer.conftest import Fleet, finish


@pytest.fixture
def agent(fleet: Fleet, tmp_path: Path) -> Iterator[tuple[str, str, int, Path]]:
    """A store filled by a real pull, then the origin stopped and an agent started on it."""
    models = tmp_path / "store"
    finish(fleet.pull("demo:v1", models, "--edge", fleet.origin_url, "--no-lsd"))
    fleet.kill("seed")
    api, bt = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *(str(SHOAL), "agent", "--models-dir", str(models), "--api-port", str(api)),
            *("--host", "127.0.0.1", "--port", str(bt), "--no-lsd"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(api, proc, "shoal agent")
        token = (models / "agent.token").read_text().strip()
        yield f"http://127.0.0.1:{api}", token, bt, models
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode in (0, 128 + signal.SIGTERM), err
        assert "Traceback" not in err


def test_api_token_and_host_checks(agent: tuple[str, str, int, Path]) -> None:
    url, token, _, models = agent
    assert stat.S_IMODE((models / "agent.token").stat().st_mode) == 0o600
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer x"}).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    rebound = httpx.get(f"{url}/v1/models", headers={**auth, "Host": "evil.example:8473"})
    assert rebound.status_code == 403
    models_seen = httpx.get(f"{url}/v1/models", headers=auth).json()
    assert [m["ref"] for m in models_seen] == ["library/demo:v1"]
    assert models_seen[0]["seeding"] is True
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_seeds_the_store_to_a_leecher(
    agent: tuple[str, str, int, Path], fleet: Fleet, tmp_path: Path
) -> None:
    url, token, bt, _ = agent
    ses = lt.session(
        {
            "listen_interfaces": f"127.0.0.1:{free_port()}",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
        }
    )
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(fleet.pubs["demo:v1"].torrent_path.read_bytes())
    params.save_path = str(tmp_path / "leech")
    h = ses.add_torrent(params)
    h.connect_peer(("127.0.0.1", bt))
    deadline = time.monotonic() + 60
    while not h.status().is_seeding:
        assert time.monotonic() < deadline, "the leecher did not finish from the agent"
        time.sleep(0.1)
    ses.remove_torrent(h)
    src = fleet.srcs["demo:v1"]
    for f in fleet.pubs["demo:v1"].manifest.files:
        got = tmp_path / "leech" / "demo-v1" / f.path.value
        deadline = time.monotonic() + 10
        while got.stat().st_size != f.size and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got.read_bytes() == (src / f.path.value).read_bytes()
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    uploaded = next(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("shoal_seed_upload_bytes ")
    )
    assert uploaded >= sum(f.size for f in fleet.pubs["demo:v1"].manifest.files)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8473", True),
        ("localhost", True),
        ("[::1]:8473", True),
        ("evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("", False),
        (None, False),
    ],
)
def test_host_names(host: str | None, ok: bool) -> None:
    assert host_allowed(host) is ok
