"""``[pull]`` settings: TOML < SHOAL_PULL_* < flags, bad values named."""

from pathlib import Path

import pytest

from peer.settings import PullSettings
from shoal.errors import BadInput
from shoal.ref import ModelRef


def test_layers_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "shoal.toml"
    cfg.write_text(
        '[pull]\ncoordinator = "http://c:8470"\nedges = ["http://e1", "http://e2"]\n'
        'max_rate = "50M"\nhttp_connections = 4\nlsd = false\n'
    )
    monkeypatch.setenv("SHOAL_PULL_HTTP_CONNECTIONS", "6")
    s = PullSettings.load(cfg, proxy="socks5://u:p@127.0.0.1:1080")
    assert s.coordinator == "http://c:8470" and s.edges == ("http://e1", "http://e2")
    assert s.http_connections == 6 and s.lsd is False
    opts = s.options(ModelRef.parse("demo:v1"), tmp_path / "m")
    assert opts.max_rate == 50 * 1024 * 1024 and opts.http_slots == 6
    assert opts.proxy == "socks5://u:p@127.0.0.1:1080" and opts.session.enable_lsd is False
    assert PullSettings.load(cfg, http_connections=2).http_connections == 2
    assert opts.session.request_queue == 8  # the default reaches the libtorrent session
    monkeypatch.setenv("SHOAL_PULL_REQUEST_QUEUE", "32")  # peers far away: raise it
    assert (
        PullSettings.load(cfg).options(ModelRef.parse("a:b"), tmp_path).session.request_queue == 32
    )
    assert opts.session.peers == 4  # asked of the tracker
    assert (
        PullSettings.load(cfg, peers=12).options(ModelRef.parse("a:b"), tmp_path).session.peers
        == 12
    )


def test_bad_values_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "shoal.toml"
    cfg.write_text("[pull]\nhttp_connections = 0\n")
    with pytest.raises(BadInput, match="http_connections"):
        PullSettings.load(cfg)
    cfg.write_text("[pull]\nrequest_queue = 1\n")  # libtorrent's own floor is 2
    with pytest.raises(BadInput, match="request_queue"):
        PullSettings.load(cfg)
    cfg.write_text("[pull]\npeers = 0\n")  # a host that asks for no peers gets none
    with pytest.raises(BadInput, match="peers"):
        PullSettings.load(cfg)
    with pytest.raises(BadInput, match="unknown"):
        cfg.write_text("[pull]\nunknown = 1\n")
        PullSettings.load(cfg)


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.conftest import SHOAL

    cfg = tmp_path / "shoal.toml"
    cfg.write_text(
        '[pull]\ntoken = "pull-secret"\nproxy = "http://fleet:proxy-secret@127.0.0.1:3128"\n'
        '[agent]\ncoordinator = "http://c:8470"\n'
    )
    env = {**os.environ, "SHOAL_AGENT_TOKEN": "agent-secret"}
    r = subprocess.run(
        [str(SHOAL), "config", "show", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "secret" not in r.stdout
    assert 'proxy = "http://fleet:***@127.0.0.1:3128"' in r.stdout
    assert r.stdout.count('token = "***"') == 2
    assert 'coordinator = "http://c:8470"' in r.stdout
    bad = subprocess.run(
        [str(SHOAL), "config", "show", "--config", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "cannot read config file" in bad.stderr


def test_agent_caps_budget_and_schedule(tmp_path: Path) -> None:
    from peer.agent.settings import AgentSettings
    from peer.budget import Budget
    from peer.caps import Caps

    cfg = tmp_path / "shoal.toml"
    cfg.write_text(
        '[agent]\nmax_rate = "100M"\nhttp_rate = "20M"\nupload_rate = "0"\n'
        'schedule = ["upload 50MB/s 00:00-24:00"]\nmax_store_size = "200G"\n'
    )
    s = AgentSettings.load(cfg, min_free="10G")
    assert s.caps().now() == Caps(upload=50_000_000, download=100 << 20, http=20 << 20)
    assert s.caps().http.rate == 20 << 20  # the lower of the two holds for HTTP
    assert s.budget() == Budget(max_store=200 << 30, min_free=10 << 30)
    for bad, named in (
        ({"schedule": ("upload 5M 9-17",)}, "schedule"),
        ({"http_rate": "fast"}, "http_rate"),
        ({"max_store_size": "-1G"}, "max_store_size"),
        ({"request_queue": 5000}, "request_queue"),
        ({"peers": -1}, "peers"),
    ):
        with pytest.raises(BadInput, match=named):
            AgentSettings.load(None, **bad)


def test_an_agent_fetches_from_upstream_itself_only_without_a_coordinator(tmp_path: Path) -> None:
    from peer.agent.settings import AgentSettings

    alone = AgentSettings.load(None, upstream=("registry.ollama.ai=http://10.0.0.5:5000",))
    up = alone.upstream_settings(tmp_path)
    assert up is not None and up.upstreams[0].host == "registry.ollama.ai"
    assert up.work == tmp_path / "upstream"  # under the store: blobs move by rename
    assert AgentSettings.load(None).upstream_settings(tmp_path) is None
    with pytest.raises(BadInput, match="without a coordinator"):
        AgentSettings.load(None, upstream=("http://r:5000",), coordinator="http://c:8470")
    with pytest.raises(BadInput, match="upstream registry"):
        AgentSettings.load(None, upstream=("ftp://r",))
    with pytest.raises(BadInput, match="LAN group"):
        AgentSettings.load(None, upstream=("http://r:5000",), lan_group="10.0.0.1:6772")
    assert AgentSettings.load(None, lan_group="off").lan_group == "off"
    key = "shoal-ed25519 " + "A" * 43 + "= acme/*"
    assert AgentSettings.load(None, trusted_publishers=(key,)).trusted()[0].patterns == ("acme/*",)
    with pytest.raises(BadInput, match="no publisher signed"):  # what it fetches is unsigned
        AgentSettings.load(None, upstream=("http://r:5000",), trusted_publishers=(key,))
