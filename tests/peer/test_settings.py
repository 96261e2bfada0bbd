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


def test_bad_values_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "shoal.toml"
    cfg.write_text("[pull]\nhttp_connections = 0\n")
    with pytest.raises(BadInput, match="http_connections"):
        PullSettings.load(cfg)
    with pytest.raises(BadInput, match="unknown"):
        cfg.write_text("[pull]\nunknown = 1\n")
        PullSettings.load(cfg)
